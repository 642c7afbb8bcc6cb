// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core, against the real tidewire binary (TIDEWIRE_BIN). Logs in,
// browses one key of every type, edits a hash field (checked through the REST
// API), runs commands in the console, watches a realtime channel (live tail,
// presence, a disconnect), retries a failed BullMQ job from the Queues view (a
// real Queue and Worker), lists the primitives and memory by prefix, mints a
// realtime token, and saves screenshots (see SHOTS below).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Queue, Worker, Job } from 'bullmq';
import { startServer } from '../../lib/server.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Screenshots go to SHOTS_DIR (docs/dashboard refreshes the docs' pictures); by
// default to compat/dashboard/out, so a test run leaves tracked files alone.
const SHOTS = process.env.SHOTS_DIR
  ? path.resolve(repoRoot, process.env.SHOTS_DIR)
  : path.join(repoRoot, 'compat', 'dashboard', 'out');
const TOKEN = 'dashboard-compat-token';
const RO_TOKEN = 'dashboard-compat-readonly';
const RT_KEY = 'compat.dash:dashboardcompatsecret0123';

let server, dir, base, browser, respPort;

/** The real binary (compat/lib/server.mjs) with REST tokens and a realtime key. */
async function startTidewire() {
  dir = mkdtempSync(path.join(tmpdir(), 'tidewire-dashboard-conf-'));
  const cfg = path.join(dir, 'tidewire.toml');
  writeFileSync(cfg, `[upstash]\ntokens = ["${TOKEN}"]\nreadonly_tokens = ["${RO_TOKEN}"]\n[realtime]\nkeys = [{ key = "${RT_KEY}" }]\n`);
  return startServer({ name: 'dashboard', args: ['--config', cfg] });
}

/** One command over the Upstash REST API. */
async function rest(...args) {
  const res = await fetch(`${base}/redis`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(args),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error);
  return body.result;
}

