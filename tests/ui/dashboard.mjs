// Drives the dashboard in Debian's Chromium for tests/ui.rs: one scenario
// per run, `node dashboard.mjs SCENARIO`, with what it needs (the host's
// URL, keys, names) as JSON in CAIRN_UI_INPUT. It acts through the API as
// a user's agents would and checks what the page shows; the Rust test
// checks the API afterwards. The last line of stdout is `RESULT {json}`.
import { chromium } from 'playwright-core';

const input = JSON.parse(process.env.CAIRN_UI_INPUT || '{}');
const scenario = process.argv[2];
const base = input.url;
// How long the page may take to show a change made through the API. The
// figures the page really takes are printed, and recorded in benchmarks.md.
const LIVE_MS = 5000;

async function api(key, method, path, body) {
  const headers = key ? { 'X-API-KEY': key } : {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: r.status, json };
}

async function expectStatus(want, promise, what) {
  const r = await promise;
  if (r.status !== want) throw new Error(`${what}: expected ${want}, got ${r.status} ${JSON.stringify(r.json)}`);
  return r.json;
}

async function open(browser, key, hash, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  if (key) await context.addInitScript((k) => sessionStorage.setItem('cairn.key', k), key);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // A 404 the page expects (an empty stream has no latest entry) is logged
  // by the browser as a failed load; only the page's own errors count.
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && errors.push(m.text()));
  await page.goto(`${base}/ui${hash}`);
  page.errors = errors;
  return page;
}

// Every visible text on the page against the background it sits on: the
// WCAG contrast ratio, and the elements under 4.5:1.
async function lowContrast(page) {
  return page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const low = [];
    for (const el of document.querySelectorAll('body *')) {
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own || !el.getClientRects().length) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden' || Number(style.opacity) < 1) continue;
      const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < 4.5) low.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
    }
    return low;
  });
}

// Milliseconds from `start` until `locator` is visible.
async function visibleAfter(locator, start) {
  await locator.first().waitFor({ state: 'visible', timeout: LIVE_MS });
  return Date.now() - start;
}

