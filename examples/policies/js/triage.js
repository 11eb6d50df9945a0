// Agent: triages questions. For every `question` entry on the streams it
// follows, it appends a `triage` entry (the label is configurable) saying
// whether the question is `urgent`, because it names one of the `urgent`
// words (by default "outage" and "security"), or `normal`, and which words
// matched, and adds the question to a persistent `open-questions` stash
// (the name is configurable). An `answer` entry whose `data.question` is a
// question's seq takes it off the stash. A question without `data.text` is
// logged and left alone.
//
// The entry, the stash and the agent's progress commit together, so the
// stash never counts a question twice, even when a call is retried.
import { append } from 'cairn:coord/stream-write@0.2.0';
import { get } from 'cairn:coord/stash-read@0.2.0';
import { put } from 'cairn:coord/stash-write@0.2.0';
import { log } from 'cairn:coord/log@0.2.0';

// Questions the stash keeps at most; the oldest go first.
const MAX_OPEN = 100;

// Reads the stash's open questions, changes them, and writes them back.
function update(stash, change) {
  const doc = get(stash, true);
  let open = [];
  if (doc) {
    try {
      const found = JSON.parse(new TextDecoder().decode(doc.body));
      if (found && Array.isArray(found.open)) open = found.open;
    } catch {}
  }
  const body = new TextEncoder().encode(JSON.stringify({ open: change(open) }));
  put(stash, true, body, 'application/json');
}

export function onEntry(config, streamId, entry) {
  let cfg = {};
  try {
    cfg = JSON.parse(config || '{}');
  } catch {}
  const stash = typeof cfg.stash === 'string' ? cfg.stash : 'open-questions';
  let data = null;
  try {
    data = JSON.parse(entry.data);
  } catch {}
  if (!data || typeof data !== 'object') data = {};
  if (entry.label === 'answer') {
    const seq = data.question;
    if (Number.isInteger(seq)) {
      update(stash, (qs) => qs.filter((q) => !(q.question === seq && q.stream_id === streamId)));
    }
    return;
  }
  if (entry.label !== 'question') return;
  const urgent = Array.isArray(cfg.urgent) ? cfg.urgent : ['outage', 'security'];
  const label = typeof cfg.label === 'string' ? cfg.label : 'triage';
  const text = data.text;
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
  const question = { question: Number(entry.seq), stream_id: streamId, asker: entry.agent, priority, text };
  update(stash, (qs) => qs.concat([question]).slice(-MAX_OPEN));
}