before(async () => {
  server = await startTidewire();
  respPort = server.resp;
  base = `http://127.0.0.1:${server.http}`;
  // One key of every type.
  await rest('SET', 'demo:string', '{"user":{"id":7,"tags":["a","b"]},"active":true}');
  await rest('HSET', 'demo:hash', 'name', 'Ada', 'plan', 'pro');
  await rest('RPUSH', 'demo:list', 'first', 'second', 'third');
  await rest('SADD', 'demo:set', 'red', 'green', 'blue');
  await rest('ZADD', 'demo:zset', '10', 'alice', '25', 'bob');
  await rest('XADD', 'demo:stream', '*', 'event', 'signup', 'user', '7');
  await rest('XGROUP', 'CREATE', 'demo:stream', 'mailers', '0');
  await rest('EXPIRE', 'demo:string', '3600');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function loggedIn(credential) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Every request the page makes stays on this server (nothing from a CDN).
  const foreign = [];
  page.on('request', (r) => { if (!r.url().startsWith(base)) foreign.push(r.url()); });
  await page.goto(`${base}/dashboard`);
  await page.locator('#credential').fill(credential);
  await page.locator('#login-form button').click();
  await page.locator('#app').waitFor({ state: 'visible' });
  return { page, errors, foreign };
}

test('a bad credential is refused on the login form', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/dashboard/`);
  await page.locator('#credential').fill('wrong');
  await page.locator('#login-form button').click();
  await page.locator('#login-error', { hasText: 'invalid credential' }).waitFor();
  assert.equal(await page.locator('#app').isVisible(), false);
  await page.close();
});

test('overview, keys of every type, a hash edit, the console', async () => {
  const { page, errors, foreign } = await loggedIn(TOKEN);
  assert.match(await page.locator('#who').textContent(), /admin/);

  // Overview: figures and a live chart fed every second.
  await page.locator('.card .label', { hasText: 'ops/s' }).waitFor();
  for (const label of ['hit rate', 'memory used', 'RESP clients', 'REST requests', 'realtime connections', 'messages in / out']) {
    await page.locator('.card .label', { hasText: label }).waitFor();
  }
  // Traffic, in waves, for the chart to show.
  for (let i = 0; i < 16; i++) {
    const n = 20 + 15 * (i % 5);
    await Promise.all(Array.from({ length: n }, (_, j) => rest('GET', `demo:${j % 2 ? 'string' : 'missing'}`)));
    await page.waitForTimeout(500);
  }
  const ops = await page.locator('.card', { hasText: 'ops/s' }).locator('.value').textContent();
  assert.match(ops, /^\d+$/);
  await page.screenshot({ path: path.join(SHOTS, 'overview.png') });

  // Keys: every type listed, each one's viewer.
  await page.locator('.tab[data-view=keys]').click();
  await page.locator('#key-pattern').fill('demo:*');
  await page.locator('#key-search button').click();
  const types = { string: 'string', hash: 'hash', list: 'list', set: 'set', zset: 'zset', stream: 'stream' };
  for (const t of Object.keys(types)) {
    await page.locator(`#keys li[data-key="demo:${t}"]`).waitFor();
  }
  const detail = page.locator('#key-detail');
  const open = async (t) => {
    await page.locator(`#keys li[data-key="demo:${t}"]`).click();
    await detail.locator('h2', { hasText: `demo:${t}` }).waitFor();
    await detail.locator('#key-meta', { hasText: t }).waitFor();
  };
  await open('string');
  // JSON is pretty-printed.
  assert.match(await page.locator('#string-value').inputValue(), /\{\n {2}"user": \{\n {4}"id": 7/);
  assert.match(await detail.locator('#key-meta').textContent(), /TTL \d+\.\d s/);
  await open('list');
  await detail.locator('td', { hasText: 'second' }).waitFor();
  await open('set');
  await detail.locator('td', { hasText: 'green' }).waitFor();
  await open('zset');
  await detail.locator('td', { hasText: 'bob' }).waitFor();
  await detail.locator('td', { hasText: '25' }).waitFor();
  await open('stream');
  await detail.locator('td', { hasText: 'event=signup' }).waitFor();
  await detail.locator('td', { hasText: 'mailers' }).waitFor();
  await open('hash');
  await detail.locator('td', { hasText: 'Ada' }).waitFor();

  // Edit a hash field; the change is in the store.
  await detail.locator('.hash-field').fill('plan');
  await detail.locator('.hash-value').fill('enterprise');
  await detail.getByRole('button', { name: 'Set field' }).click();
  await detail.locator('td', { hasText: 'enterprise' }).waitFor();
  assert.equal(await rest('HGET', 'demo:hash', 'plan'), 'enterprise');
  await page.screenshot({ path: path.join(SHOTS, 'keys.png') });

  // Console: a command, history with the up arrow, completion with Tab.
  await page.locator('.tab[data-view=console]').click();
  const input = page.locator('#console-in');
  await input.fill('HGET demo:hash plan');
  await input.press('Enter');
  await page.locator('#console-out div', { hasText: '"enterprise"' }).waitFor();
  await input.fill('INCRBY visits 5');
  await input.press('Enter');
  await page.locator('#console-out div', { hasText: '(integer) 5' }).waitFor();
  await input.press('ArrowUp');
  assert.equal(await input.inputValue(), 'INCRBY visits 5');
  await input.press('ArrowUp');
  assert.equal(await input.inputValue(), 'HGET demo:hash plan');
  await input.fill('hgeta');
  await input.press('Tab');
  assert.equal(await input.inputValue(), 'HGETALL ');
  await input.fill('HGETALL demo:hash');
  await input.press('Enter');
  await page.locator('#console-out div', { hasText: 'enterprise' }).nth(1).waitFor();
  await page.screenshot({ path: path.join(SHOTS, 'console.png') });

  // Slowlog renders (every command is slow at threshold 0).
  await rest('CONFIG', 'SET', 'slowlog-log-slower-than', '0');
  await rest('SET', 'slow:one', 'x');
  await page.locator('.tab[data-view=slowlog]').click();
  await page.locator('#slowlog td', { hasText: 'SET slow:one x' }).waitFor();
  await page.screenshot({ path: path.join(SHOTS, 'slowlog.png') });

  assert.deepEqual(errors, []);
  assert.deepEqual(foreign, []);
  await page.close();
});

test('a read-only session sees no edit controls and the server refuses writes', async () => {
  const { page } = await loggedIn(RO_TOKEN);
  assert.match(await page.locator('#who').textContent(), /read-only/);
  await page.locator('.tab[data-view=keys]').click();
  await page.locator('#keys li[data-key="demo:hash"]').click();
  await page.locator('#key-detail td', { hasText: 'Ada' }).waitFor();
  assert.equal(await page.locator('#key-detail .write:visible').count(), 0);
  // Even a request made by hand from the page is refused.
  const status = await page.evaluate(async () => (await fetch('api/key', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ op: 'hset', key: 'demo:hash', field: 'plan', value: 'free' }),
  })).status);
  assert.equal(status, 403);
  await page.locator('.tab[data-view=console]').click();
  await page.locator('#console-in').fill('DEL demo:hash');
  await page.locator('#console-in').press('Enter');
  await page.locator('#console-out .error', { hasText: 'read-only' }).waitFor();
  assert.equal(await rest('HGET', 'demo:hash', 'name'), 'Ada');
  await page.close();
});

