// The official @upstash/qstash client, unmodified, against Tidewire's QStash-compatible
// message API (/v2 on the HTTP port): Client publishes, Tidewire delivers to local
// endpoints, and the SDK's Receiver verifies what arrives. One tidewire for the file.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  TOKEN,
  startServer,
  signingKeysFile,
  qstashClient,
  receiverFor,
  startEndpoint,
  waitFor,
  sleep,
  uniq,
} from "./helpers.mjs";

let server;
let client;
let keys;
let receiver;

before(async () => {
  server = await startServer({ token: TOKEN });
  client = qstashClient(server.http, TOKEN);
  keys = signingKeysFile(server);
  receiver = receiverFor(keys);
});

after(async () => {
  await server?.close();
});

/// A new endpoint, closed when the test ends.
async function endpoint(t, respond) {
  const ep = await startEndpoint(respond);
  t.after(() => ep.close());
  return ep;
}

/// Asserts that `request` (as an endpoint recorded it) carries a signature the
/// SDK's Receiver accepts for `url`.
async function assertSigned(request, url) {
  const signature = request.headers["upstash-signature"];
  assert.ok(signature, "delivery carries Upstash-Signature");
  assert.equal(await receiver.verify({ signature, body: request.body, url }), true);
}

async function assertNotFound(promise) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.status, 404, `expected a 404 QstashError, got ${e}`);
    return true;
  });
}

test("GET /v2/keys returns the signing keys kept in the data dir", async () => {
  assert.match(keys.current, /^sig_/);
  assert.match(keys.next, /^sig_/);
  assert.notEqual(keys.current, keys.next);
  const res = await fetch(`http://127.0.0.1:${server.http}/v2/keys`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { current: keys.current, next: keys.next });
});

test("publishJSON is delivered with its headers and a signature Receiver.verify accepts", async (t) => {
  const ep = await endpoint(t);
  const path = `/${uniq("hook")}`;
  const url = ep.url(path);
  const body = { hello: "world", n: 1, nested: { ok: true } };
  const res = await client.publishJSON({ url, body, headers: { "x-tenant": "t1" } });
  assert.match(res.messageId, /\S/);
  assert.equal(res.url, url);

  const [got] = await ep.got(path);
  assert.equal(got.method, "POST");
  assert.deepEqual(JSON.parse(got.body), body);
  assert.equal(got.headers["x-tenant"], "t1");
  assert.match(got.headers["content-type"], /^application\/json/);
  assert.equal(got.headers["upstash-message-id"], res.messageId);
  assert.equal(got.headers["upstash-retried"], "0");
  assert.equal(got.headers.authorization, undefined, "the publisher's token is not forwarded");

  await assertSigned(got, url);
  // The signature is bound to the destination and to the body.
  const signature = got.headers["upstash-signature"];
  await assert.rejects(receiver.verify({ signature, body: got.body, url: `${url}/other` }));
  await assert.rejects(receiver.verify({ signature, body: `${got.body} `, url }));
  await assert.rejects(receiver.verify({ signature, body: got.body.replace("world", "w0rld"), url }));
  // Receiver tries the current key, then the next one (key rotation) …
  const rotated = receiverFor({ current: "sig_notTheRightKeyAtAll", next: keys.current });
  assert.equal(await rotated.verify({ signature, body: got.body, url }), true);
  // … and a signature made with neither is refused.
  const stranger = receiverFor({ current: "sig_wrongKeyNumberOne", next: "sig_wrongKeyNumberTwo" });
  await assert.rejects(stranger.verify({ signature, body: got.body, url }));

  // A destination with a query string keeps it.
  const qpath = `/${uniq("query")}?tenant=t1&x=a%20b`;
  const qres = await client.publishJSON({ url: ep.url(qpath), body: { q: 1 } });
  const [qgot] = await ep.got(qpath);
  assert.equal(qgot.headers["upstash-message-id"], qres.messageId);
  await assertSigned(qgot, ep.url(qpath));

  // Client.publish with a plain text body and another method.
  const ppath = `/${uniq("put")}`;
  await client.publish({ url: ep.url(ppath), body: "plain text", method: "PUT", headers: { "content-type": "text/plain" } });
  const [pgot] = await ep.got(ppath);
  assert.equal(pgot.method, "PUT");
  assert.equal(pgot.body, "plain text");
  assert.match(pgot.headers["content-type"], /^text\/plain/);
  await assertSigned(pgot, ep.url(ppath));
});

