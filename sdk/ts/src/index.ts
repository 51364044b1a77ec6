/**
 * Switchboard connector SDK for TypeScript.
 *
 * A connector is a WebAssembly component (built with componentize-js) that
 * exports `describe` and `deliver` of the `switchboard:connector@0.1.0`
 * world. This module gives what the Rust SDK gives:
 *
 * - typed `Delivery`, `Outcome`, `Info` (generated from the WIT by `jco types`);
 * - `config.get` / `config.require`, and `log.*` into the host's log pipeline;
 * - a blocking HTTP client over the standard `wasi:http/outgoing-handler`
 *   that reports the real failure reason (refused, timeout, denied host…),
 *   frames bodies of any size by `Content-Length`, never chunked, and never
 *   follows redirects;
 * - `outcomeFromStatus` (SPEC §4.5: 2xx done; 408, 429, 5xx retry honouring
 *   `Retry-After`; anything else reject with the status and the start of the
 *   body) and `deliveryHeaders` (`Idempotency-Key`, `X-Switchboard-Event`,
 *   `X-Switchboard-Type`);
 * - `defineConnector`, which turns a thrown `ConnectorError` (or any other
 *   exception) into an outcome instead of a trap.
 *
 * The host decides what is reachable, applies its own timeouts and size
 * caps, and injects secret headers: a connector never holds credentials.
 */

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import {
  Fields,
  OutgoingBody,
  OutgoingRequest,
  RequestOptions,
  httpErrorCode,
  type ErrorCode,
  type Method,
} from 'wasi:http/types@0.2.12';
import { get as rawConfigGet } from 'switchboard:connector/config@0.1.0';
import { log as rawLog } from 'switchboard:connector/log@0.1.0';
import type {
  ConfigField,
  Delivery,
  Info,
  Outcome,
} from 'switchboard:connector/types@0.1.0';

export type { ConfigField, Delivery, Info, Outcome };

/** Largest response body the SDK reads (the host may cap lower). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** wasi:io streams accept at most 4096 bytes per blocking write. */
const WRITE_CHUNK = 4096;
const READ_CHUNK = 64n * 1024n;
/** Bytes of the response body quoted in a reason. */
const REASON_BODY_BYTES = 256;
/** A year is longer than any sane Retry-After; the host clamps further. */
const MAX_RETRY_AFTER_MS = 365 * 24 * 3600 * 1000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Why a request or a delivery failed; decides the outcome (see `outcomeFromError`). */
export type ErrorKind =
  | 'missing-config'
  | 'invalid-url'
  | 'bad-payload'
  | 'denied'
  | 'connect'
  | 'timeout'
  | 'transport';

/** A failure with a kind; `defineConnector` turns it into an outcome. */
export class ConnectorError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string) {
    super(message);
    this.kind = kind;
    this.name = 'ConnectorError';
  }
}

const PREFIX: Record<ErrorKind, string> = {
  'missing-config': 'missing required config',
  'invalid-url': 'invalid url',
  'bad-payload': 'payload does not match',
  denied: 'egress denied',
  connect: 'connect error',
  timeout: 'timeout',
  transport: 'transport error',
};

/** The outcomes a connector returns. */
export const outcome = {
  /** Delivered; final. */
  done(): Outcome {
    return { tag: 'done' };
  },
  /** Transient failure: the host tries again, not before `afterMs` if given. */
  retry(reason: string, afterMs?: number): Outcome {
    const val: { reason: string; afterMs?: bigint } = { reason };
    if (afterMs !== undefined) {
      val.afterMs = BigInt(Math.max(0, Math.min(Math.round(afterMs), MAX_RETRY_AFTER_MS)));
    }
    return { tag: 'retry', val };
  },
  /** Permanent failure: a dead letter with this reason. */
  reject(reason: string): Outcome {
    return { tag: 'reject', val: reason };
  },
};

/**
 * Transport failures are transient; configuration and payload problems are
 * not. A denied host is retried: it is an operator's `allowed_hosts` mistake
 * that costs one attempt, and the breaker stops the hammering. Anything that
 * is not a `ConnectorError` is a bug in the connector: retried, with its
 * message, so it is visible and nothing is lost.
 */
export function outcomeFromError(e: unknown): Outcome {
  if (e instanceof ConnectorError) {
    const reason = `${PREFIX[e.kind]}: ${e.message}`;
    switch (e.kind) {
      case 'missing-config':
      case 'invalid-url':
      case 'bad-payload':
        return outcome.reject(reason);
      default:
        return outcome.retry(reason);
    }
  }
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return outcome.retry(`connector error: ${message}`);
}

