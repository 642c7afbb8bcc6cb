// Bull Board (@bull-board/express + @bull-board/api's BullMQ adapter) mounted at
// /admin/queues in an Express app, over a BullMQ queue and worker on tidewire
// (ioredis underneath). Drives the board's JSON API the way its UI does: queue
// listing with counts and jobs, retry, clean, add, promote, pause/resume, the
// job page, and the Redis stats panel (INFO).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import express from 'express';
import { Queue, Worker } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { startServer, waitFor } from '../../lib/server.mjs';
import { setTimeout as sleep } from 'node:timers/promises';

let server;
let connection;
let queue;
let other;
let worker;
let http;
let base;
let failing = true;
const processed = [];

before(async () => {
  server = await startServer({ name: 'node-libs' });
  connection = { host: '127.0.0.1', port: server.resp, maxRetriesPerRequest: null };
  queue = new Queue('emails', { connection });
  other = new Queue('reports', { connection });

  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath('/admin/queues');
  createBullBoard({
    queues: [new BullMQAdapter(queue), new BullMQAdapter(other, { readOnlyMode: true })],
    serverAdapter,
  });
  const app = express();
  app.use('/admin/queues', serverAdapter.getRouter());
  http = app.listen(0, '127.0.0.1');
  await once(http, 'listening');
  base = `http://127.0.0.1:${http.address().port}/admin/queues`;
});

after(async () => {
  // Stop the server (and remove its data dir) even if a close fails.
  await Promise.allSettled([worker?.close(), queue?.close(), other?.close()]);
  if (http) await new Promise((r) => http.close(r));
  await server?.close();
});

async function api(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15000),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function board(query = '') {
  const { status, body } = await api('GET', `/api/queues${query}`);
  assert.equal(status, 200, JSON.stringify(body));
  return Object.fromEntries(body.queues.map((q) => [q.name, q]));
}

const counts = async () => (await board()).emails.counts;

test('the UI entry page is served', async () => {
  const res = await fetch(`${base}/`, { signal: AbortSignal.timeout(10000) });
  assert.equal(res.status, 200);
  assert.match(await res.text(), /<html/i);
});

test('jobs processed by a worker show up with their counts; failed ones with their reasons', async () => {
  for (let i = 1; i <= 5; i++) {
    await queue.add('send', { n: i, fail: i % 2 === 0 }, { jobId: `job-${i}`, attempts: 1 });
  }
  await queue.add('later', { n: 99 }, { jobId: 'delayed-1', delay: 60_000 });
  await other.add('monthly', { m: 1 }, { jobId: 'r-1' });

  worker = new Worker(
    'emails',
    async (job) => {
      processed.push(job.id);
      if (job.data.fail && failing) throw new Error(`boom ${job.id}`);
      return { sent: job.data.n };
    },
    { connection, concurrency: 1 },
  );
  await waitFor(async () => {
    const c = await queue.getJobCounts('completed', 'failed');
    return c.completed === 3 && c.failed === 2;
  }, 20000, '3 completed and 2 failed jobs');

  const queues = await board();
  assert.deepEqual(Object.keys(queues).sort(), ['emails', 'reports']);
  const emails = queues.emails;
  assert.equal(emails.type, 'bullmq');
  assert.equal(emails.isPaused, false);
  assert.equal(emails.readOnlyMode, false);
  assert.equal(emails.counts.completed, 3);
  assert.equal(emails.counts.failed, 2);
  assert.equal(emails.counts.delayed, 1);
  assert.equal(emails.counts.active, 0);
  assert.equal(emails.counts.waiting, 0);
  assert.equal(emails.hasWorkers, true, 'CLIENT LIST shows the worker');
  assert.deepEqual(emails.jobs, [], 'jobs are listed only for the active queue');
  assert.equal(queues.reports.counts.waiting, 1);
  assert.equal(queues.reports.readOnlyMode, true);
  assert.equal(queues.reports.hasWorkers, false);

  const failed = (await board('?activeQueue=emails&status=failed&page=1&jobsPerPage=10')).emails;
  assert.deepEqual(failed.jobs.map((j) => j.id).sort(), ['job-2', 'job-4']);
  for (const j of failed.jobs) {
    assert.equal(j.failedReason, `boom ${j.id}`);
    assert.equal(j.isFailed, true);
    assert.equal(j.attempts, 1);
    assert.ok(j.stacktrace.length > 0);
  }
  assert.equal(failed.pagination.pageCount, 1);

  const completed = (await board('?activeQueue=emails&status=completed&page=1&jobsPerPage=2')).emails;
  assert.equal(completed.jobs.length, 2);
  assert.equal(completed.pagination.pageCount, 2);
  const page2 = (await board('?activeQueue=emails&status=completed&page=2&jobsPerPage=2')).emails;
  assert.equal(page2.jobs.length, 1);
  const allCompleted = [...completed.jobs, ...page2.jobs];
  assert.deepEqual(allCompleted.map((j) => j.id).sort(), ['job-1', 'job-3', 'job-5']);
  for (const j of allCompleted) assert.deepEqual(j.returnValue, { sent: Number(j.id.slice(4)) });

  const latest = (await board('?activeQueue=emails')).emails;
  assert.ok(latest.jobs.length >= 6, `latest lists jobs of every status: ${latest.jobs.length}`);
});