test("delay and notBefore hold a message back; messages.get shows it meanwhile", async (t) => {
  const ep = await endpoint(t);
  const delayed = `/${uniq("delay")}`;
  const scheduled = `/${uniq("not-before")}`;
  const notBefore = Math.ceil(Date.now() / 1000) + 2;
  const t0 = Date.now();
  const [a, b] = await Promise.all([
    client.publishJSON({ url: ep.url(delayed), body: { k: "delay" }, delay: 2 }),
    client.publishJSON({ url: ep.url(scheduled), body: { k: "notBefore" }, notBefore }),
  ]);
  const t1 = Date.now();

  const m = await client.messages.get(a.messageId);
  assert.equal(ep.requests.length, 0, "nothing is delivered before its time");
  assert.equal(m.messageId, a.messageId);
  assert.equal(m.url, ep.url(delayed));
  assert.equal(m.method, "POST");
  assert.equal(m.body, JSON.stringify({ k: "delay" }));
  assert.ok(m.notBefore >= t0 + 2000 && m.notBefore <= t1 + 2000, `notBefore ${m.notBefore} is 2 s after ${t0}`);
  assert.ok(m.createdAt >= t0 - 1000 && m.createdAt <= t1 + 1000, `createdAt ${m.createdAt}`);
  const n = await client.messages.get(b.messageId);
  assert.equal(n.url, ep.url(scheduled));
  assert.equal(n.notBefore, notBefore * 1000);

  const [got] = await ep.got(delayed, 1, 10000);
  assert.ok(got.at - t0 >= 1900, `delivered ${got.at - t0} ms after publishing, want >= 2000`);
  assert.deepEqual(JSON.parse(got.body), { k: "delay" });
  await assertSigned(got, ep.url(delayed));
  const [nb] = await ep.got(scheduled, 1, 10000);
  assert.ok(nb.at >= notBefore * 1000 - 100, `delivered ${notBefore * 1000 - nb.at} ms before notBefore`);

  // Delivered messages are gone.
  await waitFor(
    async () => client.messages.get(a.messageId).then(() => false, (e) => e.status === 404),
    5000,
    "the delivered message to be removed",
  );
});

test("retries: 500, 500, then 200 is three attempts with Upstash-Retried 0, 1, 2", async (t) => {
  const ep = await endpoint(t, (_req, i) => (i < 2 ? { status: 500, body: "not yet" } : { status: 200 }));
  const path = `/${uniq("flaky")}`;
  const url = ep.url(path);
  const res = await client.publishJSON({ url, body: { attempt: "me" }, retries: 3, retryDelay: "100" });

  const attempts = await ep.got(path, 3, 15000);
  assert.deepEqual(
    attempts.map((r) => r.headers["upstash-retried"]),
    ["0", "1", "2"],
  );
  for (const a of attempts) {
    assert.equal(a.headers["upstash-message-id"], res.messageId);
    assert.deepEqual(JSON.parse(a.body), { attempt: "me" });
    await assertSigned(a, url);
  }
  for (let i = 1; i < attempts.length; i++) {
    const gap = attempts[i].at - attempts[i - 1].at;
    assert.ok(gap >= 90, `retry ${i} came ${gap} ms after the previous attempt, want >= 100`);
  }
  // Delivered: no more attempts, and the message is gone.
  await sleep(500);
  assert.equal(ep.at(path).length, 3);
  await assertNotFound(client.messages.get(res.messageId));
});

