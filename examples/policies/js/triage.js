// Agent: triages questions. For every `question` entry on the streams it
// follows, it appends a `triage` entry (the label is configurable) saying
// whether the question is `urgent`, because it names one of the `urgent`
// words (by default "outage" and "security"), or `normal`, and which words
// matched. A question without `data.text` is logged and left alone.
import { append } from 'cairn:coord/stream-write@0.2.0';
import { log } from 'cairn:coord/log@0.2.0';

export function onEntry(config, streamId, entry) {
  let cfg = {};
  try {
    cfg = JSON.parse(config || '{}');
  } catch {}
  if (entry.label !== 'question') return;
  const urgent = Array.isArray(cfg.urgent) ? cfg.urgent : ['outage', 'security'];
  const label = typeof cfg.label === 'string' ? cfg.label : 'triage';
  let data = null;
  try {
    data = JSON.parse(entry.data);
  } catch {}
  const text = data && typeof data === 'object' ? data.text : undefined;
  if (typeof text !== 'string') {
    log('warn', `question #${entry.seq} from ${entry.agent} has no data.text`);
    return;
  }
  const lowered = text.toLowerCase();
  const matched = urgent.filter((w) => typeof w === 'string' && lowered.includes(w.toLowerCase()));
  const priority = matched.length > 0 ? 'urgent' : 'normal';
  log('info', `question #${entry.seq} from ${entry.agent} is ${priority}`);
  const triage = { question: Number(entry.seq), asker: entry.agent, priority, matched };
  append(streamId, label, JSON.stringify(triage));
}
