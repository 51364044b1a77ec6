"""Switchboard connector SDK for Python.

A connector is a WebAssembly component (built with componentize-py) that
exports ``describe`` and ``deliver`` of the ``switchboard:connector@0.1.0``
world. This package gives what the Rust SDK gives:

- the typed ``Delivery``, ``Outcome`` and ``Info`` of the world;
- ``config.get`` / ``config.require``, and ``log`` into the host's log pipeline;
- a blocking HTTP client over the standard ``wasi:http/outgoing-handler``
  that reports the real failure reason (refused, timeout, denied host…),
  frames bodies of any size by ``Content-Length`` (written in 4 KiB chunks,
  never chunked encoding) and never follows redirects;
- ``outcome_from_status`` (SPEC §4.5: 2xx done; 408, 429, 5xx retry honouring
  ``Retry-After``; anything else reject with the status and the start of the
  body) and ``delivery_headers`` (``Idempotency-Key``,
  ``X-Switchboard-Event``, ``X-Switchboard-Type``);
- ``Connector``, a base class whose ``deliver`` turns a raised
  ``ConnectorError`` (or any other exception) into an outcome, not a trap.

The host decides what is reachable, applies its own timeouts and size caps,
and injects secret headers: a connector never holds credentials.

    from switchboard_connector import Connector, ConfigField, Info, config, http
    from switchboard_connector import delivery_headers, outcome_from_status

    class WitWorld(Connector):
        def describe(self):
            return Info("mine", "0.1.0", [ConfigField("url", True, "where to POST")])

        def deliver(self, d):
            resp = http.post(config.require("url"), headers=delivery_headers(d),
                             json_text=d.payload)
            return outcome_from_status(resp)
"""

from __future__ import annotations

import email.utils
import json as _json
import re
import time
from typing import Dict, List, Optional, Tuple, Union

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import config as _config
from wit_world.imports import log as _log
from wit_world.imports import outgoing_handler
from wit_world.imports import sb_types
from wit_world.imports import streams
from wit_world.imports import types as wasi

Delivery = sb_types.Delivery
Info = sb_types.Info
ConfigField = sb_types.ConfigField
Outcome = sb_types.Outcome
RetryInfo = sb_types.RetryInfo

__all__ = [
    "ConfigField",
    "Connector",
    "ConnectorError",
    "Delivery",
    "Info",
    "MAX_RESPONSE_BYTES",
    "Outcome",
    "Response",
    "config",
    "delivery_headers",
    "http",
    "log",
    "outcome",
    "outcome_from_error",
    "outcome_from_status",
]

#: Largest response body the SDK reads (the host may cap lower).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# wasi:io streams accept at most 4096 bytes per blocking write.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024
# Bytes of the response body quoted in a reason.
_REASON_BODY_BYTES = 256
# A year is longer than any sane Retry-After; the host clamps further.
_MAX_RETRY_AFTER_MS = 365 * 24 * 3600 * 1000

_PREFIX = {
    "missing-config": "missing required config",
    "invalid-url": "invalid url",
    "bad-payload": "payload does not match",
    "denied": "egress denied",
    "connect": "connect error",
    "timeout": "timeout",
    "transport": "transport error",
}


class ConnectorError(Exception):
    """A failure with a kind (one of ``missing-config``, ``invalid-url``,
    ``bad-payload``, ``denied``, ``connect``, ``timeout``, ``transport``);
    ``Connector.deliver`` turns it into an outcome."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        if kind not in _PREFIX:
            raise ValueError(f"unknown error kind {kind!r}")
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{_PREFIX[self.kind]}: {self.message}"


class outcome:
    """The outcomes a connector returns."""

    @staticmethod
    def done() -> Outcome:
        """Delivered; final."""
        return sb_types.Outcome_Done()

    @staticmethod
    def retry(reason: str, after_ms: Optional[int] = None) -> Outcome:
        """Transient failure: the host tries again, not before ``after_ms`` if given."""
        if after_ms is not None:
            after_ms = max(0, min(int(after_ms), _MAX_RETRY_AFTER_MS))
        return sb_types.Outcome_Retry(sb_types.RetryInfo(after_ms, reason))

    @staticmethod
    def reject(reason: str) -> Outcome:
        """Permanent failure: a dead letter with this reason."""
        return sb_types.Outcome_Reject(reason)


def outcome_from_error(e: BaseException) -> Outcome:
    """Transport failures are transient; configuration and payload problems
    are not. A denied host is retried: it is an operator's ``allowed_hosts``
    mistake that costs one attempt, and the breaker stops the hammering.
    Anything that is not a ``ConnectorError`` is a bug in the connector:
    retried, with its message, so it is visible and nothing is lost."""
    if isinstance(e, ConnectorError):
        if e.kind in ("missing-config", "invalid-url", "bad-payload"):
            return outcome.reject(str(e))
        return outcome.retry(str(e))
    return outcome.retry(f"connector error: {type(e).__name__}: {e}")


def outcome_from_status(resp: "Response") -> Outcome:
    """SPEC §4.5's classification of an HTTP answer."""
    s = resp.status
    if 200 <= s <= 299:
        return outcome.done()
    reason = f"HTTP {s}{_body_excerpt(resp.body)}"
    if s in (408, 429) or 500 <= s <= 599:
        return outcome.retry(reason, resp.retry_after_ms())
    return outcome.reject(reason)


