// Claim policy: deny an agent that already holds `max_open_claims`
// subtasks of the contract; escalate a subtask whose `budget_usdc` is over
// `max_budget_usdc`. Team tasks are approved here: the bundled
// claim-approval keeps deciding beside this policy (blocked tasks, tasks
// another member holds) unless its settings say `replaces_bundled`.
import { get } from 'cairn:coord/stash-read@0.2.0';
import { log } from 'cairn:coord/log@0.2.0';

export function decide(config, claim) {
  let cfg;
  try {
    cfg = JSON.parse(config || '{}');
  } catch (e) {
    return { tag: 'deny', val: `bad config: ${e.message}` };
  }
  if (claim.target.tag !== 'subtask') return { tag: 'approve' };
  const target = claim.target.val;
  const doc = get(target.contract, true);
  if (doc == null) return { tag: 'deny', val: `no contract ${target.contract}` };
  let contract = {};
  try {
    contract = JSON.parse(new TextDecoder().decode(doc.body));
  } catch {}
  const subtasks = Array.isArray(contract.subtasks) ? contract.subtasks : [];
  const subtask = subtasks.find((s) => s.id === target.subtaskId);
  if (!subtask) return { tag: 'deny', val: `no subtask ${target.subtaskId} in ${target.contract}` };
  const budget = subtask.budget_usdc ?? 0;
  const held = subtasks.filter((s) => s.status === 'claimed' && s.assigned_agent === claim.claimant).length;
  log('info', `${claim.claimant} wants ${target.subtaskId} (${budget} USDC) and holds ${held}`);
  if (cfg.max_open_claims != null && held >= cfg.max_open_claims) {
    return { tag: 'deny', val: `${claim.claimant} already holds ${held} subtasks; the limit is ${cfg.max_open_claims}` };
  }
  if (cfg.max_budget_usdc != null && budget > cfg.max_budget_usdc) {
    return { tag: 'escalate', val: `${budget} USDC is over ${cfg.max_budget_usdc}; the creator decides` };
  }
  return { tag: 'approve' };
}
