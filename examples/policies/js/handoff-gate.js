// Handoff policy: the structured HANDOFF must fill every field in
// `require` (by default `produced` and `uncertainty`), and each `stash:NAME`
// it says it produced must exist as a persistent stash.
import { get } from 'cairn:coord/stash-read@0.2.0';
import { log } from 'cairn:coord/log@0.2.0';

function filled(value) {
  if (value == null) return false;
  if (typeof value === 'string') return value.trim() !== '';
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

export function check(config, handoff) {
  let cfg;
  try {
    cfg = JSON.parse(config || '{}');
  } catch (e) {
    return [{ field: 'config', message: `bad config: ${e.message}` }];
  }
  let structured = null;
  try {
    structured = handoff.structured == null ? null : JSON.parse(handoff.structured);
  } catch {}
  if (structured === null || typeof structured !== 'object' || Array.isArray(structured)) {
    return [{ field: 'handoff', message: 'no structured HANDOFF; put one at metadata.handoff' }];
  }
  const require = Array.isArray(cfg.require) ? cfg.require : ['produced', 'uncertainty'];
  const found = require
    .filter((f) => typeof f === 'string' && !filled(structured[f]))
    .map((f) => ({ field: f, message: `${f} is missing or empty; fill it in before handing off` }));
  const produced = Array.isArray(structured.produced) ? structured.produced : [];
  produced.forEach((item, i) => {
    if (typeof item !== 'string' || !item.startsWith('stash:')) return;
    const name = item.slice('stash:'.length);
    if (get(name, true) == null) {
      found.push({ field: `produced[${i}]`, message: `no persistent stash ${name}; write it before handing off` });
    }
  });
  log('info', `${handoff.agent} hands off ${handoff.subject}: ${found.length} problem(s)`);
  return found;
}