def _body_excerpt(body: bytes) -> str:
    text = " ".join(
        w
        for w in re.split(r"[\s\x00-\x1f\x7f]+", body[: 4 * _REASON_BODY_BYTES].decode("utf-8", "replace"))
        if w
    )
    if not text:
        return ""
    if len(text) > _REASON_BODY_BYTES:
        return f": {text[:_REASON_BODY_BYTES]}…"
    return f": {text}"


def delivery_headers(d: Delivery) -> Dict[str, str]:
    """SPEC §4.5's headers for ``d``: the same on every attempt of a delivery."""
    return {
        "idempotency-key": d.id,
        "x-switchboard-event": d.event_id,
        "x-switchboard-type": d.event_type,
    }


class config:
    """The connector's configuration (``[connectors.config]``); no secrets here."""

    @staticmethod
    def get(name: str) -> Optional[str]:
        """The value of ``name``, or ``None`` if it is not set."""
        return _config.get(name)

    @staticmethod
    def require(name: str) -> str:
        """The value of ``name``; raises ``missing-config`` if unset or empty."""
        v = _config.get(name)
        if not v:
            raise ConnectorError("missing-config", f"`{name}`")
        return v


def _logger(level: "_log.Level"):
    def emit(message: str) -> None:
        _log.log(level, message)

    return staticmethod(emit)


class log:
    """Log lines, tagged by the host with the connector and delivery id:
    ``log.info("…")``, and ``trace``, ``debug``, ``warn``, ``error``."""

    trace = _logger(_log.Level.TRACE)
    debug = _logger(_log.Level.DEBUG)
    info = _logger(_log.Level.INFO)
    warn = _logger(_log.Level.WARN)
    error = _logger(_log.Level.ERROR)


class Response:
    """A fully read HTTP response."""

    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes):
        self.status = status
        #: Header names in lower case, values as sent.
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case)."""
        n = name.lower()
        return next((v for k, v in self.headers if k == n), None)

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON; raises ``bad-payload`` if it is not JSON."""
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise ConnectorError("bad-payload", f"response is not JSON: {e}") from None

    def retry_after_ms(self) -> Optional[int]:
        """``Retry-After`` in milliseconds (seconds or an HTTP date; past dates are 0)."""
        v = (self.header("retry-after") or "").strip()
        if not v:
            return None
        if v.isdigit():
            return min(int(v) * 1000, _MAX_RETRY_AFTER_MS)
        if not re.fullmatch(r"[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT", v):
            return None
        try:
            at = email.utils.parsedate_to_datetime(v).timestamp()
        except (TypeError, ValueError):
            return None
        return min(max(0, int((at - time.time()) * 1000)), _MAX_RETRY_AFTER_MS)


_METHODS = {
    "GET": wasi.Method_Get,
    "POST": wasi.Method_Post,
    "PUT": wasi.Method_Put,
    "PATCH": wasi.Method_Patch,
    "DELETE": wasi.Method_Delete,
}

Headers = Union[Dict[str, str], List[Tuple[str, str]], None]


def _drop(resource: object) -> None:
    """Release a host resource now rather than when the collector finds it."""
    try:
        resource.__exit__(None, None, None)  # type: ignore[attr-defined]
    except Exception:  # already released: nothing to do
        pass