const scenarios = {
  // A HALT raised through the API shows as a banner; the lead acknowledges
  // it with a note in the page.
  async halt(browser) {
    const page = await open(browser, input.lead_key, `#/teams/${input.team}`);
    await page.waitForSelector('main[data-ready="team"]');
    if (await page.locator('.halt').count()) throw new Error('a banner before any HALT');
    const start = Date.now();
    const raised = await expectStatus(201, api(input.member_key, 'POST', `/teams/${input.team}/signals`, {
      level: 'HALT', category: 'security', issue: 'Credentials in the build log', evidence: 'line 42 of the log',
      impact: 'anyone with the log can deploy', recommended_action: 'rotate the key',
    }), 'raise the HALT');
    const banner_ms = await visibleAfter(page.locator(`.halt [data-signal-id="${raised.signal_id}"]`), start);
    const text = await page.locator('.halt').innerText();
    const haltContrast = await lowContrast(page);
    if (haltContrast.length) throw new Error(`text under 4.5:1 contrast: ${haltContrast.join('; ')}`);
    for (const want of ['HALT', 'SECURITY', 'Credentials in the build log', 'rotate the key']) {
      if (!text.toUpperCase().includes(want.toUpperCase())) throw new Error(`the banner does not say ${want}: ${text}`);
    }
    await page.getByRole('button', { name: 'Acknowledge' }).click();
    const dialog = page.getByRole('dialog');
    // An empty note is refused in the page, with a reason.
    await dialog.getByRole('button', { name: 'Acknowledge' }).click();
    await dialog.locator('.error').filter({ hasText: 'note' }).waitFor();
    await dialog.getByLabel('Note').fill('Key rotated; log purged');
    await dialog.getByLabel('Note').press('Tab');
    await dialog.getByRole('button', { name: 'Cancel' }).press('Tab');
    await page.keyboard.press('Enter');
    await page.locator('.halt').waitFor({ state: 'detached', timeout: LIVE_MS });
    return { banner_ms, signal_id: raised.signal_id, errors: page.errors };
  },

  // Cards move as tasks are created, claimed and completed through the API.
  async board(browser) {
    const page = await open(browser, input.lead_key, `#/teams/${input.team}`);
    await page.waitForSelector('main[data-ready="team"]');
    const t = `/teams/${input.team}/tasks`;
    let start = Date.now();
    const first = await expectStatus(201, api(input.lead_key, 'POST', t, { subject: 'Write the parser', active_form: 'Writing the parser' }), 'create');
    const created_ms = await visibleAfter(page.locator(`[data-status="pending"] [data-task-id="${first.id}"]`), start);
    const second = await expectStatus(201, api(input.lead_key, 'POST', t, { subject: 'Wire the lexer in', blocked_by: [first.id] }), 'create blocked');
    const blocked = page.locator(`[data-task-id="${second.id}"] .blocked`);
    await blocked.waitFor({ timeout: LIVE_MS });
    await page.locator(`[data-task-id="${first.id}"] .blocks`).filter({ hasText: `#${second.id}` }).waitFor({ timeout: LIVE_MS });

    start = Date.now();
    await expectStatus(200, api(input.member_key, 'PATCH', `${t}/${first.id}`, { status: 'in_progress', owner: input.member }), 'claim');
    const moving = page.locator(`[data-status="in_progress"] [data-task-id="${first.id}"]`);
    const claimed_ms = await visibleAfter(moving, start);
    const card = await moving.innerText();
    if (!card.includes(`Owner: ${input.member}`) || !card.includes('Writing the parser')) throw new Error(`the claimed card: ${card}`);

    start = Date.now();
    await expectStatus(200, api(input.member_key, 'PATCH', `${t}/${first.id}`, { status: 'completed', metadata: { handoff: input.handoff } }), 'complete');
    const done = page.locator(`[data-status="completed"] [data-task-id="${first.id}"]`);
    const completed_ms = await visibleAfter(done, start);
    await blocked.waitFor({ state: 'detached', timeout: LIVE_MS });
    await done.getByText('HANDOFF').click();
    const handoff = await done.locator('.handoff').innerText();
    for (const want of ['Produced', 'Key decisions', 'Reasoning chain', 'Areas of uncertainty', 'MEDIUM', 'Integration points', 'Open questions']) {
      if (!handoff.includes(want)) throw new Error(`the HANDOFF lacks ${want}: ${handoff}`);
    }
    if (input.screenshot) await page.screenshot({ path: input.screenshot });
    const low = await lowContrast(page);
    if (low.length) throw new Error(`text under 4.5:1 contrast: ${low.join('; ')}`);

    // At phone width the columns stack and nothing scrolls sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    const layout = await page.evaluate(() => {
      const xs = [...document.querySelectorAll('.column')].map((c) => Math.round(c.getBoundingClientRect().left));
      return { xs, overflow: document.documentElement.scrollWidth - window.innerWidth };
    });
    if (new Set(layout.xs).size !== 1 || layout.overflow > 0) throw new Error(`phone layout: ${JSON.stringify(layout)}`);
    return { created_ms, claimed_ms, completed_ms, errors: page.errors };
  },

  // A key outside a private team sees no trace of it.
  async private(browser) {
    // Signed in through the form, by keyboard: a wrong key first.
    const page = await open(browser, null, '#/');
    await page.getByLabel('API key').fill('sk_not_a_key_of_this_host');
    await page.keyboard.press('Enter');
    await page.getByText('That key is not valid on this host.').waitFor();
    await page.getByLabel('API key').fill(input.outsider_key);
    await page.keyboard.press('Enter');
    await page.waitForSelector('main[data-ready="overview"]');
    const overview = await page.content();
    await page.goto(`${base}/ui#/teams/${input.team}`);
    await page.getByRole('heading', { name: 'Team not found' }).waitFor();
    const direct = await page.locator('main').innerText();
    for (const [where, text] of [['overview', overview], ['team page', direct]]) {
      for (const secret of input.secrets) {
        if (text.includes(secret)) throw new Error(`the ${where} shows ${secret}`);
      }
    }
    if (!overview.includes(input.own_team)) throw new Error('the outsider\'s own team is missing');
    return { errors: page.errors };
  },

  // The decision log, filtered to one policy's failures.
  async decisions(browser) {
    const page = await open(browser, input.admin_key, '#/policies');
    await page.getByLabel('Policy').selectOption(input.policy);
    await page.waitForSelector(`ol.decisions[data-ready="${input.policy}"]`);
    await page.getByLabel('failed only').check();
    // The list is redrawn when the host's filtered answer arrives.
    await page.waitForSelector(`ol.decisions[data-ready="${input.policy}"][data-failed="1"]`);
    const rows = page.locator('ol.decisions > li');
    const shown = await rows.evaluateAll((lis) => lis.map((li) => ({ id: li.dataset.decisionId, failed: li.classList.contains('failed'), text: li.innerText })));
    await rows.first().locator('summary').click();
    const expanded = await rows.first().innerText();
    for (const want of ['Input', 'Result', 'Guest logs', 'stdout', 'stderr']) {
      if (!expanded.includes(want)) throw new Error(`an expanded decision lacks ${want}`);
    }
    const url = page.url();
    return { shown, url, errors: page.errors };
  },

  // A claim entry on a contract's discussion stream changes its subtask on screen.
  async contract(browser) {
    const page = await open(browser, input.creator_key, `#/contracts/${input.contract}`);
    await page.waitForSelector('main[data-ready="contract"]');
    const row = page.locator(`tr[data-subtask="${input.subtask}"]`);
    if ((await row.locator('.status').innerText()) !== 'open') throw new Error('the subtask is not open at first');
    const start = Date.now();
    const data = { type: 'claim', subtask_id: input.subtask, agent_name: input.bot };
    await expectStatus(201, api(input.bot_key, 'POST', `/stream/${input.stream_id}`, { label: 'claim', data }), 'claim');
    await row.locator('.status').filter({ hasText: 'claimed' }).waitFor({ timeout: LIVE_MS });
    const claimed_ms = Date.now() - start;
    const assigned = await row.locator('.assigned').innerText();
    if (assigned !== input.bot) throw new Error(`assigned to ${assigned}`);
    // The timeline filter shows one label alone.
    const timeline = page.locator(`section[data-stream-name="${input.contract}-discussion"]`);
    await timeline.getByLabel('Label').selectOption('claim-decision');
    const labels = await timeline.locator('li').evaluateAll((lis) => lis.map((li) => li.dataset.label));
    if (labels.length === 0 || labels.some((l) => l !== 'claim-decision')) throw new Error(`filtered labels: ${labels}`);

    // A HALT on the contract's stream is a banner its creator acknowledges.
    let start2 = Date.now();
    const halt = { level: 'HALT', category: 'SECURITY', issue: 'The brief leaks a customer list' };
    const raised = await expectStatus(201, api(input.bot_key, 'POST', `/stream/${input.stream_id}`, { label: 'algedonic', data: halt }), 'raise');
    const signal = raised.decision && raised.decision.signal_id;
    const halt_ms = await visibleAfter(page.locator(`.halt [data-signal-id="${signal}"]`), start2);
    const refused = await api(input.bot_key, 'POST', `/stream/${input.stream_id}`, { label: 'claim', data: { ...data, subtask_id: input.second } });
    if (refused.status !== 423) throw new Error(`a claim under the HALT: ${refused.status}`);
    await page.getByRole('button', { name: 'Acknowledge' }).click();
    await page.getByRole('dialog').getByLabel('Note').fill('Customer list removed from the brief');
    await page.getByRole('dialog').getByRole('button', { name: 'Acknowledge' }).click();
    await page.locator('.halt').waitFor({ state: 'detached', timeout: LIVE_MS });
    return { claimed_ms, halt_ms, signal_id: signal, errors: page.errors };
  },

  // First render of a large board, from navigation to the cards on screen.
  async large(browser) {
    const runs = [];
    for (let i = 0; i < 5; i++) {
      const page = await open(browser, input.lead_key, `#/teams/${input.team}`);
      await page.waitForSelector('main[data-ready="team"]', { timeout: 30000 });
      const ms = await page.evaluate(() => performance.getEntriesByName('cairn:board-rendered')[0].startTime);
      const cards = await page.locator('.card').count();
      if (cards !== input.tasks) throw new Error(`${cards} cards, not ${input.tasks}`);
      runs.push(Math.round(ms));
      await page.context().close();
    }
    const sizes = await (async () => {
      let total = 0;
      for (const f of ['index.html', 'style.css', 'app.js', 'api.js', 'dom.js', 'signals.js', 'team.js', 'contract.js', 'policies.js']) {
        total += (await (await fetch(`${base}/ui/${f}`)).arrayBuffer()).byteLength;
      }
      return total;
    })();
    return { first_render_ms: runs, asset_bytes: sizes };
  },
};

