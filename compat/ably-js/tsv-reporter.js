'use strict';
// Minimal mocha reporter for ably-js's own suite (no dependency on mocha itself, so it
// can live outside the checkout and replace the checkout's pretty/JUnit reporter): one
// line per test event to stdout, and a TSV line
//   status <TAB> file <TAB> full title <TAB> first line of the error
// appended to $ABLY_SUITE_RESULTS. Hook failures (e.g. a `before all` hook whose test-app
// provisioning failed, which makes mocha skip the rest of that describe) are recorded as
// failed tests titled `... "before all" hook ...`; hooks of the root suite
// (test/support/root_hooks.js: app teardown, client cleanup) without a file get
// `(root hooks)`.
const fs = require('fs');
const path = require('path');

function TsvReporter(runner) {
  const out = process.env.ABLY_SUITE_RESULTS;
  const fd = out ? fs.openSync(out, 'a') : null;
  const clean = (s) => String(s).replace(/[\t\r\n]+/g, ' ').trim();
  const fileOf = (test) => {
    for (let r = test; r; r = r.parent) {
      if (r.file) return path.relative(process.cwd(), r.file);
    }
    return '(root hooks)';
  };
  const firstLine = (err) => {
    if (!err) return '';
    let msg = err.message !== undefined ? err.message : err;
    if (typeof msg !== 'string') {
      try {
        msg = JSON.stringify(msg);
      } catch (e) {
        msg = String(msg);
      }
    }
    const line = msg.split('\n').find((l) => l.trim() !== '') || '';
    const name = err.name && err.name !== 'Error' && !line.startsWith(err.name) ? err.name + ': ' : '';
    return clean(name + line).slice(0, 300);
  };
  const counts = { passed: 0, failed: 0, pending: 0 };
  const record = (status, test, err) => {
    counts[status] += 1;
    const file = fileOf(test);
    const title = clean(test.fullTitle());
    const msg = firstLine(err);
    const ms = typeof test.duration === 'number' ? ` (${test.duration} ms)` : '';
    process.stdout.write(`${status.toUpperCase()} ${file} :: ${title}${ms}${msg ? ' :: ' + msg : ''}\n`);
    if (fd !== null) {
      fs.writeSync(fd, [status, file, title, msg].join('\t') + '\n');
    }
  };
  runner.on('suite', (s) => {
    if (s.file && s.parent && s.parent.root) process.stdout.write(`SUITE ${path.relative(process.cwd(), s.file)} :: ${s.title}\n`);
  });
  runner.on('pass', (t) => record('passed', t));
  runner.on('fail', (t, err) => record('failed', t, err));
  runner.on('pending', (t) => record('pending', t));
  runner.on('end', () =>
    process.stdout.write(`END passed=${counts.passed} failed=${counts.failed} pending=${counts.pending}\n`),
  );
}

module.exports = TsvReporter;
