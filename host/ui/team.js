// A team: its board (pending, in progress, completed), its signals and the
// signed-in agent's inbox, kept live by the team's stream and the inbox's
// SSE endpoint.
import { h, enc, when, coalesce } from './dom.js';
import { haltBanner, alertList } from './signals.js';

const COLUMNS = [
  ['pending', 'Pending'],
  ['in_progress', 'In progress'],
  ['completed', 'Completed'],
];

const SECTIONS = [
  ['produced', 'Produced'],
  ['decisions', 'Key decisions'],
  ['reasoning_chain', 'Reasoning chain'],
  ['uncertainty', 'Areas of uncertainty'],
  ['integration', 'Integration points'],
  ['open_questions', 'Open questions'],
];

const PRIORITIES = ['HIGH', 'MEDIUM', 'LOW'];

function items(value) {
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
  if (value === undefined || value === null || value === '') return [];
  return [typeof value === 'string' ? value : JSON.stringify(value)];
}

// Uncertainty by priority, as the protocol writes it: "[HIGH] ...".
function byPriority(value) {
  const groups = new Map();
  for (const item of items(value)) {
    const m = /^\s*\[(HIGH|MEDIUM|LOW)\]\s*(.*)$/i.exec(item);
    const level = m ? m[1].toUpperCase() : 'Unranked';
    if (!groups.has(level)) groups.set(level, []);
    groups.get(level).push(m ? m[2] : item);
  }
  return [...PRIORITIES, 'Unranked'].filter((p) => groups.has(p)).map((p) => [p, groups.get(p)]);
}

export function handoffView(handoff) {
  return h('dl', { class: 'handoff' }, SECTIONS.map(([key, title]) => {
    const value = handoff[key];
    let body;
    if (key === 'uncertainty') {
      const groups = byPriority(value);
      body = groups.length === 0 ? h('p', { class: 'muted' }, 'No areas of uncertainty flagged.')
        : groups.map(([p, list]) => h('div', { class: `priority priority-${p.toLowerCase()}` },
          h('span', { class: 'level' }, p), h('ul', {}, list.map((i) => h('li', {}, i)))));
    } else if (key === 'reasoning_chain') {
      body = h('p', {}, items(value).join(' ') || '(none given)');
    } else {
      const list = items(value);
      body = list.length === 0 ? h('p', { class: 'muted' }, 'None.') : h('ul', {}, list.map((i) => h('li', {}, i)));
    }
    return [h('dt', {}, title), h('dd', {}, body)];
  }));
}