/** Publishes one message over the realtime (Ably) REST API. */
async function publish(channel, name, data) {
  const res = await fetch(`${base}/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(RT_KEY).toString('base64')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, data }),
  });
  assert.ok(res.ok, `publish: ${res.status}`);
}

test('realtime: channels, a live tail, presence, connections and a disconnect', async () => {
  // A realtime client in its own page (the browser's WebSocket, Ably's wire
  // protocol by hand): attaches to demo-room and enters presence as ada.
  const client = await browser.newPage();
  await client.goto(`${base}/dashboard/`);
  const connectionId = await client.evaluate(async ({ key }) => {
    const ws = new WebSocket(`ws://${location.host}/?key=${encodeURIComponent(key)}&clientId=ada&format=json&v=5`);
    window.frames_ = [];
    const next = (action) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no action ${action}`)), 10_000);
      const check = () => {
        const i = window.frames_.findIndex((f) => f.action === action);
        if (i >= 0) { clearTimeout(timer); resolve(window.frames_.splice(i, 1)[0]); } else setTimeout(check, 20);
      };
      check();
    });
    ws.onmessage = (ev) => window.frames_.push(JSON.parse(ev.data));
    window.ws_ = ws;
    window.next_ = next;
    const connected = await next(4);
    ws.send(JSON.stringify({ action: 10, channel: 'demo-room' }));
    await next(11);
    ws.send(JSON.stringify({ action: 14, channel: 'demo-room', msgSerial: 0, presence: [{ action: 2, data: 'reading' }] }));
    await next(1);
    return connected.connectionId;
  }, { key: RT_KEY });

  const { page, errors, foreign } = await loggedIn(TOKEN);
  await page.locator('.tab[data-view=realtime]').click();
  const row = page.locator('#rt-apps tr.channel[data-channel="demo-room"]');
  await row.waitFor();
  await row.click();
  await page.locator('#rt-tail .note', { hasText: 'tail open' }).waitFor();
  await publish('demo-room', 'order:new', 'first order');
  await publish('demo-room', 'order:paid', 'paid in full');
  await page.locator('#rt-tail div', { hasText: 'paid in full' }).waitFor();
  await page.locator('#rt-tail div', { hasText: 'order:new' }).waitFor();
  // Presence and history from the 2 s refresh.
  await page.locator('#rt-info td', { hasText: 'ada' }).first().waitFor();
  await page.locator('#rt-info td', { hasText: 'first order' }).waitFor();
  const conn = page.locator(`#rt-conns tr[data-connection="${connectionId}"]`);
  await conn.locator('td', { hasText: 'demo-room' }).waitFor();
  await page.screenshot({ path: path.join(SHOTS, 'realtime.png') });

  // Disconnect: the client is told DISCONNECTED and its row goes.
  page.once('dialog', (d) => d.accept());
  await conn.getByRole('button', { name: 'Disconnect' }).click();
  const disconnected = await client.evaluate(() => window.next_(6));
  assert.equal(disconnected.error.code, 80003);
  await conn.waitFor({ state: 'detached' });
  assert.deepEqual(errors, []);
  assert.deepEqual(foreign, []);
  await page.close();
  await client.close();
});