// For docs/benchmarks.md: a team of `input.tasks` tasks (200-byte
// descriptions, every tenth blocked by the one before) made over the API,
// as `large` wants it. Prints that scenario's input; needs no browser.
async function seed() {
  const name = `bench-${Date.now()}`;
  const lead = await expectStatus(201, api(null, 'POST', '/register/agent', { agent_name: name }), 'register');
  await expectStatus(201, api(lead.api_key, 'POST', '/teams', { name }), 'create the team');
  for (let i = 1; i <= input.tasks; i++) {
    const task = { subject: `Task number ${i}`, description: 'd'.repeat(200), blocked_by: i % 10 === 0 ? [i - 1] : [] };
    await expectStatus(201, api(lead.api_key, 'POST', `/teams/${name}/tasks`, task), 'create a task');
  }
  console.log(JSON.stringify({ url: base, lead_key: lead.api_key, team: name, tasks: input.tasks }));
}
if (scenario === 'seed') {
  await seed();
  process.exit(0);
}

const browser = await chromium.launch({
  executablePath: process.env.CAIRN_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
let code = 0;
try {
  if (!scenarios[scenario]) throw new Error(`no scenario ${scenario}; one of ${Object.keys(scenarios).join(', ')}`);
  const result = await scenarios[scenario](browser);
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (e) {
  console.error(`${scenario}: ${e.stack || e}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
