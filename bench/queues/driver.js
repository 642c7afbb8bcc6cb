// Runs one scenario of taskforcesh/bullmq-bench, as its own BullMQSuite configures it,
// and prints one line: RESULT {json}. Used by bench/queues.sh.
//   node bench/queues/driver.js <bullmq-bench checkout, built (dist/)> <scenario>
// The server comes from bullmq-bench's own BULLMQ_BENCH_REDIS_HOST / _PORT.
// jobs_per_s = benchmarkJobsNum / the timed part. bullmq-bench's own `rate` divides
// warmup + benchmark jobs by that same time (result.rate, kept as rate_upstream).
// SCALE (default 1) multiplies benchmarkJobsNum, for longer timed parts.
"use strict";
const path = require("path");

async function main() {
  const [dir, name] = process.argv.slice(2);
  const { BullMQSuite } = require(path.resolve(dir, "dist/bullmq-suite.js"));
  const suite = new BullMQSuite();
  const bench = suite.benchmarks.find((b) => b.config.name === name);
  if (!bench) throw new Error(`no scenario ${name}: ${suite.benchmarks.map((b) => b.config.name)}`);
  const scale = Number(process.env.SCALE || 1);
  bench.config.benchmarkJobsNum = Math.round(bench.config.benchmarkJobsNum * scale);
  bench.config.timeout = Math.round(bench.config.timeout * Math.max(scale, 1));
  const { warmupJobsNum, benchmarkJobsNum } = bench.config;
  const report = await bench.execute();
  const { time, rate, redisVersion } = report.result;
  const out = {
    scenario: name,
    warmup: warmupJobsNum,
    jobs: benchmarkJobsNum,
    time_ms: time,
    jobs_per_s: time > 0 ? Math.round((1000 * benchmarkJobsNum) / time) : 0,
    rate_upstream: rate,
    redis_version: redisVersion,
    total_ms: report.execution.totalDuration,
    error: report.error && report.error.message,
  };
  console.log("RESULT " + JSON.stringify(out));
  // a timed-out worker benchmark never tears down: do not wait for its connections
  process.exit(out.error || !(time > 0) ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