/** SPEC §4.5's classification of an HTTP answer. */
export function outcomeFromStatus(resp: Response): Outcome {
  const s = resp.status;
  if (s >= 200 && s <= 299) return outcome.done();
  const reason = `HTTP ${s}${bodyExcerpt(resp.body)}`;
  if (s === 408 || s === 429 || (s >= 500 && s <= 599)) {
    return outcome.retry(reason, resp.retryAfterMs());
  }
  return outcome.reject(reason);
}

/** `: <start of the body on one line>`, or nothing for an empty body. */
function bodyExcerpt(body: Uint8Array): string {
  const words = decoder
    .decode(body.subarray(0, 4 * REASON_BODY_BYTES))
    // eslint-disable-next-line no-control-regex
    .split(/[\s\u0000-\u001f\u007f]+/)
    .filter((w) => w.length > 0);
  const text = words.join(' ');
  if (text.length === 0) return '';
  const cut = Array.from(text);
  return cut.length > REASON_BODY_BYTES
    ? `: ${cut.slice(0, REASON_BODY_BYTES).join('')}…`
    : `: ${text}`;
}

/** SPEC §4.5's headers for `d`: the same on every attempt of a delivery. */
export function deliveryHeaders(d: Delivery): Record<string, string> {
  return {
    'idempotency-key': d.id,
    'x-switchboard-event': d.eventId,
    'x-switchboard-type': d.eventType,
  };
}

/** The connector's configuration (`[connectors.config]`); no secrets here. */
export const config = {
  /** The value of `name`, or `undefined` if it is not set. */
  get(name: string): string | undefined {
    return rawConfigGet(name);
  },
  /** The value of `name`; throws `missing-config` if it is unset or empty. */
  require(name: string): string {
    const v = rawConfigGet(name);
    if (v === undefined || v === '') throw new ConnectorError('missing-config', `\`${name}\``);
    return v;
  },
};

/** Log lines, tagged by the host with the connector and delivery id. */
export const log = {
  trace: (message: string) => rawLog('trace', message),
  debug: (message: string) => rawLog('debug', message),
  info: (message: string) => rawLog('info', message),
  warn: (message: string) => rawLog('warn', message),
  error: (message: string) => rawLog('error', message),
};

/** A fully read HTTP response. */
export class Response {
  constructor(
    readonly status: number,
    /** Header names in lower case, values as sent. */
    readonly headers: [string, string][],
    readonly body: Uint8Array,
  ) {}

  /** The first value of header `name` (any case). */
  header(name: string): string | undefined {
    const n = name.toLowerCase();
    return this.headers.find(([k]) => k === n)?.[1];
  }

  /** The body as UTF-8 text. */
  text(): string {
    return decoder.decode(this.body);
  }

  /** The body parsed as JSON; throws `bad-payload` if it is not JSON. */
  json(): unknown {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new ConnectorError('bad-payload', `response is not JSON: ${e}`);
    }
  }

  get ok(): boolean {
    return this.status >= 200 && this.status <= 299;
  }

  /** `Retry-After` in milliseconds (seconds or an HTTP date; past dates are 0). */
  retryAfterMs(): number | undefined {
    const v = this.header('retry-after')?.trim();
    if (v === undefined || v === '') return undefined;
    if (/^\d+$/.test(v)) return Math.min(Number(v) * 1000, MAX_RETRY_AFTER_MS);
    if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v)) return undefined;
    const at = Date.parse(v);
    if (Number.isNaN(at)) return undefined;
    return Math.min(Math.max(0, at - Date.now()), MAX_RETRY_AFTER_MS);
  }
}