def request(
    method: str,
    url: str,
    *,
    headers: Headers = None,
    body: Union[str, bytes, None] = None,
    json_text: Optional[str] = None,
    json: object = None,
    timeout_ms: Optional[int] = None,
) -> Response:
    """Send a request and read the whole response; raises ``ConnectorError`` on failure.

    ``json_text`` is sent verbatim, ``json`` is serialised; both set
    ``content-type: application/json``. ``content-length`` is always set from
    the body. ``timeout_ms`` asks for connect, first-byte and between-bytes
    timeouts (the host's limits still apply)."""
    method = method.upper()
    if method not in _METHODS:
        raise ConnectorError("invalid-url", f"unsupported method {method}")
    https, authority, path_with_query = _parse_url(url)
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    fields_list = [(k.lower(), v.encode()) for k, v in items if k.lower() != "content-length"]
    data: Optional[bytes] = None
    if json_text is not None:
        data = json_text.encode()
        fields_list.append(("content-type", b"application/json"))
    elif json is not None:
        try:
            data = _json.dumps(json).encode()
        except (TypeError, ValueError) as e:
            raise ConnectorError("bad-payload", f"cannot serialise body: {e}") from None
        fields_list.append(("content-type", b"application/json"))
    elif body is not None:
        data = body.encode() if isinstance(body, str) else bytes(body)
    # A request without a body never opens one; POST, PUT and PATCH always
    # carry one (content-length: 0 when empty).
    framed = data is not None or method in ("POST", "PUT", "PATCH")
    data = data or b""
    if framed:
        fields_list.append(("content-length", str(len(data)).encode()))

    try:
        fields = wasi.Fields.from_list(fields_list)
    except Err:
        bad = "?"
        for k, v in fields_list:
            try:
                _drop(wasi.Fields.from_list([(k, v)]))
            except Err:
                bad = k
                break
        raise ConnectorError("transport", f"invalid header `{bad}`") from None

    req = wasi.OutgoingRequest(fields)
    try:
        req.set_method(_METHODS[method]())
        req.set_scheme(wasi.Scheme_Https() if https else wasi.Scheme_Http())
        req.set_authority(authority)
        req.set_path_with_query(path_with_query)
    except Err:
        _drop(req)
        raise ConnectorError("invalid-url", f"`{url}`") from None
    outgoing = req.body() if framed else None

    options = None
    if timeout_ms is not None:
        nanos = max(0, int(timeout_ms)) * 1_000_000
        options = wasi.RequestOptions()
        for setter in (
            options.set_connect_timeout,
            options.set_first_byte_timeout,
            options.set_between_bytes_timeout,
        ):
            try:
                setter(nanos)
            except Err:
                pass  # the host may refuse to honour options; not an error

    # The request and its options go to the host with `handle`; the body
    # stays ours until `finish` hands it over.
    try:
        pending = outgoing_handler.handle(req, options)
    except Err as e:
        if outgoing is not None:
            _drop(outgoing)
        raise _from_error_code(e.value) from None
    if outgoing is not None:
        # The request is sent first, then the body is written in chunks the
        # host accepts: this carries bodies of any size (an asyncio write of
        # the whole body fails above 1 MiB).
        stream = outgoing.write()
        try:
            view = memoryview(data)
            for at in range(0, len(data), _WRITE_CHUNK):
                stream.blocking_write_and_flush(bytes(view[at : at + _WRITE_CHUNK]))
        except Err as e:
            for resource in (stream, outgoing, pending):
                _drop(resource)
            raise _from_stream_error(e.value, "writing request body") from None
        # The stream must be dropped before the body is finished.
        _drop(stream)
        try:
            wasi.OutgoingBody.finish(outgoing, None)
        except Err as e:
            _drop(pending)
            raise _from_error_code(e.value) from None

    # Every resource this call still owns is dropped when it ends, children
    # first, whatever happens: the gateway keeps an instance warm for the
    # next delivery only if it holds no HTTP resource.
    held = [pending]
    chunks: List[bytes] = []
    size = 0
    try:
        ready = pending.subscribe()
        held.append(ready)
        ready.block()
        got = pending.get()
        if got is None:
            raise ConnectorError("transport", "response not ready after wait")
        if isinstance(got, Err):
            raise ConnectorError("transport", "response already taken")
        inner = got.value
        if isinstance(inner, Err):
            raise _from_error_code(inner.value)
        resp = inner.value
        held.append(resp)
        status = resp.status()
        fields = resp.headers()
        held.append(fields)
        resp_headers = [(k.lower(), v.decode("utf-8", "replace")) for k, v in fields.entries()]
        incoming = resp.consume()
        held.append(incoming)
        source = incoming.stream()
        held.append(source)
        while True:
            try:
                chunk = source.blocking_read(_READ_CHUNK)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise _from_stream_error(e.value, "reading response body") from None
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ConnectorError("transport", f"response body larger than {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
    finally:
        for resource in reversed(held):
            _drop(resource)
    return Response(status, resp_headers, b"".join(chunks))


def _method(name: str):
    def send(url: str, **kw) -> Response:
        return request(name, url, **kw)

    send.__doc__ = f"``request('{name}', url, …)``"
    return staticmethod(send)


class http:
    """``http.post(url, headers=…, json_text=…)`` and the other methods; see ``request``."""

    get = _method("GET")
    post = _method("POST")
    put = _method("PUT")
    patch = _method("PATCH")
    delete = _method("DELETE")


def _parse_url(url: str) -> Tuple[bool, str, str]:
    """The same rules as the Rust SDK: http(s) only, a host, no credentials."""

    def invalid(why: str) -> ConnectorError:
        return ConnectorError("invalid-url", f"{why}: `{url}`")

    m = re.match(r"(?is)(https?)://(.*)\Z", url)
    if m is None:
        raise invalid("scheme must be http or https")
    rest = m.group(2)
    end = re.search(r"[/?#]", rest)
    authority = rest if end is None else rest[: end.start()]
    if not authority:
        raise invalid("no host")
    if "@" in authority:
        raise invalid("credentials in URLs are not allowed; the host injects them")
    if re.search(r"[\s\x00-\x1f\x7f]", authority):
        raise invalid("whitespace in host")
    path = "" if end is None else rest[end.start() :]
    path = path.split("#", 1)[0]
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    return m.group(1).lower() == "https", authority, path


def _from_stream_error(e, during: str) -> ConnectorError:
    if isinstance(e, streams.StreamError_Closed):
        return ConnectorError("transport", f"stream closed while {during}")
    code = wasi.http_error_code(e.value)
    if code is not None:
        error = _from_error_code(code)
    else:
        error = ConnectorError("transport", f"{during}: {e.value.to_debug_string()}")
    # The host's error resource is ours: release it now.
    _drop(e.value)
    return error


_TIMEOUTS = (
    wasi.ErrorCode_DnsTimeout,
    wasi.ErrorCode_ConnectionTimeout,
    wasi.ErrorCode_ConnectionReadTimeout,
    wasi.ErrorCode_ConnectionWriteTimeout,
    wasi.ErrorCode_HttpResponseTimeout,
)
_CONNECT = (
    wasi.ErrorCode_DnsError,
    wasi.ErrorCode_DestinationNotFound,
    wasi.ErrorCode_DestinationUnavailable,
    wasi.ErrorCode_DestinationIpUnroutable,
    wasi.ErrorCode_ConnectionRefused,
    wasi.ErrorCode_ConnectionTerminated,
    wasi.ErrorCode_ConnectionLimitReached,
)


_ACRONYMS = frozenset({"dns", "ip", "tls", "http", "uri"})


def _wit_name(code) -> str:
    """An error code by its WIT name (``connection-refused``, ``DNS-timeout``),
    as the Rust and TypeScript SDKs give it."""
    words = re.findall(r"[A-Z][a-z0-9]*", type(code).__name__.removeprefix("ErrorCode_"))
    return "-".join(w.upper() if w.lower() in _ACRONYMS else w.lower() for w in words)


def _from_error_code(code) -> ConnectorError:
    """A wasi:http error code as the failure it is, with its name as the reason."""
    name = _wit_name(code)
    if isinstance(code, wasi.ErrorCode_HttpRequestDenied):
        return ConnectorError("denied", "host not in allowed_hosts")
    if isinstance(code, wasi.ErrorCode_DestinationIpProhibited):
        return ConnectorError("denied", "destination address is prohibited")
    if isinstance(code, _TIMEOUTS):
        return ConnectorError("timeout", name)
    if isinstance(code, _CONNECT):
        return ConnectorError("connect", name)
    detail = getattr(code, "value", None)
    return ConnectorError("transport", name if detail is None else f"{name} {detail!r}")


class Connector(wit_world.WitWorld):
    """Base class of a connector's ``WitWorld``: implement ``describe`` and
    ``deliver``. A ``ConnectorError`` (or any exception) raised by
    ``deliver`` becomes an outcome (see ``outcome_from_error``), never a trap."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("deliver")
        if own is None:
            return

        def deliver(self, d: Delivery) -> Outcome:
            try:
                return own(self, d)
            except Exception as e:  # noqa: BLE001 — every failure becomes an outcome
                return outcome_from_error(e)

        deliver.__doc__ = own.__doc__
        cls.deliver = deliver