test("DLQ: a message that keeps failing is listed, reported to failureCallback, and can be retried or deleted", async (t) => {
  let healthy = false;
  const ep = await endpoint(t, () => (healthy ? { status: 200 } : { status: 500, body: "boom" }));
  const hooks = await endpoint(t);
  const paths = [uniq("/dead-a"), uniq("/dead-b"), uniq("/dead-c")];
  const failedPath = `/${uniq("failed")}`;
  const published = [];
  for (const [i, path] of paths.entries()) {
    published.push(
      await client.publishJSON({
        url: ep.url(path),
        body: { dead: i },
        retries: 1,
        retryDelay: "50",
        ...(i === 0 ? { failureCallback: hooks.url(failedPath) } : {}),
      }),
    );
  }
  const ids = published.map((p) => p.messageId);

  // Each is tried twice (the first attempt and one retry), then moved to the DLQ.
  const ours = await waitFor(
    async () => {
      const { messages } = await client.dlq.listMessages();
      const mine = ids.map((id) => messages.find((m) => m.messageId === id));
      return mine.every(Boolean) && mine;
    },
    15000,
    "three messages in the DLQ",
  );
  for (const [i, path] of paths.entries()) {
    const attempts = ep.at(path);
    assert.deepEqual(attempts.map((r) => r.headers["upstash-retried"]), ["0", "1"], path);
    const d = ours[i];
    assert.equal(d.url, ep.url(path));
    assert.equal(d.responseStatus, 500);
    assert.equal(d.responseBody, "boom");
    assert.equal(d.body, JSON.stringify({ dead: i }));
    assert.match(d.dlqId, /\S/);
    // Not scheduled any more.
    await assertNotFound(client.messages.get(ids[i]));
  }
  const [dlqA, dlqB, dlqC] = ours.map((d) => d.dlqId);

  // By id, and filtered by url.
  const byId = await client.dlq.listMessages({ dlqIds: [dlqB] });
  assert.deepEqual(byId.messages.map((m) => m.messageId), [ids[1]]);
  const byUrl = await client.dlq.listMessages({ filter: { url: ep.url(paths[2]) } });
  assert.deepEqual(byUrl.messages.map((m) => m.messageId), [ids[2]]);

  // The failure callback: a signed JSON report of the last response.
  const [report] = await hooks.got(failedPath, 1, 10000);
  assert.equal(report.method, "POST");
  await assertSigned(report, hooks.url(failedPath));
  const failure = JSON.parse(report.body);
  assert.equal(failure.status, 500);
  assert.equal(failure.sourceMessageId, ids[0]);
  assert.equal(failure.dlqId, dlqA);
  assert.equal(failure.url, ep.url(paths[0]));
  assert.equal(Buffer.from(failure.body, "base64").toString(), "boom");
  assert.equal(Buffer.from(failure.sourceBody, "base64").toString(), JSON.stringify({ dead: 0 }));

  // Retry: published again (a new message, retries reset) and now delivered.
  healthy = true;
  const retried = await client.dlq.retry(dlqA);
  assert.equal(retried.responses.length, 1);
  const newId = retried.responses[0].messageId;
  assert.match(newId, /\S/);
  assert.notEqual(newId, ids[0]);
  const again = await ep.got(paths[0], 3, 10000);
  assert.equal(again[2].headers["upstash-message-id"], newId);
  assert.equal(again[2].headers["upstash-retried"], "0");
  assert.equal(again[2].body, JSON.stringify({ dead: 0 }));
  await assertSigned(again[2], ep.url(paths[0]));

  // Delete: one by id, and a list of ids.
  assert.deepEqual(await client.dlq.delete(dlqB), { deleted: 1 });
  const bulk = await client.dlq.delete([dlqC]);
  assert.equal(bulk.deleted, 1);
  const { messages } = await client.dlq.listMessages();
  const left = new Set(messages.map((m) => m.dlqId));
  for (const id of [dlqA, dlqB, dlqC]) assert.ok(!left.has(id), `${id} left the DLQ`);
  // B and C were not delivered again.
  assert.equal(ep.at(paths[1]).length, 2);
  assert.equal(ep.at(paths[2]).length, 2);
});