/** What a request carries besides its method and URL. */
export interface RequestInit {
  /** Extra headers; `content-length` is always set from the body. */
  headers?: Record<string, string> | [string, string][];
  /** A raw body (text is sent as UTF-8). */
  body?: string | Uint8Array;
  /** JSON text sent verbatim, with `content-type: application/json`. */
  jsonText?: string;
  /** A value serialised as JSON, with `content-type: application/json`. */
  json?: unknown;
  /** Connect, first-byte and between-bytes timeout (the host's limits still apply). */
  timeoutMs?: number;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Send a request and read the whole response; throws `ConnectorError` on failure. */
export function request(method: HttpMethod, url: string, init: RequestInit = {}): Response {
  const target = parseUrl(url);
  const headers: [string, string][] = Array.isArray(init.headers)
    ? init.headers.map(([k, v]) => [k.toLowerCase(), v])
    : Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]);
  let body: Uint8Array | undefined;
  if (init.jsonText !== undefined) {
    body = encoder.encode(init.jsonText);
    headers.push(['content-type', 'application/json']);
  } else if (init.json !== undefined) {
    let text: string;
    try {
      text = JSON.stringify(init.json);
    } catch (e) {
      throw new ConnectorError('bad-payload', `cannot serialise body: ${e}`);
    }
    body = encoder.encode(text);
    headers.push(['content-type', 'application/json']);
  } else if (init.body !== undefined) {
    body = typeof init.body === 'string' ? encoder.encode(init.body) : init.body;
  }
  // A request without a body never opens one; POST, PUT and PATCH always
  // carry one (`content-length: 0` when empty).
  const framed = body !== undefined || method === 'POST' || method === 'PUT' || method === 'PATCH';
  const bytes = body ?? new Uint8Array(0);
  const list: [string, Uint8Array][] = headers
    .filter(([k]) => k !== 'content-length')
    .map(([k, v]) => [k, encoder.encode(v)]);
  if (framed) list.push(['content-length', encoder.encode(String(bytes.length))]);

  let fields: Fields;
  try {
    fields = Fields.fromList(list);
  } catch {
    const bad = list.find(([k, v]) => {
      try {
        drop(Fields.fromList([[k, v]]));
        return false;
      } catch {
        return true;
      }
    });
    throw new ConnectorError('transport', `invalid header \`${bad?.[0] ?? '?'}\``);
  }
  const req = new OutgoingRequest(fields);
  try {
    req.setMethod({ tag: method.toLowerCase() } as Method);
    req.setScheme({ tag: target.https ? 'HTTPS' : 'HTTP' });
    req.setAuthority(target.authority);
    req.setPathWithQuery(target.pathWithQuery);
  } catch {
    drop(req);
    throw new ConnectorError('invalid-url', `\`${url}\``);
  }
  const outgoing = framed ? req.body() : undefined;

  let options: RequestOptions | undefined;
  if (init.timeoutMs !== undefined) {
    const nanos = BigInt(Math.max(0, Math.round(init.timeoutMs))) * 1_000_000n;
    options = new RequestOptions();
    // The host may refuse to honour options; that is not an error.
    for (const set of [
      () => options!.setConnectTimeout(nanos),
      () => options!.setFirstByteTimeout(nanos),
      () => options!.setBetweenBytesTimeout(nanos),
    ]) {
      try {
        set();
      } catch {
        /* not honoured */
      }
    }
  }

  // The request and its options go to the host with `handle`; the body
  // stays ours until `finish` hands it over.
  let pending;
  try {
    pending = handle(req, options);
  } catch (e) {
    if (outgoing !== undefined) drop(outgoing);
    throw fromHostError(e, 'sending request');
  }
  if (outgoing !== undefined) {
    const stream = outgoing.write();
    try {
      for (let i = 0; i < bytes.length; i += WRITE_CHUNK) {
        stream.blockingWriteAndFlush(bytes.subarray(i, i + WRITE_CHUNK));
      }
    } catch (e) {
      drop(stream);
      drop(outgoing);
      drop(pending);
      throw fromHostError(e, 'writing request body');
    }
    // The stream must be dropped before the body is finished.
    drop(stream);
    try {
      OutgoingBody.finish(outgoing, undefined);
    } catch (e) {
      drop(pending);
      throw fromHostError(e, 'finishing request body');
    }
  }

  // Every resource this call still owns is dropped when it ends, children
  // first, whatever happens: the gateway keeps an instance warm for the
  // next delivery only if it holds no HTTP resource, and a collector may
  // run much later.
  const held: object[] = [pending];
  const chunks: Uint8Array[] = [];
  let size = 0;
  let status: number;
  let respHeaders: [string, string][];
  try {
    const ready = pending.subscribe();
    held.push(ready);
    ready.block();
    const got = pending.get();
    if (got === undefined) throw new ConnectorError('transport', 'response not ready after wait');
    if (got.tag !== 'ok') throw new ConnectorError('transport', 'response already taken');
    if (got.val.tag !== 'ok') throw fromErrorCode(got.val.val);
    const resp = got.val.val;
    held.push(resp);
    status = resp.status();
    const fields = resp.headers();
    held.push(fields);
    respHeaders = fields.entries().map(([k, v]) => [k.toLowerCase(), decoder.decode(v)]);
    const incoming = resp.consume();
    held.push(incoming);
    const input = incoming.stream();
    held.push(input);
    for (;;) {
      let chunk: Uint8Array;
      try {
        chunk = input.blockingRead(READ_CHUNK);
      } catch (e) {
        if (isClosed(e)) break;
        throw fromHostError(e, 'reading response body');
      }
      size += chunk.length;
      if (size > MAX_RESPONSE_BYTES) {
        throw new ConnectorError('transport', `response body larger than ${MAX_RESPONSE_BYTES} bytes`);
      }
      chunks.push(chunk);
    }
  } finally {
    for (const resource of held.reverse()) drop(resource);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new Response(status, respHeaders, all);
}

