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
  const headers = { 'X-API-KEY': key };
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
  await context.addInitScript((k) => sessionStorage.setItem('cairn.key', k), key);
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
    const page = await open(browser, input.outsider_key, '#/');
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
    return { claimed_ms, errors: page.errors };
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
