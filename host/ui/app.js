// The Cairn dashboard: sign in with an API key (kept in sessionStorage, so
// it leaves with the tab), then see what that key may see over the API.
import { Api, ApiError } from './api.js';
import { h, enc } from './dom.js';
import { teamPage } from './team.js';
import { contractPage, contracts } from './contract.js';
import { policiesPage } from './policies.js';

const KEY = 'cairn.key';
const root = document.getElementById('app');
let route = null;

function signIn(message) {
  const key = h('input', { id: 'key', type: 'password', autocomplete: 'off', required: true, placeholder: 'sk_…', spellcheck: 'false' });
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  root.replaceChildren(h('main', { class: 'signin' },
    h('h1', {}, 'Cairn'),
    h('form', {
      onsubmit: (e) => {
        e.preventDefault();
        sessionStorage.setItem(KEY, key.value.trim());
        start();
      },
    }, h('label', { for: 'key' }, 'API key'), key,
    h('p', { class: 'muted' }, 'The key stays in this tab only (sessionStorage) and goes to this host alone.'),
    error, h('button', { type: 'submit', class: 'primary' }, 'Sign in'))));
  key.focus();
}

async function start() {
  const key = sessionStorage.getItem(KEY);
  if (!key) return signIn();
  const api = new Api(key);
  let me;
  try {
    me = await api.get('/me');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(KEY);
      return signIn('That key is not valid on this host.');
    }
    return signIn(e.message);
  }
  const live = h('span', { class: 'live', role: 'status', 'aria-live': 'polite' }, '');
  const main = h('main', { id: 'main', tabindex: '-1' });
  const nav = h('nav', { 'aria-label': 'Main' },
    h('a', { href: '#/' }, 'Overview'),
    me.admin ? h('a', { href: '#/policies' }, 'Policies') : null);
  root.replaceChildren(
    h('a', { class: 'skip', href: '#main', onclick: (e) => { e.preventDefault(); main.focus(); } }, 'Skip to content'),
    h('header', {}, h('span', { class: 'brand' }, 'Cairn'), nav,
      h('span', { class: 'who' }, `${me.agent_name}${me.admin ? ' (admin)' : ''}`), live,
      h('button', { type: 'button', onclick: () => { sessionStorage.removeItem(KEY); location.hash = ''; signIn(); } }, 'Sign out')),
    main);
  const setLive = (on) => {
    live.textContent = on ? 'live' : 'reconnecting…';
    live.dataset.state = on ? 'live' : 'down';
  };
  const show = async () => {
    if (route) route.abort();
    route = new AbortController();
    const ctx = { api, me, main, signal: route.signal, setLive };
    const [path, query] = location.hash.replace(/^#/, '').split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    delete main.dataset.ready;
    live.textContent = '';
    try {
      if (parts[0] === 'teams' && parts[1]) await teamPage(ctx, parts[1]);
      else if (parts[0] === 'contracts' && parts[1]) await contractPage(ctx, parts[1]);
      else if (parts[0] === 'policies') await policiesPage(ctx, new URLSearchParams(query || ''));
      else await overview(ctx);
    } catch (e) {
      if (route.signal.aborted) return;
      main.replaceChildren(h('h1', {}, 'Something failed'), h('p', { class: 'error', role: 'alert' }, e.message));
    }
  };
  window.onhashchange = show;
  show();
}

async function overview({ api, me, main }) {
  const [teams, found] = await Promise.all([api.all('/teams', 'teams'), contracts(api, me)]);
  main.replaceChildren(
    h('h1', {}, 'Overview'),
    h('section', { 'aria-labelledby': 'teams-title' }, h('h2', { id: 'teams-title' }, 'Teams'),
      teams.length === 0 ? h('p', { class: 'muted' }, 'This key belongs to no team.')
        : h('ul', { class: 'links', id: 'teams' }, teams.map((t) => h('li', {},
          h('a', { href: `#/teams/${enc(t.name)}` }, t.name), ` lead ${t.lead}, ${t.members.length} members`,
          t.halted ? h('span', { class: 'tag bad' }, 'HALTED') : null)))),
    h('section', { 'aria-labelledby': 'contracts-title' }, h('h2', { id: 'contracts-title' }, 'Contracts'),
      found.length === 0 ? h('p', { class: 'muted' }, 'No contracts are discoverable, and this key owns none.')
        : h('ul', { class: 'links', id: 'contracts' }, found.map((c) => h('li', {},
          h('a', { href: `#/contracts/${enc(c.name)}` }, c.name), ` by ${c.owner}`,
          c.description ? ` — ${c.description}` : '')))));
  main.dataset.ready = 'overview';
}

start();