export const http = {
  get: (url: string, init?: RequestInit) => request('GET', url, init),
  post: (url: string, init?: RequestInit) => request('POST', url, init),
  put: (url: string, init?: RequestInit) => request('PUT', url, init),
  patch: (url: string, init?: RequestInit) => request('PATCH', url, init),
  delete: (url: string, init?: RequestInit) => request('DELETE', url, init),
};

interface Target {
  https: boolean;
  authority: string;
  pathWithQuery: string;
}

/** The same rules as the Rust SDK: http(s) only, a host, no credentials. */
function parseUrl(url: string): Target {
  const invalid = (why: string) => new ConnectorError('invalid-url', `${why}: \`${url}\``);
  const m = /^(https?):\/\/(.*)$/is.exec(url);
  if (m === null) throw invalid('scheme must be http or https');
  const rest = m[2];
  const end = rest.search(/[/?#]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  if (authority === '') throw invalid('no host');
  if (authority.includes('@')) {
    throw invalid('credentials in URLs are not allowed; the host injects them');
  }
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(authority)) throw invalid('whitespace in host');
  let path = end === -1 ? '' : rest.slice(end);
  const hash = path.indexOf('#');
  if (hash !== -1) path = path.slice(0, hash);
  const pathWithQuery = path === '' ? '/' : path.startsWith('?') ? `/${path}` : path;
  return { https: m[1].toLowerCase() === 'https', authority, pathWithQuery };
}

/** Release a host resource now rather than when the collector finds it. */
function drop(resource: object): void {
  try {
    (resource as { [Symbol.dispose]?: () => void })[Symbol.dispose]?.();
  } catch {
    /* already released */
  }
}

/** A stream error whose payload says the stream closed (the normal end of a body). */
function isClosed(e: unknown): boolean {
  const p = (e as { payload?: { tag?: string } })?.payload;
  return p?.tag === 'closed';
}

/** A host call's thrown error, with its wasi:http error code when it has one. */
function fromHostError(e: unknown, during: string): ConnectorError {
  const p = (e as { payload?: { tag?: string; val?: unknown } })?.payload;
  if (p?.tag === 'closed') return new ConnectorError('transport', `stream closed while ${during}`);
  if (p?.tag === 'last-operation-failed') {
    let code: ErrorCode | undefined;
    try {
      code = httpErrorCode(p.val as Parameters<typeof httpErrorCode>[0]);
    } catch {
      code = undefined;
    }
    const error =
      code !== undefined
        ? fromErrorCode(code)
        : new ConnectorError('transport', `${during}: ${describeIoError(p.val)}`);
    // The host's error resource is ours: release it now.
    drop(p.val as object);
    return error;
  }
  if (p !== undefined && typeof p.tag === 'string') return fromErrorCode(p as ErrorCode);
  return new ConnectorError('transport', `${during}: ${e}`);
}

function describeIoError(err: unknown): string {
  try {
    return (err as { toDebugString(): string }).toDebugString();
  } catch {
    return 'I/O error';
  }
}

/** A wasi:http error code as the failure it is, with its name as the reason. */
function fromErrorCode(code: ErrorCode): ConnectorError {
  const name = code.tag;
  switch (name) {
    case 'HTTP-request-denied':
      return new ConnectorError('denied', 'host not in allowed_hosts');
    case 'destination-IP-prohibited':
      return new ConnectorError('denied', 'destination address is prohibited');
    case 'DNS-timeout':
    case 'connection-timeout':
    case 'connection-read-timeout':
    case 'connection-write-timeout':
    case 'HTTP-response-timeout':
      return new ConnectorError('timeout', name);
    case 'DNS-error':
    case 'destination-not-found':
    case 'destination-unavailable':
    case 'destination-IP-unroutable':
    case 'connection-refused':
    case 'connection-terminated':
    case 'connection-limit-reached':
      return new ConnectorError('connect', name);
    default: {
      const detail = 'val' in code && code.val !== undefined ? ` ${safeJson(code.val)}` : '';
      return new ConnectorError('transport', `${name}${detail}`);
    }
  }
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x));
  } catch {
    return String(v);
  }
}

/** What a connector implements. */
export interface Connector {
  /** Name, version and configuration keys. Cheap; no I/O. */
  describe(): Info;
  /** One attempt of one delivery. May throw a `ConnectorError` (or anything). */
  deliver(d: Delivery): Outcome;
}

/**
 * The component's exports for `impl`:
 * `export const { describe, deliver } = defineConnector({ ... });`
 * A thrown error becomes an outcome (see `outcomeFromError`), never a trap.
 */
export function defineConnector(impl: Connector): Connector {
  return {
    describe: () => impl.describe(),
    deliver: (d: Delivery) => {
      try {
        return impl.deliver(d);
      } catch (e) {
        return outcomeFromError(e);
      }
    },
  };
}