test("callback: the destination's response is reported to the callback URL", async (t) => {
  const ep = await endpoint(t, () => ({ status: 200, body: "pong", headers: { "x-reply": "yes" } }));
  const hooks = await endpoint(t);
  const path = `/${uniq("work")}`;
  const cbPath = `/${uniq("callback")}`;
  const res = await client.publishJSON({ url: ep.url(path), body: { ping: 1 }, callback: hooks.url(cbPath) });

  await ep.got(path);
  const [cb] = await hooks.got(cbPath, 1, 10000);
  assert.equal(cb.method, "POST");
  await assertSigned(cb, hooks.url(cbPath));
  const report = JSON.parse(cb.body);
  assert.equal(report.status, 200);
  assert.equal(report.sourceMessageId, res.messageId);
  assert.equal(Buffer.from(report.body, "base64").toString(), "pong");
  assert.equal(report.url, ep.url(path));
  const header = Object.fromEntries(Object.entries(report.header ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  assert.deepEqual(header["x-reply"], ["yes"]);
  // One callback, and no callback of the callback.
  await sleep(300);
  assert.equal(hooks.requests.length, 1);
});

test("cancel: messages.cancel / delete / cancel([ids]) stop delivery and messages.get then 404s", async (t) => {
  const ep = await endpoint(t);
  const pub = (path) => client.publishJSON({ url: ep.url(path), body: { path }, delay: 2 });
  const [one, two, three, kept] = await Promise.all([
    pub("/cancel-one"),
    pub("/delete-two"),
    pub("/cancel-three"),
    pub("/kept"),
  ]);
  assert.equal((await client.messages.get(one.messageId)).messageId, one.messageId);

  assert.equal((await client.messages.cancel(one.messageId)).cancelled, 1);
  assert.equal(await client.messages.delete(two.messageId), undefined);
  const bulk = await client.messages.cancel([three.messageId]);
  assert.equal(bulk.cancelled, 1);
  for (const m of [one, two, three]) await assertNotFound(client.messages.get(m.messageId));
  assert.equal((await client.messages.get(kept.messageId)).messageId, kept.messageId);

  // The one left is delivered when its delay ends; the cancelled ones never are.
  await ep.got("/kept", 1, 10000);
  await sleep(500);
  assert.deepEqual(ep.requests.map((r) => r.path), ["/kept"]);
});

test("deduplication: by id and by content, one message and one delivery", async (t) => {
  const ep = await endpoint(t);
  const byId = `/${uniq("dedup-id")}`;
  const deduplicationId = uniq("order-42");
  const a = await client.publishJSON({ url: ep.url(byId), body: { n: 1 }, deduplicationId });
  const b = await client.publishJSON({ url: ep.url(byId), body: { n: 2 }, deduplicationId });
  assert.equal(b.messageId, a.messageId);
  assert.equal(b.deduplicated, true);
  assert.ok(!a.deduplicated);

  const byContent = `/${uniq("dedup-content")}`;
  const c = await client.publishJSON({ url: ep.url(byContent), body: { n: 3 }, contentBasedDeduplication: true });
  const d = await client.publishJSON({ url: ep.url(byContent), body: { n: 3 }, contentBasedDeduplication: true });
  const e = await client.publishJSON({ url: ep.url(byContent), body: { n: 4 }, contentBasedDeduplication: true });
  assert.equal(d.messageId, c.messageId);
  assert.equal(d.deduplicated, true);
  assert.notEqual(e.messageId, c.messageId, "another body is another message");
  assert.ok(!e.deduplicated);

  await ep.got(byId, 1);
  await ep.got(byContent, 2);
  await sleep(750);
  assert.deepEqual(ep.at(byId).map((r) => JSON.parse(r.body)), [{ n: 1 }]);
  assert.deepEqual(
    ep.at(byContent).map((r) => JSON.parse(r.body).n).sort(),
    [3, 4],
  );
});

test("batchJSON delivers each message to its own destination", async (t) => {
  const one = await endpoint(t);
  const two = await endpoint(t);
  const res = await client.batchJSON([
    { url: one.url("/batch-1"), body: { n: 1 } },
    { url: two.url("/batch-2"), body: { n: 2 }, headers: { "x-batch": "second" } },
  ]);
  assert.equal(res.length, 2);
  assert.equal(res[0].url, one.url("/batch-1"));
  assert.equal(res[1].url, two.url("/batch-2"));
  assert.notEqual(res[0].messageId, res[1].messageId);

  const [g1] = await one.got("/batch-1");
  const [g2] = await two.got("/batch-2");
  assert.deepEqual(JSON.parse(g1.body), { n: 1 });
  assert.deepEqual(JSON.parse(g2.body), { n: 2 });
  assert.equal(g1.headers["upstash-message-id"], res[0].messageId);
  assert.equal(g2.headers["upstash-message-id"], res[1].messageId);
  assert.equal(g2.headers["x-batch"], "second");
  assert.match(g2.headers["content-type"], /^application\/json/);
  await assertSigned(g1, one.url("/batch-1"));
  await assertSigned(g2, two.url("/batch-2"));

  // batch (not JSON) with a plain body and a delay on one entry.
  const t0 = Date.now();
  const plain = await client.batch([
    { url: one.url("/batch-now"), body: "now" },
    { url: one.url("/batch-later"), body: "later", delay: 1 },
  ]);
  assert.equal(plain.length, 2);
  const [now] = await one.got("/batch-now");
  assert.equal(now.body, "now");
  const [later] = await one.got("/batch-later", 1, 10000);
  assert.equal(later.body, "later");
  assert.ok(later.at - t0 >= 900, `the delayed entry came ${later.at - t0} ms after the batch`);
});

test("a wrong token is refused with 401 and nothing is published", async (t) => {
  const ep = await endpoint(t);
  const intruder = qstashClient(server.http, "not-the-token");
  await assert.rejects(intruder.publishJSON({ url: ep.url("/nope"), body: { x: 1 } }), (e) => {
    assert.equal(e.status, 401, String(e));
    return true;
  });
  await assert.rejects(intruder.messages.get("msg_whatever"), (e) => e.status === 401);
  await assert.rejects(intruder.dlq.listMessages(), (e) => e.status === 401);
  const anonymous = await fetch(`http://127.0.0.1:${server.http}/v2/keys`);
  assert.equal(anonymous.status, 401);
  await sleep(300);
  assert.equal(ep.requests.length, 0);
});

test("URL groups: urlGroups.addEndpoints / get / list / removeEndpoints / delete, and publishJSON({ urlGroup }) fans out", async (t) => {
  const [a, b] = [await endpoint(t), await endpoint(t)];
  const group = uniq("orders");
  await client.urlGroups.addEndpoints({ name: group, endpoints: [{ name: "billing", url: a.url("/billing") }] });
  await client.urlGroups.addEndpoints({ name: group, endpoints: [{ name: "shipping", url: b.url("/shipping") }] });
  const g = await client.urlGroups.get(group);
  assert.equal(g.name, group);
  assert.deepEqual(g.endpoints, [
    { name: "billing", url: a.url("/billing") },
    { name: "shipping", url: b.url("/shipping") },
  ]);
  assert.ok((await client.urlGroups.list()).some((x) => x.name === group));

  const res = await client.publishJSON({ urlGroup: group, body: { order: 7 } });
  assert.ok(Array.isArray(res) && res.length === 2, JSON.stringify(res));
  assert.deepEqual(res.map((r) => r.url), [a.url("/billing"), b.url("/shipping")]);
  const [toA] = await a.got("/billing");
  const [toB] = await b.got("/shipping");
  assert.equal(toA.body, JSON.stringify({ order: 7 }));
  await assertSigned(toA, a.url("/billing"));
  await assertSigned(toB, b.url("/shipping"));

  await client.urlGroups.removeEndpoints({ name: group, endpoints: [{ name: "shipping" }] });
  assert.deepEqual((await client.urlGroups.get(group)).endpoints, [{ name: "billing", url: a.url("/billing") }]);
  await client.urlGroups.delete(group);
  await assertNotFound(client.urlGroups.get(group));
  await assertNotFound(client.publishJSON({ urlGroup: group, body: {} }));
  await assert.rejects(client.publishJSON({ url: "ftp://files.example/x", body: {} }), (e) => e.status === 400);
});

test("schedules: create, get, list, pause, resume and delete through client.schedules", async (t) => {
  const ep = await endpoint(t);
  const url = ep.url(`/${uniq("cron")}`);
  const { scheduleId } = await client.schedules.create({
    destination: url,
    cron: "CRON_TZ=America/New_York 0 4 * * *",
    body: JSON.stringify({ report: "nightly" }),
    headers: { "x-job": "nightly" },
    retries: 2,
  });
  assert.match(scheduleId, /^scd_/);
  const s = await client.schedules.get(scheduleId);
  assert.equal(s.scheduleId, scheduleId);
  assert.equal(s.cron, "CRON_TZ=America/New_York 0 4 * * *");
  assert.equal(s.destination, url);
  assert.equal(s.retries, 2);
  assert.equal(s.isPaused, false);
  assert.deepEqual(s.header["X-Job"], ["nightly"]);
  assert.equal(s.body, JSON.stringify({ report: "nightly" }));
  // 04:00 in New York: 08:00 or 09:00 UTC, in the next day.
  const next = new Date(s.nextScheduleTime);
  assert.ok([8, 9].includes(next.getUTCHours()) && next.getUTCMinutes() === 0, next.toISOString());
  assert.ok(s.nextScheduleTime > Date.now() && s.nextScheduleTime <= Date.now() + 86_400_000);

  // Upstash-Schedule-Id names (and replaces) a schedule.
  const named = uniq("daily");
  assert.equal((await client.schedules.create({ destination: url, cron: "*/5 * * * *", scheduleId: named })).scheduleId, named);
  await client.schedules.create({ destination: url, cron: "0 * * * *", scheduleId: named });
  assert.equal((await client.schedules.get(named)).cron, "0 * * * *");
  const listed = (await client.schedules.list()).map((x) => x.scheduleId);
  assert.ok(listed.includes(scheduleId) && listed.includes(named), listed.join(","));

  await client.schedules.pause({ schedule: scheduleId });
  assert.equal((await client.schedules.get(scheduleId)).isPaused, true);
  await client.schedules.resume({ schedule: scheduleId });
  assert.equal((await client.schedules.get(scheduleId)).isPaused, false);

  await client.schedules.delete(scheduleId);
  await client.schedules.delete(named);
  await assertNotFound(client.schedules.get(scheduleId));
  await assert.rejects(
    client.schedules.create({ destination: url, cron: "every day at four" }),
    (e) => e.status === 400,
  );
  assert.equal(ep.requests.length, 0, "no tick came during the test");
});

test("a Next.js route wrapped in verifySignatureAppRouter (docs/qstash.md) accepts Tidewire's deliveries and refuses forged ones", async (t) => {
  const { verifySignatureAppRouter } = await import("@upstash/qstash/nextjs");
  const handled = [];
  // The route as docs/qstash.md writes it: a web Request in, a Response out.
  const POST = verifySignatureAppRouter(
    async (req) => {
      handled.push(await req.json());
      return new Response("ok");
    },
    { currentSigningKey: keys.current, nextSigningKey: keys.next, devMode: false },
  );
  // Served by node:http, turning each request into a web Request as Next.js does.
  const statuses = [];
  const ep = await endpoint(t, async (entry) => {
    const res = await POST(
      new Request(`http://127.0.0.1${entry.path}`, { method: "POST", headers: entry.headers, body: entry.body }),
    );
    statuses.push(res.status);
    return { status: res.status, body: await res.text() };
  });
  const url = ep.url("/api/webhooks/stripe");
  await client.publishJSON({ url, body: { eventId: "evt_123" } });
  await waitFor(() => handled.length === 1, 10000, "the route handled the delivery");
  assert.deepEqual(handled, [{ eventId: "evt_123" }]);
  assert.deepEqual(statuses, [200]);

  // A request that did not come from Tidewire never reaches the handler.
  const forged = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", "upstash-signature": "eyJhbGciOiJIUzI1NiJ9.e30.x" },
    body: JSON.stringify({ eventId: "evt_forged" }),
  });
  assert.notEqual(forged.status, 200);
  const unsigned = await fetch(url, { method: "POST", body: "{}" });
  assert.equal(unsigned.status, 403);
  assert.equal(handled.length, 1);
});

