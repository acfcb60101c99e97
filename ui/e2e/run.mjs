// Browser tests of the admin UI: a real `dagg serve` (started here on a free loopback port,
// with a fresh data directory) and Debian's chromium driven headless by playwright-core.
//
//   node e2e/run.mjs            DAGG_BIN=path/to/dagg (default: ../target/debug/dagg)
//                               CHROMIUM=/usr/bin/chromium  SCREENSHOTS=1 (writes docs/ui-*.png)
//
// Log in; build the guide's e-commerce pipeline (examples/guide/01-ecommerce-orders) in the
// builder by drag and drop; see validation errors on the nodes while it is incomplete;
// preview it on the example's input; save; run it; watch the run reach `success` live (the
// WebSocket delivers it); see its records on the run's page; a viewer sees no editing
// controls; the session refreshes after the access token expires; log out.
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const example = join(root, 'examples/guide/01-ecommerce-orders');
const bin = process.env.DAGG_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug/dagg');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const screenshots = process.env.SCREENSHOTS !== '0';
const password = `ui-${Math.random().toString(36).slice(2)}`;
const TTL = Number(process.env.UI_E2E_TTL ?? 10); // seconds: the access token expires during the test, so the UI must refresh it.

const results = [];
let shotOnFailure = null;
let failed = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push(name);
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack ?? e}`);
    if (shotOnFailure) {
      mkdirSync(join(here, 'out'), { recursive: true });
      await shotOnFailure.screenshot({ path: join(here, 'out/failure.png') }).catch(() => {});
      console.log(`screenshot: ${join(here, 'out/failure.png')}`);
    }
    throw e;
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// --- the server -----------------------------------------------------------------------
const data = mkdtempSync(join(tmpdir(), 'dagg-ui-e2e-'));
mkdirSync(join(data, 'files'), { recursive: true });
cpSync(join(example, 'input.json'), join(data, 'files/input.json'));
const server = spawn(bin, ['serve', '--api-addr', '127.0.0.1:0', '--data-dir', data, '--access-token-ttl', String(TTL)], {
  env: { ...process.env, DAGG_ADMIN_PASSWORD: password, DAGG_LOG: 'info' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let log = '';
server.stdout.on('data', (d) => (log += d));
server.stderr.on('data', (d) => (log += d));
const base = await new Promise((res, rej) => {
  const t = setTimeout(() => rej(new Error(`dagg serve did not start:\n${log}`)), 30000);
  const poll = setInterval(() => {
    const m = log.match(/listening on (http:\/\/[^\s]+)/);
    if (m) {
      clearInterval(poll);
      clearTimeout(t);
      res(m[1].replace(/\/$/, ''));
    }
  }, 50);
  server.on('exit', (c) => rej(new Error(`dagg serve exited (${c}):\n${log}`)));
});
console.log(`dagg serve at ${base} (data ${data})`);

async function call(method, path, body, token) {
  const r = await fetch(base + path, { method, headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const adminToken = (await call('POST', '/auth/login', { username: 'admin', password })).access_token;
await call('POST', '/users', { username: 'vera', password: 'viewer-password-1', role: 'viewer' }, adminToken);

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
const expected = JSON.parse(readFileSync(join(example, 'expected.json'), 'utf8'));
const pipelineDoc = JSON.parse(readFileSync(join(example, 'pipeline.json'), 'utf8'));
const input = readFileSync(join(example, 'input.json'), 'utf8');

async function login(page, username, pw) {
  await page.goto(`${base}/ui/`);
  await page.getByLabel('User name or e-mail').fill(username);
  await page.getByLabel('Password').fill(pw);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
}

let exitCode = 0;
try {
  // Wide enough that no handle sits near the canvas edge (React Flow pans while a link is dragged there).
  const context = await browser.newContext({ viewport: { width: 1600, height: 960 } });
  const page = await context.newPage();
  shotOnFailure = page;
  const pageErrors = [];
  page.on('pageerror', (e) => (pageErrors.push(String(e)), console.log(`page error: ${e.stack ?? e}`)));
  // Every WebSocket frame the page receives, to prove the run's end arrived live.
  const frames = [];
  page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));

  await check('log in as admin and see the dashboard', async () => {
    await login(page, 'admin', password);
    await page.getByTestId('system-status').waitFor();
    assert((await page.getByTestId('role').textContent()) === 'admin', 'role shown');
    // The cluster card: this node alone, the leader of its one-member Raft group, up.
    const member = page.getByTestId('cluster-member');
    await member.first().waitFor();
    assert((await member.count()) === 1, 'one cluster member');
    const row = await member.first().textContent();
    assert(row.includes('this node') && row.includes('leader') && row.includes('up'), `the cluster member's row: ${row}`);
    await page.getByText('live', { exact: true }).waitFor({ timeout: 10000 });
  });

  const canvas = page.getByTestId('canvas');
  const form = page.getByTestId('node-form');
  async function drop(kind, type) {
    const box = await canvas.boundingBox();
    const before = await page.getByTestId('builder-node').count();
    // Three to a row, so every node is in view and none covers another's handles.
    await page.locator(`[data-palette="${kind}:${type}"]`).dragTo(canvas, { targetPosition: { x: 20 + (before % 3) * 225, y: 30 + Math.floor(before / 3) * 150 } });
    assert(box, 'canvas shown');
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=builder-node]').length === n + 1, before);
    await form.waitFor();
  }
  const field = (name) => form.locator(`[data-field="${name}"]`);

  await check('build the e-commerce pipeline by drag and drop, with errors shown on the nodes as it is edited', async () => {
    await page.getByRole('link', { name: 'Builder' }).click();
    await page.locator('[data-palette="source:file"]').waitFor();
    await page.getByLabel('Pipeline name').fill(pipelineDoc.name);
    // The source: an incomplete node carries the API's validation errors.
    await drop('source', 'file');
    await page.waitForFunction(() => document.querySelector('[data-testid=builder-node][data-kind=source] [data-testid=node-errors]')?.textContent.includes('source.config'));
    assert((await page.getByTestId('pipeline-errors').textContent()).includes('destination'), 'the missing destination is a pipeline-level error');
    await field('path').fill('input.json');
    await field('format').selectOption('json');
    await page.waitForFunction(() => document.querySelector('[data-testid=builder-node][data-kind=source]')?.getAttribute('data-errors') === '0');

    await drop('transform', 'field_mapping');
    await field('field_name').fill('product_name');
    await field('operation').selectOption('title_case');

    await drop('transform', 'field_calculation');
    await field('field_name').fill('total_price');
    await field('operation').selectOption('multiply');
    await field('parameters.source_fields').fill('quantity, price');
    await field('parameters.output_field').fill('total_price');

    await drop('transform', 'record_filter');
    await field('condition.field').fill('status');
    await field('condition.operator').selectOption('equals');
    await field('condition.value').fill('completed');

    await drop('transform', 'field_addition');
    await field('field_name').fill('processed_timestamp');
    await field('value').fill('current_timestamp');

    await drop('transform', 'field_validation');
    await field('field_name').fill('customer_email');
    await field('validation_type').selectOption('email_format');

    await drop('transform', 'field_mapping');
    await field('field_name').fill('price');
    await field('operation').selectOption('rename');
    await field('parameters.to').fill('unit_price');

    await drop('destination', 'file');
    await field('path').fill('output.json');
    await field('format').selectOption('json');

    // Unconnected steps are problems, shown on their nodes.
    const nodes = page.getByTestId('builder-node');
    assert((await nodes.count()) === 8, 'eight nodes');
    assert(Number(await nodes.nth(1).getAttribute('data-errors')) > 0, 'an unconnected transformation says so');
    // Connect each node's output handle to the next node's input handle, by dragging.
    for (let i = 0; i < 7; i++) {
      await page.locator('.react-flow__node').nth(i).locator('.react-flow__handle.source').dragTo(page.locator('.react-flow__node').nth(i + 1).locator('.react-flow__handle.target'));
    }
    assert((await page.locator('.react-flow__edge').count()) === 7, 'seven edges');
    await page.getByTestId('validation-status').getByText('valid').waitFor({ timeout: 10000 });
  });

  await check('preview the pipeline on the example input', async () => {
    await page.getByLabel('Sample records').fill(input);
    await page.getByRole('button', { name: 'Preview transformations' }).click();
    await page.getByTestId('preview-result').waitFor();
    const n = Number(await page.getByTestId('preview-count').textContent());
    assert(n === expected.length, `preview gives ${n} records, the guide expects ${expected.length}`);
    const text = await page.getByTestId('preview-result').textContent();
    assert(text.includes('Wireless Mouse') && text.includes('unit_price'), 'previewed records are transformed');
  });

  if (screenshots) await page.screenshot({ path: join(root, 'docs/ui-builder.png') });

  await check('the JSON view shows the document the CLI runs, and an edit there comes back to the canvas', async () => {
    await page.getByRole('tab', { name: 'JSON' }).click();
    const doc = JSON.parse(await page.getByTestId('document-text').inputValue());
    assert(JSON.stringify(doc) === JSON.stringify(pipelineDoc), `the builder's document is the guide's:\n${JSON.stringify(doc, null, 2)}`);
    await page.getByRole('tab', { name: 'YAML' }).click();
    const yaml = await page.getByTestId('document-text').inputValue();
    assert(yaml.includes('name: ecommerce-orders') && yaml.includes('operation: title_case'), 'YAML view');
    // An edit in the text view reaches the canvas, then is undone the same way.
    await page.getByTestId('document-text').fill(yaml.replace('path: output.json', 'path: output2.json'));
    await page.getByRole('button', { name: 'Apply to canvas' }).click();
    await page.locator('[data-testid=builder-node][data-kind=destination]').getByText('output2.json').waitFor();
    await page.getByRole('tab', { name: 'YAML' }).click();
    await page.getByTestId('document-text').fill(yaml);
    await page.getByRole('button', { name: 'Apply to canvas' }).click();
    await page.locator('[data-testid=builder-node][data-kind=destination]').getByText('output.json').waitFor();
  });


  let runUrl;
  await check('save, run, and watch the run reach success live', async () => {
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('button', { name: 'Saved v1' }).waitFor();
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await page.waitForURL(/\/ui\/runs\//);
    runUrl = page.url();
    const runId = runUrl.split('/').pop();
    await page.getByTestId('run-status').filter({ hasText: 'success' }).waitFor({ timeout: 30000 });
    const live = frames.map((f) => JSON.parse(f)).filter((e) => e.run_id === runId && e.type === 'run_status');
    assert(live.some((e) => e.status === 'success'), `the WebSocket delivered the run's success (got ${JSON.stringify(live)})`);
  });

  await check("the run's page shows the records it wrote", async () => {
    const rows = page.getByTestId('output-records').locator('tbody tr');
    await rows.first().waitFor();
    assert((await rows.count()) === expected.length, `${await rows.count()} records shown, ${expected.length} expected`);
    const table = await page.getByTestId('output-records').textContent();
    for (const r of expected) assert(table.includes(r.order_id) && table.includes(r.product_name), `record ${r.order_id} shown`);
    assert((await page.getByTestId('count-written').textContent()) === String(expected.length), 'written count');
    await page.getByRole('list', { name: 'Run log' }).getByText('[finished]').waitFor();
  });

  await check("a pipeline's versions: edit in the builder, diff, roll back", async () => {
    await page.getByRole('link', { name: `${pipelineDoc.name} v1` }).click();
    await page.getByRole('link', { name: 'Edit' }).click();
    const dest = page.locator('[data-testid=builder-node][data-kind=destination]');
    await dest.waitFor();
    await dest.click();
    await field('path').fill('output-v2.json');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await page.getByRole('button', { name: 'Saved v2' }).waitFor();
    await page.getByRole('link', { name: 'Pipelines' }).click();
    await page.getByRole('link', { name: pipelineDoc.name }).click();
    await page.getByText('version 2').waitFor();
    await page.getByRole('button', { name: 'Diff' }).click();
    await page.getByText('destination.config.path: "output.json" → "output-v2.json"').waitFor();
    await page.getByRole('button', { name: 'Roll back' }).click();
    await page.getByText('version 3').waitFor();
    await page.getByText('rollback to version 1').waitFor();
  });

  await check('the session is refreshed after the access token expires', async () => {
    await page.waitForTimeout((TTL + 1) * 1000);
    await page.getByRole('link', { name: 'Pipelines' }).click();
    await page.getByRole('link', { name: pipelineDoc.name }).waitFor();
    assert(!(await page.getByRole('alert').count()), 'no error after the token expired');
  });

  const out = join(here, 'out');
  mkdirSync(out, { recursive: true });
  await page.screenshot({ path: join(out, 'pipelines.png') });
  await page.getByRole('link', { name: pipelineDoc.name }).click();
  await page.getByRole('heading', { name: 'Versions' }).waitFor();
  await page.screenshot({ path: join(out, 'pipeline.png') });
  await page.goto(runUrl);
  await page.getByTestId('output-records').waitFor();
  await page.screenshot({ path: join(out, 'run.png') });

  await check('create a connector with its generated form and test the connection', async () => {
    await page.getByRole('link', { name: 'Connectors' }).click();
    await page.getByRole('button', { name: 'New connector' }).click();
    await page.getByLabel('Name', { exact: true }).first().fill('orders file');
    await page.getByLabel('Type').selectOption('file');
    await page.locator('[data-field="path"]').fill('input.json');
    await page.locator('[data-field="format"]').selectOption('json');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('button', { name: 'Test connection' }).click();
    const result = await page.getByTestId('test-result').textContent();
    assert(result.startsWith('Connected (source)'), `test result: ${result}`);
    // A file that is not there fails the test, with the reason.
    await page.locator('[data-field="path"]').fill('missing.json');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('button', { name: 'Test connection' }).click();
    await page.getByTestId('test-result').getByText('Failed').waitFor();
    await page.getByRole('table', { name: 'Connectors' }).getByText('orders file').waitFor();
  });

  await check('the rule builder previews its rules live on sample records', async () => {
    await page.getByRole('link', { name: 'Transformations' }).click();
    await page.getByLabel('Rule set name').fill('tidy names');
    await page.getByLabel('Rule type').selectOption('field_mapping');
    await page.getByRole('button', { name: 'Add rule' }).click();
    await page.locator('[data-field="field_name"]').fill('name');
    await page.locator('[data-field="operation"]').selectOption('title_case');
    await page.getByTestId('rules-preview').getByText('"Ada Lovelace"').waitFor();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('button', { name: 'tidy names' }).waitFor();
    // Dark theme, for a look.
    await page.getByRole('button', { name: /Switch to dark theme/ }).click();
    await page.screenshot({ path: join(out, 'transformations-dark.png') });
    await page.getByRole('button', { name: /Switch to light theme/ }).click();
  });

  if (screenshots) {
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByTestId('system-status').waitFor();
    await page.waitForTimeout(1500);
    await page.screenshot({ path: join(root, 'docs/ui-dashboard.png') });
  }

  await check('log out', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await page.goto(`${base}/ui/pipelines`);
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    assert(pageErrors.length === 0, `no page errors: ${pageErrors.join('\n')}`);
  });

  await check('a viewer cannot see the editing controls', async () => {
    const vctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const v = await vctx.newPage();
    await login(v, 'vera', 'viewer-password-1');
    assert((await v.getByTestId('role').textContent()) === 'viewer', 'viewer role');
    assert((await v.getByRole('link', { name: 'Builder' }).count()) === 0, 'no Builder in the menu');
    await v.getByRole('link', { name: 'Pipelines' }).click();
    await v.getByRole('link', { name: pipelineDoc.name }).waitFor();
    assert((await v.getByRole('link', { name: 'New pipeline' }).count()) === 0, 'no New pipeline');
    assert((await v.getByRole('button', { name: /^Run / }).count()) === 0, 'no Run buttons');
    await v.getByRole('link', { name: pipelineDoc.name }).click();
    await v.getByRole('heading', { name: 'Runs' }).waitFor();
    assert((await v.getByTestId('pipeline-actions').count()) === 0, 'no pipeline actions');
    assert((await v.getByRole('button', { name: 'Roll back' }).count()) === 0, 'no rollback');
    await v.goto(runUrl);
    await v.getByTestId('output-records').waitFor();
    assert((await v.getByRole('button', { name: 'Cancel' }).count()) === 0, 'no cancel');
    await v.goto(`${base}/ui/builder`);
    await v.getByText('may not open this page').waitFor();
    await v.goto(`${base}/ui/connectors`);
    await v.getByRole('heading', { name: 'Connectors' }).waitFor();
    assert((await v.getByRole('button', { name: 'New connector' }).count()) === 0, 'no New connector');
    await v.goto(`${base}/ui/transformations`);
    await v.getByRole('heading', { name: 'Transformations' }).waitFor();
    assert((await v.getByRole('button', { name: 'Add rule' }).count()) === 0, 'no Add rule');
    await vctx.close();
  });
} catch {
  exitCode = 1;
} finally {
  await browser.close();
  server.kill('SIGTERM');
  await new Promise((r) => (server.exitCode !== null ? r() : server.on('exit', r)));
  if (exitCode && process.env.UI_E2E_LOG) console.log(log);
  rmSync(data, { recursive: true, force: true });
}
console.log(`e2e: ${results.length} passed, ${failed} failed`);
process.exit(exitCode || failed ? 1 : 0);
