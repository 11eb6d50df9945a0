// Algedonic signals: open HALTs as a banner across a team's or a
// contract's page, with Acknowledge for whoever may, and ALERTs listed.
import { h, when } from './dom.js';

function describe(signal) {
  const body = signal.body || {};
  return [body.issue, body.evidence && `Evidence: ${body.evidence}`, body.impact && `Impact: ${body.impact}`,
    body.recommended_action && `Recommended: ${body.recommended_action}`].filter(Boolean);
}

// `halts`: [{signal_id, category, reporter, created_at, body}]; `mayAck`
// says whether the signed-in key may acknowledge; `acknowledge(id, note)`
// does it and resolves when the host has.
export function haltBanner(halts, mayAck, acknowledge) {
  if (halts.length === 0) return null;
  return h('section', { class: 'halt', role: 'alert', 'aria-label': 'Open HALTs' },
    halts.map((s) => h('div', { class: 'halt-item', dataset: { signalId: s.signal_id } },
      h('p', {}, h('strong', {}, 'HALT'), ` ${s.category || ''}: raised by ${s.reporter || 'unknown'}, ${when(s.created_at)}. `,
        'Claims and completions are refused until it is acknowledged.'),
      describe(s).map((line) => h('p', { class: 'detail' }, line)),
      mayAck ? h('button', { type: 'button', class: 'ack', onclick: () => askNote(s, acknowledge) }, 'Acknowledge')
        : h('p', { class: 'detail' }, 'Only the lead, the contract\'s creator or an admin may acknowledge it.'))));
}

export function alertList(alerts) {
  if (alerts.length === 0) return h('p', { class: 'muted' }, 'No ALERTs.');
  return h('ul', { class: 'alerts' }, alerts.map((s) => h('li', { dataset: { signalId: s.signal_id } },
    h('strong', {}, 'ALERT'), ` ${s.category || ''} from ${s.reporter || 'unknown'}, ${when(s.created_at)}`,
    s.acknowledged ? ` (acknowledged by ${s.acknowledged_by})` : '',
    describe(s).map((line) => h('div', { class: 'detail' }, line)))));
}

// The note dialog: a modal the keyboard can reach, cancel with Escape, and
// that shows the host's refusal instead of closing.
function askNote(signal, acknowledge) {
  const note = h('textarea', { id: 'ack-note', 'aria-required': 'true', rows: 3, maxlength: 4000 });
  const error = h('p', { class: 'error', role: 'alert' });
  const confirm = h('button', { type: 'submit', class: 'primary' }, 'Acknowledge');
  const dialog = h('dialog', { class: 'ack-dialog', 'aria-labelledby': 'ack-title' },
    h('form', {
      onsubmit: async (e) => {
        e.preventDefault();
        if (!note.value.trim()) {
          error.textContent = 'Write what was done about it; the note is kept with the signal.';
          return;
        }
        confirm.disabled = true;
        try {
          await acknowledge(signal.signal_id, note.value.trim());
          dialog.close();
        } catch (err) {
          error.textContent = err.message;
          confirm.disabled = false;
        }
      },
    },
    h('h2', { id: 'ack-title' }, `Acknowledge HALT ${signal.category || ''}`),
    h('label', { for: 'ack-note' }, 'Note'), note, error,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'), confirm)));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  note.focus();
}
