// The answer agent in JS, for the `agent` benchmark: answers each entry
// with an `answer` entry, `{"answer": TEXT in capitals, "question": SEQ}`,
// on the stream its config's `answer_to` names (else the same one), and
// reads its own append back, as the Rust `answer-agent` guest does.
import { append } from 'cairn:coord/stream-write@0.2.0';
import { latest } from 'cairn:coord/stream-read@0.2.0';

export function onEntry(config, streamId, entry) {
  const cfg = JSON.parse(config || '{}');
  const data = JSON.parse(entry.data);
  const text = data && typeof data.text === 'string' ? data.text : '';
  const to = typeof cfg.answer_to === 'string' ? cfg.answer_to : streamId;
  const answer = JSON.stringify({ answer: text.toUpperCase(), question: Number(entry.seq) });
  const seq = append(to, 'answer', answer);
  const last = latest(to, 'answer');
  if (!last || last.seq !== seq) {
    throw new Error(`appended #${seq}, but the latest answer reads ${last && last.seq}`);
  }
}
