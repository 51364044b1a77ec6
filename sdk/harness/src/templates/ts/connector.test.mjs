// Tests of the built CONNECTOR_NAME.wasm in the gateway's own sandbox
// (`switchboard connector check`) against a local server. Build first:
// `npm run build`. The gateway binary is $SWITCHBOARD_BIN, else
// `switchboard` on the PATH.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const wasm = fileURLToPath(new URL('../CONNECTOR_NAME.wasm', import.meta.url));
const bin = process.env.SWITCHBOARD_BIN ?? 'switchboard';
const run = promisify(execFile);

/** A server answering `status` (and `headers`, `body`), recording requests. */
async function upstream(status, headers = {}, body = '') {
  const requests = [];
  const server = createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, headers: req.headers, body: data });
      res.writeHead(status, headers).end(body);
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const host = `127.0.0.1:${server.address().port}`;
  return { host, requests, close: () => server.close() };
}

/** `switchboard connector check` of the build, with `url` and one event. */
async function check(args, event) {
  const argv = ['--format', 'json', 'connector', 'check', wasm, ...args];
  if (event !== undefined) {
    const file = join(mkdtempSync(join(tmpdir(), 'CONNECTOR_NAME-')), 'event.json');
    writeFileSync(file, JSON.stringify(event));
    argv.push('--event', file);
  }
  const { stdout } = await run(bin, argv);
  return JSON.parse(stdout);
}

const event = {
  id: 'evt-1',
  type: 'number.assign',
  keys: ['msisdn:2065551234'],
  payload: { msisdn: '2065551234', customer: 'A2' },
};

async function deliverTo(up) {
  return check([`--config=url=http://${up.host}/hook`, `--allow-host=${up.host}`], event);
}

test('declares its name and a required url', async () => {
  const info = await check([]);
  assert.equal(info.name, 'CONNECTOR_NAME');
  assert.ok(info.config.some((c) => c.name === 'url' && c.required));
});

test('a 2xx is done, with the payload and the idempotency headers', async () => {
  const up = await upstream(200);
  try {
    assert.equal((await deliverTo(up)).outcome.kind, 'done');
    const [req] = up.requests;
    assert.equal(req.method, 'POST');
    assert.deepEqual(JSON.parse(req.body), event.payload);
    assert.equal(req.headers['idempotency-key'], 'evt-1-check');
    assert.equal(req.headers['x-switchboard-event'], 'evt-1');
    assert.equal(req.headers['x-switchboard-type'], 'number.assign');
  } finally {
    up.close();
  }
});

test('a 503 is a retry that honours Retry-After', async () => {
  const up = await upstream(503, { 'retry-after': '7' });
  try {
    const { outcome } = await deliverTo(up);
    assert.equal(outcome.kind, 'retry');
    assert.equal(outcome.after_ms, 7000);
  } finally {
    up.close();
  }
});

test('a 404 is a reject quoting the status and the body', async () => {
  const up = await upstream(404, {}, 'no such subscriber');
  try {
    const { outcome } = await deliverTo(up);
    assert.equal(outcome.kind, 'reject');
    assert.match(outcome.reason, /404.*no such subscriber/);
  } finally {
    up.close();
  }
});

test('a missing url is a reject, not a crash', async () => {
  const { outcome } = await check([], event);
  assert.equal(outcome.kind, 'reject');
  assert.match(outcome.reason, /url/);
});