export async function teamPage(ctx, name) {
  const { api, me, main, signal, setLive } = ctx;
  const path = `/teams/${enc(name)}`;
  let team = await api.getOr(path, null);
  if (!team) {
    main.replaceChildren(h('h1', {}, 'Team not found'),
      h('p', {}, 'No team of that name is visible to this key. Teams show only to their members and to admins.'));
    return;
  }
  const latest = await api.getOr(`/stream/${team.stream_id}/latest`, null);
  const [list, signals, inbox] = await Promise.all([
    api.all(`${path}/tasks?detail=full`, 'tasks'),
    api.all(`${path}/signals`, 'signals'),
    api.get(`${path}/messages`),
  ]);
  const tasks = new Map(list.map((t) => [t.id, t]));
  let allSignals = signals;
  const messages = inbox.messages || [];
  const mayAck = me.admin || me.agent_name === team.lead;

  const banner = h('div', { class: 'banner-slot' });
  const board = h('div', { class: 'board', role: 'region', 'aria-label': 'Task board' });
  const alerts = h('div', {});
  const inboxList = h('ol', { class: 'inbox', 'aria-live': 'polite' });
  main.replaceChildren(
    banner,
    h('h1', {}, `Team ${team.name}`),
    h('p', { class: 'muted' }, `Lead ${team.lead} · members ${team.members.join(', ') || 'none'}`),
    board,
    h('div', { class: 'columns-2' },
      h('section', { 'aria-labelledby': 'inbox-title' }, h('h2', { id: 'inbox-title' }, `Inbox of ${me.agent_name}`), inboxList),
      h('section', { 'aria-labelledby': 'alerts-title' }, h('h2', { id: 'alerts-title' }, 'ALERTs'), alerts)));

  const acknowledge = async (id, note) => {
    await api.post(`/signals/${enc(id)}/acknowledge`, { note });
    await refreshSignals();
  };

  const renderSignals = () => {
    const open = allSignals.filter((s) => s.halts && !s.acknowledged);
    banner.replaceChildren(haltBanner(open, mayAck, acknowledge) || '');
    alerts.replaceChildren(alertList(allSignals.filter((s) => s.level === 'ALERT')));
  };

  const renderBoard = () => {
    const blocks = new Map();
    for (const t of tasks.values()) {
      for (const b of t.blocked_by || []) {
        if (!blocks.has(b)) blocks.set(b, []);
        blocks.get(b).push(t.id);
      }
    }
    const sorted = [...tasks.values()].sort((a, b) => a.id - b.id);
    board.replaceChildren(...COLUMNS.map(([status, title]) => {
      const here = sorted.filter((t) => t.status === status);
      return h('section', { class: `column column-${status}`, 'aria-label': title, dataset: { status } },
        h('h2', {}, title, h('span', { class: 'count' }, ` ${here.length}`)),
        h('ol', { class: 'cards' }, here.map((t) => card(t, tasks, blocks.get(t.id) || []))));
    }));
  };

  const renderInbox = () => {
    inboxList.replaceChildren(...(messages.length === 0 ? [h('li', { class: 'muted' }, 'No messages.')]
      : messages.slice(-200).reverse().map((m) => h('li', { dataset: { messageId: m.id } },
        h('span', { class: 'from' }, `${m.from} → ${m.to}`), ` ${when(m.created_at)} `,
        m.type !== 'message' ? h('span', { class: 'tag' }, m.type) : '',
        h('div', { class: 'summary' }, m.summary || ''), h('div', { class: 'message' }, m.message || '')))));
  };

  const refreshSignals = async () => {
    allSignals = await api.all(`${path}/signals`, 'signals');
    team = await api.getOr(path, team);
    renderSignals();
  };

  const render = coalesce(renderBoard);
  renderSignals();
  renderBoard();
  renderInbox();
  performance.mark('cairn:board-rendered');
  main.dataset.ready = 'team';

  // The team's stream carries a `task` entry for every change, in the
  // change's own commit, and an `algedonic` entry for every signal event.
  api.follow(`/stream/${team.stream_id}/events?after=${latest ? latest.seq : 0}`, async ({ data: entry }) => {
    if (!entry || typeof entry !== 'object') return;
    if (entry.label === 'task' && entry.data && entry.data.task) {
      const id = entry.data.task.id;
      if (entry.data.event === 'deleted') {
        tasks.delete(id);
      } else {
        const fresh = await api.getOr(`${path}/tasks/${id}`, null);
        if (fresh) tasks.set(id, fresh);
        else tasks.delete(id);
      }
      render();
    } else if (entry.label === 'algedonic') {
      await refreshSignals();
    }
  }, signal, setLive);
  const lastMessage = messages.length ? messages[messages.length - 1].id : 0;
  api.follow(`${path}/messages/events?after=${lastMessage}`, ({ data }) => {
    if (!data || typeof data !== 'object' || messages.some((m) => m.id === data.id)) return;
    messages.push(data);
    renderInbox();
  }, signal);
}

function card(t, tasks, blocks) {
  const open = (t.blocked_by || []).filter((b) => {
    const blocker = tasks.get(b);
    return blocker && blocker.status !== 'completed';
  });
  const handoff = t.metadata && typeof t.metadata.handoff === 'object' ? t.metadata.handoff : null;
  return h('li', { class: 'card', dataset: { taskId: t.id, status: t.status }, 'aria-label': `Task ${t.id}: ${t.subject}` },
    h('div', { class: 'card-head' }, h('span', { class: 'id' }, `#${t.id}`), ' ', h('span', { class: 'subject' }, t.subject)),
    h('div', { class: 'owner' }, t.owner ? `Owner: ${t.owner}` : 'Unowned'),
    t.status === 'in_progress' && t.active_form ? h('div', { class: 'active-form' }, t.active_form) : null,
    open.length ? h('div', { class: 'blocked' }, `Blocked by ${open.map((b) => `#${b}`).join(', ')}`) : null,
    blocks.length ? h('div', { class: 'blocks' }, `Blocks ${blocks.map((b) => `#${b}`).join(', ')}`) : null,
    handoff ? h('details', { class: 'handoff-box' }, h('summary', {}, 'HANDOFF'), handoffView(handoff)) : null);
}