test("queues: client.queue({ queueName }).upsert / enqueueJSON / get / list / pause / resume / delete, delivered in order", async (t) => {
  const ep = await endpoint(t, async () => {
    await sleep(50);
    return {};
  });
  const queueName = uniq("emails");
  const queue = client.queue({ queueName });
  await queue.upsert({ parallelism: 1 });
  let info = await queue.get();
  assert.equal(info.name, queueName);
  assert.equal(info.parallelism, 1);
  assert.equal(info.paused, false);
  assert.ok((await queue.list()).some((q) => q.name === queueName));

  const path = `/${uniq("q")}`;
  for (let i = 0; i < 5; i++) {
    const { messageId } = await queue.enqueueJSON({ url: ep.url(path), body: { n: i } });
    assert.match(messageId, /^msg_/);
  }
  const got = await ep.got(path, 5);
  assert.deepEqual(got.map((r) => JSON.parse(r.body).n), [0, 1, 2, 3, 4]);
  await assertSigned(got[0], ep.url(path));

  // Paused: messages wait (lag counts them); resumed: they are delivered.
  await queue.pause();
  const later = `/${uniq("paused")}`;
  await queue.enqueueJSON({ url: ep.url(later), body: { n: 5 } });
  await queue.enqueueJSON({ url: ep.url(later), body: { n: 6 } });
  await sleep(300);
  assert.equal(ep.at(later).length, 0);
  info = await queue.get();
  assert.equal(info.paused, true);
  assert.equal(info.lag, 2);
  await queue.resume();
  assert.deepEqual((await ep.got(later, 2)).map((r) => JSON.parse(r.body).n), [5, 6]);

  await queue.delete();
  await assertNotFound(queue.get());
});

