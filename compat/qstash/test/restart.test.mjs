// Messages are kept in the keyspace: a message published with a delay is still
// delivered after the server is stopped and started again on the same data dir,
// signed with the same keys. This server runs without a configured token: the
// QStash token is the REST token it generated into its data dir.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  generatedToken,
  signingKeysFile,
  qstashClient,
  receiverFor,
  startEndpoint,
  sleep,
} from "./helpers.mjs";

let server;
let ep;

before(async () => {
  server = await startServer({ name: "qstash-restart" });
  ep = await startEndpoint();
});

after(async () => {
  await ep?.close();
  await server?.close();
});

test("a delayed message survives a restart and is delivered afterwards", async () => {
  const token = generatedToken(server);
  assert.ok(token.length >= 16, "a REST token was generated into the data dir");
  const client = qstashClient(server.http, token);
  const keys = signingKeysFile(server);

  const t0 = Date.now();
  // Due while the server is down, and due after it is back.
  const early = await client.publishJSON({ url: ep.url("/due-while-down"), body: { when: "down" }, delay: 2 });
  const late = await client.publishJSON({ url: ep.url("/due-after-restart"), body: { when: "up" }, delay: 4 });
  assert.equal((await client.messages.get(early.messageId)).url, ep.url("/due-while-down"));
  assert.equal((await client.messages.get(late.messageId)).url, ep.url("/due-after-restart"));

  await server.stop();
  // Stay down until the first message is due.
  await sleep(Math.max(0, t0 + 2500 - Date.now()));
  assert.equal(ep.requests.length, 0, "nothing was delivered before the restart");
  await server.restart();
  const restartedAt = Date.now();

  // The generated token and signing keys are kept in the data dir across restarts.
  assert.equal(generatedToken(server), token);
  assert.deepEqual(signingKeysFile(server), keys);

  const [down] = await ep.got("/due-while-down", 1, 10000);
  const [up] = await ep.got("/due-after-restart", 1, 10000);
  assert.ok(down.at >= restartedAt - 1000, "delivered by the restarted server");
  assert.equal(down.headers["upstash-message-id"], early.messageId);
  assert.equal(up.headers["upstash-message-id"], late.messageId);
  assert.ok(up.at - t0 >= 3900, `the 4 s message came ${up.at - t0} ms after publishing`);
  assert.deepEqual(JSON.parse(down.body), { when: "down" });
  assert.deepEqual(JSON.parse(up.body), { when: "up" });
  const receiver = receiverFor(keys);
  for (const [got, path] of [[down, "/due-while-down"], [up, "/due-after-restart"]]) {
    assert.equal(
      await receiver.verify({ signature: got.headers["upstash-signature"], body: got.body, url: ep.url(path) }),
      true,
    );
  }
  // Each once.
  await sleep(500);
  assert.deepEqual(ep.requests.map((r) => r.path).sort(), ["/due-after-restart", "/due-while-down"]);
});
