'use strict';
// Minimal mocha reporter (no dependency on mocha itself, so it can live outside the
// checkout): one line per test event to stdout, and a TSV line
//   status <TAB> file <TAB> full title <TAB> first line of the error
// appended to $BULL_SUITE_RESULTS. Hook failures are recorded as failed "hook" tests.
const fs = require('fs');
const path = require('path');

function TsvReporter(runner) {
  const out = process.env.BULL_SUITE_RESULTS;
  const fd = out ? fs.openSync(out, 'a') : null;
  const clean = s => String(s).replace(/[\t\r\n]+/g, ' ');
  const record = (status, test, err) => {
    const file = test.file ? path.relative(process.cwd(), test.file) : '';
    let msg = '';
    if (err) {
      msg = clean(((err.message || String(err)).split('\n')[0] || '').slice(0, 300));
    }
    const title = clean(test.fullTitle());
    process.stdout.write(`${status.toUpperCase()} ${file} :: ${title}${msg ? ' :: ' + msg : ''}\n`);
    if (fd !== null) {
      fs.writeSync(fd, [status, file, title, msg].join('\t') + '\n');
    }
  };
  runner.on('pass', t => record('passed', t));
  runner.on('fail', (t, err) => record('failed', t, err));
  runner.on('pending', t => record('pending', t));
  runner.on('end', () => process.stdout.write('END\n'));
}

module.exports = TsvReporter;