test("logs / events: a message's states newest first, by messageIds and by filter", async (t) => {
  const ok = await endpoint(t);
  const down = await endpoint(t, () => ({ status: 503, body: "busy" }));
  const okPath = `/${uniq("logged")}`;
  const downPath = `/${uniq("failing")}`;
  const { messageId: delivered } = await client.publishJSON({ url: ok.url(okPath), body: { a: 1 } });
  const { messageId: failed } = await client.publishJSON({
    url: down.url(downPath),
    body: { b: 2 },
    retries: 1,
    retryDelay: "50",
  });
  const states = async (request) => (await client.logs(request)).logs.map((l) => l.state);
  await waitFor(async () => (await states({ messageIds: [failed] }))[0] === "FAILED", 10000, "FAILED");
  assert.deepEqual(await states({ messageIds: [failed] }), ["FAILED", "ACTIVE", "ERROR", "ACTIVE", "CREATED"]);
  await waitFor(async () => (await states({ filter: { messageId: delivered } }))[0] === "DELIVERED", 10000, "DELIVERED");
  assert.deepEqual(await states({ filter: { messageId: delivered } }), ["DELIVERED", "ACTIVE", "CREATED"]);
  const errors = (await client.logs({ filter: { state: "ERROR", url: down.url(downPath) } })).logs;
  assert.equal(errors.length, 1);
  assert.equal(errors[0].messageId, failed);
  assert.match(errors[0].error, /^503 busy/);
  assert.ok(errors[0].nextDeliveryTime > errors[0].time);
  // `events()` is the older name of the same call; pages carry a cursor.
  const page = await client.events({ count: 2 });
  assert.equal(page.events.length, 2);
  assert.ok(page.cursor);
  const next = await client.events({ count: 2, cursor: page.cursor });
  assert.ok(next.events[0].time <= page.events[1].time);
});

