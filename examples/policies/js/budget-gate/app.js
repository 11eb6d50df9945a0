import { get } from 'cairn:coord/stash-read@0.1.0';
import { log } from 'cairn:coord/log@0.1.0';

export function decide(config, claim) {
  const cfg = JSON.parse(config || '{}');
  const ceiling = cfg.max_budget_usdc ?? Infinity;
  if (claim.target.tag !== 'subtask') return { tag: 'approve' };
  const target = claim.target.val;
  const doc = get(target.contract, true);
  if (!doc) return { tag: 'deny', val: `no contract ${target.contract}` };
  const contract = JSON.parse(new TextDecoder().decode(doc.body));
  const sub = (contract.subtasks || []).find((s) => s.id === target.subtaskId);
  const budget = sub?.budget_usdc ?? 0;
  log('info', `${claim.claimant} wants ${target.subtaskId} (${budget} USDC)`);
  if (budget > ceiling) return { tag: 'escalate', val: `${budget} USDC is over ${ceiling}; the creator decides` };
  return { tag: 'approve' };
}