test('a read-only session watches realtime but cannot disconnect', async () => {
  const { page } = await loggedIn(RO_TOKEN);
  await page.locator('.tab[data-view=realtime]').click();
  await page.locator('#rt-conns tbody tr').first().waitFor();
  assert.equal(await page.locator('#rt-conns .write:visible').count(), 0);
  const status = await page.evaluate(async () => (await fetch('api/realtime/disconnect', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'any' }),
  })).status);
  assert.equal(status, 403);
  await page.close();
});

// ---- queues, primitives, memory, realtime keys --------------------------------

test('queues: a failed BullMQ job is retried from the page and then processed', async () => {
  const connection = { host: '127.0.0.1', port: respPort, maxRetriesPerRequest: null };
  const queue = new Queue('emails', { connection });
  let failNext = true;
  const worker = new Worker('emails', async (job) => {
    if (job.name === 'welcome' && failNext) { failNext = false; throw new Error('smtp down'); }
    return { sent: true, to: job.data.to };
  }, { connection });
  try {
    const failed = new Promise((resolve) => worker.once('failed', (job) => resolve(job)));
    const job = await queue.add('welcome', { to: 'ada@example.com' }, { attempts: 1 });
    assert.equal((await failed).id, job.id);
    await queue.add('digest', { week: 12 }, { delay: 3_600_000 });
    await queue.add('receipt', { order: 7 });

    const { page, errors, foreign } = await loggedIn(TOKEN);
    await page.locator('.tab[data-view=queues]').click();
    const row = page.locator('#queues tr[data-queue="bull:emails"]');
    await row.locator('td', { hasText: 'bullmq' }).waitFor();
    await row.click();
    await page.locator('#queue-detail .states button[data-state=failed]', { hasText: 'failed (1)' }).waitFor();
    await page.locator('#queue-detail .states button[data-state=delayed]', { hasText: 'delayed (1)' }).waitFor();
    const jobRow = page.locator(`#queue-jobs tr[data-job="${job.id}"]`);
    await jobRow.locator('td', { hasText: 'smtp down' }).waitFor();
    await jobRow.click();
    const detail = page.locator('#job-detail');
    await detail.locator('#job-meta', { hasText: 'failed' }).waitFor();
    await detail.locator('pre[data-field=data]', { hasText: 'ada@example.com' }).waitFor();
    await detail.locator('pre[data-field=stacktrace]', { hasText: 'smtp down' }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'queues.png') });

    // Retry: the worker, blocked on the queue's marker, takes the job and completes it.
    const completed = new Promise((resolve) => worker.on('completed', (j) => { if (j.id === job.id) resolve(j); }));
    await detail.getByRole('button', { name: 'Retry' }).click();
    const done = await Promise.race([completed, new Promise((_, reject) => setTimeout(() => reject(new Error('the retried job was not processed')), 20_000))]);
    assert.deepEqual(done.returnvalue, { sent: true, to: 'ada@example.com' });
    const after = await Job.fromId(queue, job.id);
    assert.equal(await after.getState(), 'completed');
    assert.ok(!after.failedReason, `failedReason: ${after.failedReason}`);
    assert.equal(await queue.getFailedCount(), 0);
    await page.locator('#queue-detail .states button[data-state=failed]', { hasText: 'failed (0)' }).waitFor();

    // Promote the delayed one from its row; BullMQ sees it waiting or done.
    await page.locator('#queue-detail .states button[data-state=delayed]').click();
    const delayedRow = page.locator('#queue-jobs tbody tr', { hasText: 'digest' });
    await delayedRow.getByRole('button', { name: 'Promote' }).click();
    await page.locator('#queue-detail .states button[data-state=delayed]', { hasText: 'delayed (0)' }).waitFor();
    assert.equal(await queue.getDelayedCount(), 0);
    assert.deepEqual(errors, []);
    assert.deepEqual(foreign, []);
    await page.close();

    // Read-only: the buttons are hidden and the server refuses.
    const ro = await loggedIn(RO_TOKEN);
    await ro.page.locator('.tab[data-view=queues]').click();
    await ro.page.locator('#queues tr[data-queue="bull:emails"]').click();
    await ro.page.locator('#queue-detail .states').waitFor();
    assert.equal(await ro.page.locator('#queue-detail .write:visible').count(), 0);
    const status = await ro.page.evaluate(async () => (await fetch('api/queue/action', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prefix: 'bull', name: 'emails', action: 'clean', state: 'completed' }),
    })).status);
    assert.equal(status, 403);
    await ro.page.close();
  } finally {
    await worker.close().catch(() => {});
    await queue.close().catch(() => {});
  }
});

