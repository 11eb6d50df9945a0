// Policies (admin): who decides per hook and scope, each policy's version,
// latency and failures, and the decision log with its filters.
import { h, enc, when, json } from './dom.js';

const HOOKS = ['claim', 'handoff', 'escalation', 'agent'];

// The upper bound of the histogram bucket that holds quantile `q`, in µs.
export function quantile(latency, q) {
  const buckets = Object.entries(latency || {})
    .map(([k, n]) => [k === 'le_inf_us' ? Infinity : Number(k.slice(3, -3)), n])
    .sort((a, b) => a[0] - b[0]);
  const total = buckets.reduce((sum, [, n]) => sum + n, 0);
  if (total === 0) return null;
  let seen = 0;
  for (const [bound, n] of buckets) {
    seen += n;
    if (seen >= q * total) return bound;
  }
  return Infinity;
}

function micros(us) {
  if (us === null) return '—';
  if (us === Infinity) return 'over the largest bucket';
  return us >= 1000 ? `≤ ${us / 1000} ms` : `≤ ${us} µs`;
}

export function verdictOf(d) {
  if (d.error) return 'failed';
  const r = d.result || {};
  if (typeof r.verdict === 'string') return r.verdict;
  if (Array.isArray(r.violations)) return r.violations.length ? 'rejected' : 'accepted';
  if (Array.isArray(r.actions)) return 'actions';
  return 'ok';
}

