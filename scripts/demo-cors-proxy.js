#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
/*
 * A CORS front for the demo FHIR server (tests/fhir-server/server.js), for local demos only.
 *
 * Why: the CDS Hooks Sandbox is a web page. It reads the patient from its FHIR server and runs
 * the services' prefetch queries *from the browser*, so the FHIR server must answer CORS
 * requests. The test FHIR server does not (the Rust tests call it directly), so
 * scripts/demo-fhir-server.sh puts this proxy in front of it. It forwards every request
 * unchanged, Host header included (the server builds its `fullUrl`s and paging links from it,
 * so they point back through the proxy), and adds the CORS headers, including Chrome's
 * Private Network Access answer, which a public page needs to reach a loopback server.
 *
 * Usage: node scripts/demo-cors-proxy.js --port 8090 --target-port 41234
 * Prints `LISTENING <port>` on stdout once it accepts requests. Listens on 127.0.0.1 only.
 * Exits on SIGTERM / SIGINT, and when its standard input is a pipe that closes (so it never
 * outlives the script or test that started it).
 */
'use strict';

const fs = require('node:fs');
const http = require('node:http');

function fail(message) {
  process.stderr.write(`demo-cors-proxy: ${message}\n`);
  process.exit(2);
}

function parsePort(name, value, allowZero) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1) || n > 65535) {
    fail(`${name} must be an integer port number`);
  }
  return n;
}

const args = process.argv.slice(2);
let port = 8090;
let targetPort;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port' && i + 1 < args.length) {
    port = parsePort('--port', args[++i], true);
  } else if (args[i] === '--target-port' && i + 1 < args.length) {
    targetPort = parsePort('--target-port', args[++i], false);
  } else {
    fail(`unknown argument ${JSON.stringify(args[i])} (usage: --port N --target-port N)`);
  }
}
if (targetPort === undefined) {
  fail('--target-port is required');
}

const ALLOWED_METHODS = 'GET, POST, PUT, PATCH, DELETE, OPTIONS';
const EXPOSED_HEADERS = 'Location, ETag, Content-Location, Last-Modified';

/** The CORS headers for a request: any origin may read (the data is synthetic demo data). */
function corsHeaders(req) {
  const origin = req.headers.origin;
  const headers = {
    'Access-Control-Allow-Origin': origin || '*',
    'Access-Control-Expose-Headers': EXPOSED_HEADERS,
  };
  if (origin) {
    headers.Vary = 'Origin';
  }
  return headers;
}

const server = http.createServer((req, res) => {
  if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
    const headers = {
      ...corsHeaders(req),
      'Access-Control-Allow-Methods': ALLOWED_METHODS,
      'Access-Control-Allow-Headers':
        req.headers['access-control-request-headers'] || 'Authorization, Content-Type, Accept',
      'Access-Control-Max-Age': '600',
    };
    // Chrome's Private Network Access: a public page (the Sandbox) reaching a loopback server.
    if (req.headers['access-control-request-private-network'] === 'true') {
      headers['Access-Control-Allow-Private-Network'] = 'true';
    }
    res.writeHead(204, headers);
    res.end();
    return;
  }
  const upstream = http.request(
    { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
    (up) => {
      const headers = { ...up.headers, ...corsHeaders(req) };
      res.writeHead(up.statusCode ?? 502, headers);
      up.pipe(res);
    },
  );
  upstream.on('error', (err) => {
    if (!res.headersSent) {
      const body = JSON.stringify({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'transient', diagnostics: `the demo FHIR server did not answer: ${err.code ?? err.message}` }],
      });
      res.writeHead(502, { 'Content-Type': 'application/fhir+json', ...corsHeaders(req) });
      res.end(body);
    } else {
      res.destroy();
    }
  });
  req.pipe(upstream);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

// Exit with the parent when stdin is a pipe or socket that closes (as server.js does).
let stdinStat;
try {
  stdinStat = fs.fstatSync(0);
} catch {
  stdinStat = undefined;
}
if (stdinStat && (stdinStat.isFIFO() || stdinStat.isSocket())) {
  process.stdin.on('data', () => {});
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