test('primitives and memory by prefix', async () => {
  await rest('CL.THROTTLE', 'ratelimit:api:alice', '10', '10', '60', '9');
  await rest('CL.THROTTLE', 'ratelimit:api:bob', '10', '10', '60', '2');
  await rest('TW.THROTTLE', 'ratelimit:tiered:carol', 'TIER', 'second', '5', '5', '1000', 'TIER', 'hour', '100', '100', '3600000');
  await rest('TW.LOCK.ACQUIRE', 'lock:payouts', '60000');
  await rest('TW.IDEM.BEGIN', 'idem:checkout-41', '60000', 'FINGERPRINT', 'sha256:4f1c');
  await rest('TW.FILL.GET', 'cache:report:2026', '60000');
  for (let i = 0; i < 40; i++) await rest('SET', `session:${i}`, 'x'.repeat(200 + i * 10));

  const { page, errors } = await loggedIn(TOKEN);
  await page.locator('.tab[data-view=primitives]').click();
  await page.locator('#prim-throttles td', { hasText: 'ratelimit:api:alice' }).waitFor();
  await page.locator('#prim-throttles td', { hasText: 'second:' }).waitFor();
  await page.locator('#prim-locks td', { hasText: 'lock:payouts' }).waitFor();
  await page.locator('#prim-idem td', { hasText: 'idem:checkout-41' }).waitFor();
  await page.locator('#prim-fills td', { hasText: 'cache:report:2026' }).waitFor();
  // The most loaded first.
  assert.match(await page.locator('#prim-throttles tbody tr').first().textContent(), /alice/);
  await page.screenshot({ path: path.join(SHOTS, 'primitives.png') });

  await page.locator('.tab[data-view=memory]').click();
  await page.locator('#memory td', { hasText: 'session:' }).waitFor();
  assert.match(await page.locator('#memory-meta').textContent(), /All \d+ keys analysed/);
  await page.locator('#memory-sample').fill('20');
  await page.locator('#memory-form button').click();
  await page.locator('#memory-meta', { hasText: 'Sampled 20 of' }).waitFor();
  await page.locator('#memory-sample').fill('2000');
  await page.locator('#memory-form button').click();
  await page.locator('#memory-meta', { hasText: 'All' }).waitFor();
  await page.screenshot({ path: path.join(SHOTS, 'memory.png') });
  assert.deepEqual(errors, []);
  await page.close();
});

