// Contracts: the discoverable ones and the signed-in agent's own, and one
// contract with its subtasks, its HALTs and its streams as live timelines.
import { h, enc, when, json, coalesce } from './dom.js';
import { haltBanner, alertList } from './signals.js';

const CONTRACT_SCHEMA = 'sch_agent-contract';
const TIMELINE = 200;

// [{name, owner, description}], own first, each once.
export async function contracts(api, me) {
  const [own, found] = await Promise.all([
    api.all('/stashes?persistent=true', 'stashes'),
    api.all('/discover?type=stash&schema=agent-contract', 'results'),
  ]);
  const seen = new Map();
  for (const s of own) {
    if (s.persistent && s.schema_id === CONTRACT_SCHEMA) seen.set(s.name, { name: s.name, owner: me.agent_name, description: '' });
  }
  for (const r of found) {
    if (!seen.has(r.name)) seen.set(r.name, { name: r.name, owner: r.owner, description: r.description || '' });
  }
  return [...seen.values()];
}

async function streamsOf(api, name) {
  const [linked, discussion, execution] = await Promise.all([
    api.all(`/discover?type=stream&linked_to=${enc(name)}`, 'results'),
    api.get(`/streams?name=${enc(name + '-discussion')}`),
    api.get(`/streams?name=${enc(name + '-execution')}`),
  ]);
  const byId = new Map();
  for (const s of [...discussion.streams, ...execution.streams, ...linked]) {
    if (s.stream_id && !byId.has(s.stream_id)) byId.set(s.stream_id, s);
  }
  return [...byId.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export async function contractPage(ctx, name) {
  const { api, me, main, signal, setLive } = ctx;
  let text;
  try {
    text = await api.get(`/stash/${enc(name)}?persistent=true`);
  } catch (e) {
    if (e.status !== 404) throw e;
    main.replaceChildren(h('h1', {}, 'Contract not found'),
      h('p', {}, 'No contract of that name is visible to this key: it is private to its creator, or does not exist.'));
    return;
  }
  let doc = typeof text === 'string' ? safeParse(text) : text;
  const known = (await contracts(api, me)).find((c) => c.name === name);
  const creator = known ? known.owner : null;
  const mayAck = me.admin || (creator !== null && creator === me.agent_name);
  const streams = await streamsOf(api, name);

  const banner = h('div', { class: 'banner-slot' });
  const head = h('div', {});
  const alerts = h('div', {});
  const timelines = h('div', { class: 'timelines' });
  main.replaceChildren(banner, head, h('section', { 'aria-labelledby': 'c-alerts' }, h('h2', { id: 'c-alerts' }, 'ALERTs'), alerts), timelines);

  const renderHead = () => {
    const subtasks = Array.isArray(doc && doc.subtasks) ? doc.subtasks : [];
    head.replaceChildren(
      h('h1', {}, `Contract ${name}`),
      h('p', { class: 'objective' }, doc && doc.objective ? doc.objective : '(no objective)'),
      h('p', { class: 'muted' }, [creator ? `Created by ${creator}` : null,
        doc && doc.budget_usdc !== undefined ? `budget ${doc.budget_usdc} USDC` : null,
        doc && doc.deadline ? `deadline ${when(doc.deadline)}` : null].filter(Boolean).join(' · ')),
      h('table', { class: 'subtasks' },
        h('caption', {}, 'Subtasks'),
        h('thead', {}, h('tr', {}, ['Subtask', 'Description', 'Status', 'Assigned agent', 'Budget'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, subtasks.map((s) => h('tr', { dataset: { subtask: s.id } },
          h('th', { scope: 'row' }, s.id), h('td', {}, s.description || ''),
          h('td', { class: `status status-${s.status}` }, s.status || ''),
          h('td', { class: 'assigned' }, s.assigned_agent || '—'),
          h('td', {}, s.budget_usdc !== undefined ? `${s.budget_usdc} USDC` : '—'))))));
  };

  // Signals live on the streams as `algedonic-decision` entries: a raised
  // one (with `signal_id`, `level`, `halted`) and, later, its acknowledgement.
  const decisions = new Map();
  const noteSignal = (entry) => {
    const d = entry.data || {};
    if (!d.signal_id) return;
    const s = decisions.get(d.signal_id) || { signal_id: d.signal_id };
    if (d.event === 'acknowledged') {
      s.acknowledged = true;
      s.acknowledged_by = d.by;
    } else {
      Object.assign(s, { level: d.level, category: d.category, reporter: d.reporter, halts: !!d.halted,
        created_at: entry.created_at, body: {} });
    }
    decisions.set(d.signal_id, s);
  };
  const renderSignals = () => {
    const all = [...decisions.values()].filter((s) => s.level);
    const acknowledge = async (id, note) => {
      await api.post(`/signals/${enc(id)}/acknowledge`, { note });
    };
    banner.replaceChildren(haltBanner(all.filter((s) => s.halts && !s.acknowledged), mayAck, acknowledge) || '');
    alerts.replaceChildren(alertList(all.filter((s) => s.level === 'ALERT')));
  };

  const refreshDoc = coalesce(async () => {
    const fresh = await api.getOr(`/stash/${enc(name)}?persistent=true`, null);
    if (fresh !== null) doc = typeof fresh === 'string' ? safeParse(fresh) : fresh;
    renderHead();
  });

  renderHead();
  for (const s of streams) {
    for (const e of await api.all(`/stream/${s.stream_id}?label=algedonic-decision`, 'entries')) noteSignal(e);
  }
  renderSignals();
  if (streams.length === 0) timelines.append(h('p', { class: 'muted' }, `No streams are linked to ${name} that this key can see.`));
  for (const s of streams) {
    const latest = await api.getOr(`/stream/${s.stream_id}/latest`, null);
    const last = latest ? latest.seq : 0;
    const page = await api.get(`/stream/${s.stream_id}?after=${Math.max(0, last - TIMELINE)}&limit=${TIMELINE}`);
    const view = timeline(s, page.entries || []);
    timelines.append(view.el);
    api.follow(`/stream/${s.stream_id}/events?after=${last}`, ({ data: entry }) => {
      if (!entry || typeof entry !== 'object') return;
      view.add(entry);
      if (entry.label === 'algedonic-decision') {
        noteSignal(entry);
        renderSignals();
      }
      // Claims, deliverables and signals change the contract itself.
      refreshDoc();
    }, signal, setLive);
  }
  main.dataset.ready = 'contract';
}

function safeParse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { objective: String(text) };
  }
}

// One stream's entries, newest first, filterable by label.
function timeline(stream, entries) {
  const labels = new Set(entries.map((e) => e.label || ''));
  const id = `filter-${stream.stream_id}`;
  const select = h('select', { id, onchange: () => render() });
  const list = h('ol', { class: 'timeline', 'aria-live': 'polite' });
  const fillLabels = () => {
    const chosen = select.value;
    select.replaceChildren(h('option', { value: '*' }, 'all labels'),
      ...[...labels].sort().map((l) => h('option', { value: l }, l || '(no label)')));
    select.value = [...labels].includes(chosen) ? chosen : '*';
  };
  const render = () => {
    const label = select.value;
    const shown = entries.filter((e) => label === '*' || (e.label || '') === label).slice(-TIMELINE).reverse();
    list.replaceChildren(...shown.map((e) => h('li', { dataset: { seq: e.seq, label: e.label || '' } },
      h('span', { class: 'seq' }, `#${e.seq}`), ' ', h('span', { class: 'tag' }, e.label || '—'), ' ',
      h('span', { class: 'from' }, e.agent), ' ', h('span', { class: 'muted' }, when(e.created_at)),
      h('details', {}, h('summary', {}, summarize(e.data)), json(e.data)))));
  };
  fillLabels();
  render();
  return {
    el: h('section', { class: 'stream', 'aria-label': `Stream ${stream.name}`, dataset: { streamName: stream.name } },
      h('h2', {}, stream.name), h('label', { for: id }, 'Label '), select, list),
    add(entry) {
      if (entries.some((e) => e.seq === entry.seq)) return;
      entries.push(entry);
      if (!labels.has(entry.label || '')) {
        labels.add(entry.label || '');
        fillLabels();
      }
      render();
    },
  };
}

function summarize(data) {
  if (data && typeof data === 'object') {
    const text = data.message || data.text || data.reason || data.subtask_id || data.type;
    if (typeof text === 'string') return text.length > 120 ? text.slice(0, 117) + '…' : text;
  }
  const s = JSON.stringify(data);
  return s && s.length > 120 ? s.slice(0, 117) + '…' : s || '';
}
