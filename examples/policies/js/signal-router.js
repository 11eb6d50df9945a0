// Escalation policy: a HALT, or an ALERT in one of the `halt_on`
// categories (by default SECURITY), halts the scope; every signal is sent
// to the lead, with the category's entry from the `runbook` stash if set.
import { get } from 'cairn:coord/stash-read@0.2.0';
import { log } from 'cairn:coord/log@0.2.0';

export function escalate(config, signal) {
  let cfg = {};
  try {
    cfg = JSON.parse(config || '{}');
  } catch {}
  const haltOn = Array.isArray(cfg.halt_on) ? cfg.halt_on : ['SECURITY'];
  const level = signal.level === 'halt' ? 'HALT' : 'ALERT';
  const halt = level === 'HALT' || haltOn.includes(signal.category);
  let advice = null;
  if (typeof cfg.runbook === 'string') {
    const doc = get(cfg.runbook, true);
    if (doc != null) {
      try {
        advice = JSON.parse(new TextDecoder().decode(doc.body))[signal.category] ?? null;
      } catch {}
    }
  }
  log('warn', `${level} ${signal.category} from ${signal.reporter}: halt=${halt}`);
  let message = signal.issue;
  if (typeof advice === 'string') message += `\nRunbook: ${advice}`;
  const notify = {
    tag: 'notify',
    val: { to: 'lead', summary: `${level} ${signal.category} from ${signal.reporter}`, message },
  };
  return halt ? [{ tag: 'halt-scope' }, notify] : [notify];
}