test('qstash: pending messages, the dead-letter queue with retry and delete, schedules', async () => {
  const qstash = async (path, init = {}) => {
    const res = await fetch(`${base}/v2/${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers || {}) } });
    assert.ok(res.ok, `${path}: ${res.status}`);
    return res.json().catch(() => null);
  };
  // Nothing listens on port 9 here: no retries, so straight to the dead-letter queue.
  await qstash('publish/http://127.0.0.1:9/hooks/stripe', { method: 'POST', body: '{"eventId":"evt_1"}',
    headers: { 'content-type': 'application/json', 'upstash-retries': '0' } });
  const later = await qstash('publish/http://127.0.0.1:9/reminders', { method: 'POST', body: 'remind', headers: { 'upstash-delay': '1h' } });
  await qstash('schedules/http://127.0.0.1:9/reports', { method: 'POST', headers: { 'upstash-cron': '0 4 * * *' } });
  await qstash('queues', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ queueName: 'emails', parallelism: 2 }) });

  const { page, errors } = await loggedIn(TOKEN);
  await page.locator('.tab[data-view=qstash]').click();
  // The failed delivery reaches the DLQ within moments: refresh until it shows.
  const dlqRow = page.locator('#qstash-dlq tr', { hasText: '/hooks/stripe' });
  for (let i = 0; i < 50 && !(await dlqRow.count()); i++) {
    await page.waitForTimeout(100);
    await page.locator('#qstash-refresh').click();
  }
  await dlqRow.waitFor();
  await page.locator('#qstash-pending td', { hasText: later.messageId }).waitFor();
  await page.locator('#qstash-schedules td', { hasText: '0 4 * * *' }).waitFor();
  await page.locator('#qstash-lanes td', { hasText: 'emails' }).waitFor();
  await page.getByRole('cell', { name: 'FAILED', exact: true }).first().waitFor();
  assert.match(await page.locator('#qstash-meta').textContent(), /1 pending .* 1 in the dead-letter queue · 1 schedules/);
  await page.screenshot({ path: path.join(SHOTS, 'qstash.png') });

  // Retry publishes it again (it fails again, with a new DLQ id); delete empties the DLQ.
  const firstId = await dlqRow.locator('td').first().textContent();
  await dlqRow.locator('button', { hasText: 'Retry' }).click();
  await page.waitForFunction((id) => ![...document.querySelectorAll('#qstash-dlq td')].some((td) => td.textContent === id), firstId);
  const again = page.locator('#qstash-dlq tr', { hasText: '/hooks/stripe' });
  for (let i = 0; i < 50 && !(await again.count()); i++) {
    await page.waitForTimeout(100);
    await page.locator('#qstash-refresh').click();
  }
  assert.notEqual(await again.locator('td').first().textContent(), firstId);
  await again.locator('button', { hasText: 'Delete' }).click();
  await page.locator('#qstash-dlq td', { hasText: 'empty' }).waitFor();
  // Cancel takes the pending message away.
  await page.locator('#qstash-pending tr', { hasText: later.messageId }).locator('button', { hasText: 'Cancel' }).click();
  await page.locator('#qstash-pending td', { hasText: 'nothing pending' }).waitFor();
  assert.deepEqual(errors, []);

  // A read-only session has no QStash tab, and the server refuses it the view.
  const ro = await loggedIn(RO_TOKEN);
  assert.equal(await ro.page.locator('.tab[data-view=qstash]').isVisible(), false);
  const refused = await ro.page.evaluate(async () => (await fetch('api/qstash')).status);
  assert.equal(refused, 403);
});

test('realtime keys: listed without secrets, a token minted in the page works', async () => {
  const { page, errors } = await loggedIn(TOKEN);
  await page.locator('.tab[data-view=rtkeys]').click();
  const [keyName, secret] = RT_KEY.split(':');
  await page.locator('#rt-keys td', { hasText: keyName }).waitFor();
  assert.ok(!(await page.content()).includes(secret), 'the secret is on the page');
  await page.locator('#mint-capability').fill('{"orders:*": ["publish", "subscribe"]}');
  await page.locator('#mint-client').fill('checkout-service');
  await page.locator('#mint-form button').click();
  await page.locator('#mint-out', { hasText: '"token"' }).waitFor();
  const details = JSON.parse(await page.locator('#mint-out').textContent());
  assert.equal(details.clientId, 'checkout-service');
  assert.equal(details.keyName, keyName);
  await page.screenshot({ path: path.join(SHOTS, 'realtime-keys.png') });
  const send = (channel) => fetch(`${base}/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${details.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'paid', data: 'order 7' }),
  });
  assert.ok((await send('orders:7')).ok);
  assert.equal((await send('billing')).status, 401);
  assert.deepEqual(errors, []);
  await page.close();

  // Read-only sessions get neither the tab nor the API.
  const ro = await loggedIn(RO_TOKEN);
  assert.equal(await ro.page.locator('.tab[data-view=rtkeys]').isVisible(), false);
  const status = await ro.page.evaluate(async () => (await fetch('api/realtime/keys')).status);
  assert.equal(status, 403);
  await ro.page.close();
});