export async function policiesPage(ctx, params) {
  const { api, me, main } = ctx;
  if (!me.admin) {
    main.replaceChildren(h('h1', {}, 'Policies'), h('p', {}, 'Policies and the decision log are for admin keys only.'));
    return;
  }
  const { policies, deciding } = await api.get('/policies');
  const filters = {
    policy: params.get('policy') || (policies[0] && policies[0].name) || '',
    hook: params.get('hook') || '',
    verdict: params.get('verdict') || '',
    failed: params.get('failed') === '1',
  };
  main.replaceChildren(
    h('h1', {}, 'Policies'),
    h('table', { class: 'policies' }, h('caption', {}, 'Who decides, per hook and scope, in order'),
      h('thead', {}, h('tr', {}, ['Hook', 'Scope', 'Bundled', 'Bound policies'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, deciding.map((d) => h('tr', {}, h('td', {}, d.hook), h('td', {}, d.scope),
        h('td', {}, d.bundled || '—'), h('td', {}, d.policies.join(', ') || '—'))))),
    h('table', { class: 'policies' }, h('caption', {}, 'Bound policies'),
      h('thead', {}, h('tr', {}, ['Policy', 'Hook', 'Scope', 'Version', 'p50', 'p99', 'Decisions', 'Failures', 'Last error']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, policies.map((p) => {
        const s = p.stats || {};
        const scope = p.settings && p.settings.scope;
        return h('tr', { dataset: { policy: p.name } },
          h('th', { scope: 'row' }, p.name), h('td', {}, p.hook),
          h('td', {}, scope ? (typeof scope === 'string' ? scope : JSON.stringify(scope)) : '—'),
          h('td', {}, String(p.version)), h('td', {}, micros(quantile(s.latency, 0.5))),
          h('td', {}, micros(quantile(s.latency, 0.99))), h('td', {}, String(s.decisions ?? 0)),
          h('td', { class: s.failures ? 'bad' : '' }, String(s.failures ?? 0)),
          h('td', {}, p.load_error || (s.last_error ? s.last_error.message : '')));
      }))),
    decisionLog(api, policies, filters));
}

function decisionLog(api, policies, filters) {
  const policySelect = h('select', { id: 'f-policy' });
  const hookSelect = h('select', { id: 'f-hook' }, h('option', { value: '' }, 'any hook'), HOOKS.map((k) => h('option', { value: k }, k)));
  const verdictSelect = h('select', { id: 'f-verdict' }, h('option', { value: '' }, 'any verdict'));
  const failed = h('input', { id: 'f-failed', type: 'checkbox' });
  const list = h('ol', { class: 'decisions', 'aria-live': 'polite' });
  const status = h('p', { class: 'muted', role: 'status' });
  let loaded = [];

  const fillPolicies = () => {
    const shown = policies.filter((p) => !hookSelect.value || p.hook === hookSelect.value);
    policySelect.replaceChildren(...shown.map((p) => h('option', { value: p.name }, `${p.name} (${p.hook})`)));
    if (shown.some((p) => p.name === filters.policy)) policySelect.value = filters.policy;
  };
  // The URL keeps the filters, so a view can be shared and reloaded.
  const remember = () => {
    const q = new URLSearchParams();
    if (policySelect.value) q.set('policy', policySelect.value);
    if (hookSelect.value) q.set('hook', hookSelect.value);
    if (verdictSelect.value) q.set('verdict', verdictSelect.value);
    if (failed.checked) q.set('failed', '1');
    history.replaceState(null, '', `#/policies?${q}`);
  };
  const render = () => {
    const shown = loaded.filter((d) => (!failed.checked || d.error) && (!verdictSelect.value || verdictOf(d) === verdictSelect.value));
    const what = failed.checked ? 'latest failed decisions' : 'latest decisions';
    status.textContent = `${shown.length} of the ${loaded.length} ${what} of ${policySelect.value || 'no policy'}`;
    list.replaceChildren(...shown.slice().reverse().slice(0, 500).map((d) => h('li', {
      class: d.error ? 'decision failed' : 'decision', dataset: { decisionId: d.decision_id, verdict: verdictOf(d) },
    }, h('details', {},
      h('summary', {}, `${when(d.at)} · ${d.policy} v${d.version} · ${d.hook} · ${d.agent} · `,
        h('strong', {}, verdictOf(d)), ` · ${d.duration_us} µs`, d.dry_run ? ' · dry run' : ''),
      d.error ? h('p', { class: 'error' }, d.error) : null,
      h('h3', {}, 'Input'), json(d.input), h('h3', {}, 'Result'), json(d.result),
      h('h3', {}, 'Guest logs'), json(d.logs),
      h('h3', {}, 'stdout'), h('pre', {}, d.stdout || ''), h('h3', {}, 'stderr'), h('pre', {}, d.stderr || '')))));
  };
  // Loads can overlap (a policy chosen, then "failed only" ticked before
  // the first answer), so only the latest one may render.
  let loads = 0;
  const load = async () => {
    remember();
    const mine = ++loads;
    delete list.dataset.ready;
    const name = policySelect.value;
    const failedOnly = failed.checked;
    let got = [];
    if (name) {
      // Failures are filtered by the host, so a rare one is not lost among
      // the newest 1,000 decisions; verdicts are filtered here.
      const q = failedOnly ? '&failed=true' : '';
      got = (await api.get(`/policies/${enc(name)}/decisions?latest=true&limit=1000${q}`)).decisions;
    }
    if (mine !== loads) return;
    loaded = got;
    const verdicts = [...new Set(loaded.map(verdictOf))].sort();
    const chosen = verdictSelect.value || filters.verdict;
    verdictSelect.replaceChildren(h('option', { value: '' }, 'any verdict'), verdicts.map((v) => h('option', { value: v }, v)));
    if (verdicts.includes(chosen)) verdictSelect.value = chosen;
    render();
    // What the list now shows, for tests and scripts to wait on.
    list.dataset.failed = failedOnly ? '1' : '0';
    list.dataset.ready = name;
  };

  hookSelect.value = filters.hook;
  failed.checked = filters.failed;
  fillPolicies();
  hookSelect.addEventListener('change', () => { fillPolicies(); load(); });
  policySelect.addEventListener('change', load);
  verdictSelect.addEventListener('change', () => { remember(); render(); });
  failed.addEventListener('change', load);
  load();
  return h('section', { 'aria-labelledby': 'log-title' }, h('h2', { id: 'log-title' }, 'Decision log'),
    h('div', { class: 'filters' },
      h('label', { for: 'f-hook' }, 'Hook '), hookSelect,
      h('label', { for: 'f-policy' }, 'Policy '), policySelect,
      h('label', { for: 'f-verdict' }, 'Verdict '), verdictSelect,
      h('label', { for: 'f-failed' }, failed, ' failed only')),
    status, list);
}