test("flow control: publishJSON({ flowControl }) bounds parallelism; client.flowControl get / pause / resume / pin / unpin", async (t) => {
  let running = 0;
  let most = 0;
  const ep = await endpoint(t, async () => {
    running += 1;
    most = Math.max(most, running);
    await sleep(100);
    running -= 1;
    return {};
  });
  const key = uniq("tenant");
  const path = `/${uniq("flow")}`;
  for (let i = 0; i < 5; i++) {
    await client.publishJSON({ url: ep.url(path), body: { i }, flowControl: { key, parallelism: 2 } });
  }
  await ep.got(path, 5);
  assert.equal(most, 2, "never more than the key's parallelism at once");
  let info = await client.flowControl.get(key);
  assert.equal(info.flowControlKey, key);
  assert.equal(info.parallelismMax, 2);
  assert.equal(info.isPaused, false);

  await client.flowControl.pin(key, { parallelism: 1 });
  await client.flowControl.pause(key);
  const held = `/${uniq("held")}`;
  await client.publishJSON({ url: ep.url(held), body: {}, flowControl: { key, parallelism: 4 } });
  await sleep(300);
  assert.equal(ep.at(held).length, 0);
  info = await client.flowControl.get(key);
  assert.equal(info.isPaused, true);
  assert.equal(info.isPinnedParallelism, true);
  assert.equal(info.parallelismMax, 1);
  assert.equal(info.waitListSize, 1);
  await client.flowControl.resume(key);
  await ep.got(held, 1);
  await client.flowControl.unpin(key, { parallelism: true });
  assert.equal((await client.flowControl.get(key)).isPinnedParallelism, false);
  const global = await client.flowControl.getGlobalParallelism();
  assert.ok(global.parallelismMax >= 1);
});
