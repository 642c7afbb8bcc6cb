// Adds BullMQ jobs as bullmq-bench's two add scenarios do, for bench/instructions.sh:
//   node bench/queues/add-jobs.js <node_modules dir> <port> <queue-add|queue-add-bulk> <jobs>
// queue-add: Queue.add of one job at a time, awaited, its data a 10-wide, 10-deep
// object of uuid keys; queue-add-bulk: Queue.addBulk of 50 jobs per call, 1-wide,
// 1-deep data. The queue is left in place (counting covers the adds only).
"use strict";
const path = require("path");

/// `width` uuid keys, each the top of a chain of `depth` nested objects.
function sampleData(uuid, width, depth) {
  const top = {};
  for (let i = 0; i < width; i++) {
    let obj = {};
    top[uuid()] = obj;
    for (let j = 1; j < depth; j++) {
      const inner = {};
      obj[uuid()] = inner;
      obj = inner;
    }
  }
  return top;
}

async function main() {
  const [modules, port, scenario, count] = process.argv.slice(2);
  const { Queue } = require(path.join(modules, "bullmq"));
  const { v4 } = require(path.join(modules, "uuid"));
  const jobs = Number(count);
  const queue = new Queue(`bench-${process.pid}`, {
    connection: { host: "127.0.0.1", port: Number(port) },
  });
  await queue.waitUntilReady();
  if (scenario === "queue-add") {
    const data = sampleData(v4, 10, 10);
    for (let i = 0; i < jobs; i++) await queue.add("job", data);
  } else if (scenario === "queue-add-bulk") {
    const data = sampleData(v4, 1, 1);
    for (let i = 0; i < jobs; i += 50) {
      const n = Math.min(50, jobs - i);
      await queue.addBulk(Array.from({ length: n }, () => ({ name: "job", data })));
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  await queue.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
