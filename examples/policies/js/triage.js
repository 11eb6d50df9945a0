// Agent: triages questions. For every `question` entry on the streams it
// follows, it appends a `triage` entry (the label is configurable) saying
// whether the question is `urgent`, because it names one of the `urgent`
// words (by default "outage" and "security"), or `normal`, and which words
// matched, and adds the question to a persistent `open-questions` stash
// (the name is configurable). An `answer` entry whose `data.question` is a
// question's seq takes it off the stash. The question is `data.text`, or
// `data.message` as the contracts pattern writes it; one without either is
// logged and left alone.
//
// With `contract` in its config (the contract stash of the discussion
// stream it follows), a question that names a `subtask_id` is routed: the
// entry says `route_to`, the agent assigned to that subtask, or the
// contract's creator when the subtask is unassigned or not in the contract.
//
// The entry, the stash and the agent's progress commit together, so the
// stash never counts a question twice, even when a call is retried.
import { append } from 'cairn:coord/stream-write@0.2.0';
import { get } from 'cairn:coord/stash-read@0.2.0';
import { put } from 'cairn:coord/stash-write@0.2.0';
import { log } from 'cairn:coord/log@0.2.0';

// Questions the stash keeps at most; the oldest go first.
const MAX_OPEN = 100;

// Who answers questions about `subtask`: its assigned agent, else the
// contract's creator (its owner). Null when the contract cannot be read.
function route(contract, subtask) {
  const doc = get(contract, true);
  if (!doc) return null;
  let body = null;
  try {
    body = JSON.parse(new TextDecoder().decode(doc.body));
  } catch {}
  const subtasks = body && Array.isArray(body.subtasks) ? body.subtasks : [];
  const task = subtasks.find((t) => t && t.id === subtask && typeof t.assigned_agent === 'string');
  return task ? task.assigned_agent : doc.owner;
}

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
  const text = typeof data.text === 'string' ? data.text : data.message;
  if (typeof text !== 'string') {
    log('warn', `question #${entry.seq} from ${entry.agent} has no text`);
    return;
  }
  const lowered = text.toLowerCase();
  const matched = urgent.filter((w) => typeof w === 'string' && lowered.includes(w.toLowerCase()));
  const priority = matched.length > 0 ? 'urgent' : 'normal';
  log('info', `question #${entry.seq} from ${entry.agent} is ${priority}`);
  const triage = { question: Number(entry.seq), asker: entry.agent, priority, matched };
  const question = { question: Number(entry.seq), stream_id: streamId, asker: entry.agent, priority, text };
  if (typeof cfg.contract === 'string' && typeof data.subtask_id === 'string') {
    const to = route(cfg.contract, data.subtask_id);
    log('info', `question #${entry.seq} about ${data.subtask_id} goes to ${to}`);
    for (const record of [triage, question]) {
      record.subtask_id = data.subtask_id;
      record.route_to = to;
    }
  }
  append(streamId, label, JSON.stringify(triage));
  update(stash, (qs) => qs.concat([question]).slice(-MAX_OPEN));
}