test('one job: details, then retry one failed job', async () => {
  const { status, body } = await api('GET', '/api/queues/emails/job-2');
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.status, 'failed');
  assert.equal(body.job.id, 'job-2');
  assert.deepEqual(body.job.data, { n: 2, fail: true });

  failing = false;
  const retry = await api('PUT', '/api/queues/emails/job-2/retry');
  assert.equal(retry.status, 204, JSON.stringify(retry.body));
  await waitFor(async () => (await counts()).completed === 4, 20000, 'job-2 completed after retry');
  assert.equal((await counts()).failed, 1);
  assert.equal((await api('GET', '/api/queues/emails/job-2')).body.status, 'completed');
  // A completed job is retriable too; a waiting one is not.
  const notRetriable = await api('PUT', '/api/queues/emails/delayed-1/retry');
  assert.equal(notRetriable.status, 400);
});

test('retry all failed moves them back to wait; the worker completes them', async () => {
  await worker.pause();
  const { status, body } = await api('PUT', '/api/queues/emails/retry/failed');
  assert.equal(status, 200, JSON.stringify(body));
  assert.deepEqual(body, { retried: 1, skipped: 0 });
  let c = await counts();
  assert.equal(c.failed, 0);
  assert.equal(c.waiting, 1);
  worker.resume();
  await waitFor(async () => (await counts()).completed === 5, 20000, 'all 5 completed');
  c = await counts();
  assert.equal(c.waiting, 0);
  assert.equal(c.failed, 0);
});

test('add, promote, pause and resume through the API', async () => {
  const added = await api('POST', '/api/queues/emails/add', { name: 'manual', data: { n: 7 }, options: { jobId: 'manual-1' } });
  assert.equal(added.status, 200, JSON.stringify(added.body));
  assert.equal(added.body.job.id, 'manual-1');
  await waitFor(async () => (await queue.getJobState('manual-1')) === 'completed', 20000, 'manual-1 completed');

  const promoted = await api('PUT', '/api/queues/emails/delayed-1/promote');
  assert.ok(promoted.status < 300, JSON.stringify(promoted.body));
  await waitFor(async () => (await queue.getJobState('delayed-1')) === 'completed', 20000, 'promoted job completed');
  assert.equal((await counts()).delayed, 0);

  assert.equal((await api('PUT', '/api/queues/emails/pause')).status, 200);
  assert.equal((await board()).emails.isPaused, true);
  assert.equal(await queue.isPaused(), true);
  await queue.add('while-paused', { n: 8 }, { jobId: 'paused-1' });
  await sleep(300);
  assert.equal(await queue.getJobState('paused-1'), 'waiting');
  assert.equal((await counts()).waiting, 1); // BullMQ 5+ keeps jobs of a paused queue in wait
  assert.equal((await api('PUT', '/api/queues/emails/resume')).status, 200);
  await waitFor(async () => (await queue.getJobState('paused-1')) === 'completed', 20000, 'paused-1 completed after resume');

  // A read-only queue refuses changes.
  const refused = await api('PUT', '/api/queues/reports/pause');
  assert.equal(refused.status, 405, JSON.stringify(refused));
});

test('clean removes one job at once, and all completed jobs past the 5 s grace', async () => {
  const one = await api('PUT', '/api/queues/emails/job-1/clean');
  assert.equal(one.status, 204, JSON.stringify(one.body));
  assert.equal(await queue.getJob('job-1'), undefined);
  assert.equal(await queue.getJobState('job-1'), 'unknown');

  const before = (await counts()).completed;
  assert.equal(before, 7); // job-2..5, manual-1, delayed-1, paused-1
  // Bull Board cleans with a 5000 ms grace period: a job finished just now stays.
  await queue.add('fresh', { n: 0 }, { jobId: 'fresh-1' });
  await waitFor(async () => (await queue.getJobState('fresh-1')) === 'completed', 20000, 'fresh-1 completed');
  // Wait until every older job is past the grace period.
  const fresh = await queue.getJob('fresh-1');
  const oldest = Math.max(...(await queue.getJobs(['completed'])).filter((j) => j.id !== 'fresh-1').map((j) => j.finishedOn));
  await sleep(Math.max(0, oldest + 5200 - Date.now()));
  const cleaned = await api('PUT', '/api/queues/emails/clean/completed');
  assert.equal(cleaned.status, 200, JSON.stringify(cleaned.body));
  const left = await queue.getJobs(['completed']);
  if (Date.now() - fresh.finishedOn < 5000) {
    assert.deepEqual(left.map((j) => j.id), ['fresh-1']);
  }
  assert.ok(left.every((j) => j.id === 'fresh-1'), `left: ${left.map((j) => j.id)}`);
  assert.equal(await queue.getJob('job-3'), undefined);
  assert.equal((await board()).emails.counts.completed, left.length);
});

test('the Redis stats panel parses INFO', async () => {
  const { status, body } = await api('GET', '/api/redis/stats');
  assert.equal(status, 200, JSON.stringify(body));
  assert.match(body.version, /^\d+\.\d+\.\d+$/);
  assert.equal(body.mode, 'standalone');
  assert.equal(body.port, server.resp);
  assert.ok(body.memory.used > 0, JSON.stringify(body.memory));
  assert.ok(body.memory.peak >= body.memory.used || body.memory.peak > 0, JSON.stringify(body.memory));
  assert.ok(body.clients.connected >= 3, JSON.stringify(body.clients));
  assert.ok(body.uptime >= 0);
});

test('empty removes waiting jobs', async () => {
  await worker.pause();
  await queue.add('x', {}, { jobId: 'e-1' });
  await queue.add('y', {}, { jobId: 'e-2' });
  assert.equal((await counts()).waiting, 2);
  assert.equal((await api('PUT', '/api/queues/emails/empty')).status, 200);
  assert.equal((await counts()).waiting, 0);
  assert.equal(await queue.getJob('e-1'), undefined);
});
