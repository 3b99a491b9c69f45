"""A lean HTTP/1.1 forwarder from the session proxy to sessions' servers.

aiohttp's client does much more per request than a proxy needs (tracing hooks, a cookie
jar, redirects, URL building, a response object with a stream of its own): on a trivial
upstream it cost as much CPU as the rest of the proxy together, and it is most of why
the proxy served fewer requests per second than configurable-http-proxy. This module
keeps keep-alive connections per upstream (host, port), writes the request head itself
and reads the answer's head and framing (``Content-Length``, chunked, or until the
connection closes), nothing more.

Rules that keep one exchange from leaking into the next:

* a connection goes back to its pool only after a complete exchange that both ends
  keep alive, with the request sent whole and not one byte read past the answer;
  after an error, a partial answer, or an answer nobody read to its end, it is closed;
* no cap is shared between upstreams (one session's traffic never waits for another's);
  each keeps at most ``idle_per_upstream`` idle connections, none idle longer than
  ``idle_seconds``, and a connection its server closes leaves the pool at once;
* an idempotent request whose body is in memory, sent on a reused connection that the
  server closed before answering a single byte (it closed the idle connection as the
  request left), is sent once more on a new connection, as RFC 9112 section 9.3.1 allows.

Upstreams are sessions' own servers, so an answer the parser does not accept (a
malformed head, conflicting lengths, a broken chunk) is an ``UpstreamError`` (502 at
the proxy), never passed on.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["Exchange", "UpstreamError", "UpstreamPool", "parse_head"]

#: The longest answer head accepted from a session's server.
MAX_HEAD_BYTES = 64 * 1024
#: Reading from an upstream pauses while this much is received and not yet passed on.
READ_HIGH_WATER = 512 * 1024
#: Methods that may be sent again (RFC 9110 section 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [0-9]{3}(?: [^\r\n\x00]*)?")
#: Header lines: a token name, a colon, a value without NUL, CR or LF (so no obsolete
#: line folding either).
_HEADER_LINES = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*)*")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class UpstreamError(Exception):
    """The session's server could not be reached, or broke off or garbled its answer."""


class _Connection(asyncio.Protocol):
    """One connection to an upstream: bytes in a buffer, waited for with ``read``."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False

    # ----- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Heads and bodies go out in separate writes: never wait for an ACK between.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # half-closed is closed: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ----- used by an exchange ---------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The bytes received since the last call, waiting for some; ``b""`` once the
        connection is closed and everything was read."""
        if not self._buffer and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._drained is not None and not self._drained.done() and not self.closed:
            await self._drained

    @property
    def unread(self) -> bool:
        return bool(self._buffer)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self.pool.discard(self)


class UpstreamPool:
    """Keep-alive connections to sessions' servers, per (host, port); see the module."""

    def __init__(self, *, connect_timeout: float = 10.0, idle_seconds: float = 30.0,
                 idle_per_upstream: int = 256) -> None:
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self.idle_per_upstream = idle_per_upstream
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        #: Connections opened so far (tests and figures: how often one was reused).
        self.opened = 0

    def idle(self, host: str, port: int) -> int:
        """How many idle connections to ``host:port`` are kept."""
        return len(self._idle.get((host, port), ()))

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closed
            # Bytes that arrived while it sat idle (a body after a HEAD answer, an answer
            # to nothing) would be read as the next request's answer: never reuse it.
            if not conn.closed and not conn.unread and now - conn.idle_since < self.idle_seconds:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _open(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, key), *key),
                self.connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(f"cannot connect to {key[0]}:{key[1]}: "
                                f"{exc or type(exc).__name__}") from exc
        self.opened += 1
        return conn

    def release(self, conn: _Connection) -> None:
        """Keep ``conn`` for the next request to its upstream (it must be idle and
        complete: ``Exchange.release`` decides)."""
        if conn.closed or conn.unread:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        conn.idle_since = time.monotonic()
        idle.append(conn)
        # The oldest first: too many, or idle too long (the server may close them any time).
        while idle and (len(idle) > self.idle_per_upstream
                        or conn.idle_since - idle[0].idle_since >= self.idle_seconds):
            idle.pop(0).close()

    def discard(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    async def close(self) -> None:
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()

    async def send(self, host: str, port: int, method: str, head: bytes,
                   body: bytes | AsyncIterable[bytes] | None) -> Exchange:
        """Send a request and return once its answer's head has arrived.

        ``head`` is the request line and headers, without framing headers or the blank
        line that ends them (``request_head``); the framing follows ``body``: none, a
        ``Content-Length`` for bytes, chunked for a stream (sent on a new connection: a
        stream cannot be sent again). Raises ``UpstreamError``; exceptions ``body``
        raises pass through, after the connection is closed."""
        key = (host, port)
        replayable = not isinstance(body, AsyncIterable) and method in IDEMPOTENT
        conn = None if isinstance(body, AsyncIterable) else self._take(key)
        if conn is None:
            conn = await self._open(key)
        try:
            return await Exchange.start(conn, method, head, body)
        except _Unanswered:
            if not (conn.reused and replayable):
                raise UpstreamError("the session's server closed the connection without "
                                    "answering") from None
        conn = await self._open(key)
        try:
            return await Exchange.start(conn, method, head, body)
        except _Unanswered:
            raise UpstreamError("the session's server closed the connection without "
                                "answering") from None


class _Unanswered(UpstreamError):
    """The connection closed before a single byte of the answer."""


def request_head(method: str, target: str, host: str,
                 headers: list[tuple[bytes, bytes]]) -> bytes:
    """A request head without its framing headers and final blank line (``send``
    adds them). ``target`` is the path and query as received (percent-encoded)."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}".encode("utf-8", "surrogateescape")]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines)


@dataclass
class _Framing:
    #: "none", "length", "chunked" or "close" (until the server closes the connection).
    kind: str
    length: int = 0
    keep_alive: bool = True


def parse_head(data: bytes) -> tuple[int, str, list[tuple[str, str]], bool]:
    """Status, reason, headers (in order, repeated ones repeated) and whether the answer
    is HTTP/1.1, from an answer head without its final blank line. Raises
    ``UpstreamError`` for anything malformed: a bad status line, a NUL, a CR or LF not
    in a CRLF, obsolete line folding, a header name that is not a token."""
    status_end = data.find(b"\r\n")
    if status_end < 0:
        status_end = len(data)
    if _STATUS_LINE.fullmatch(data, 0, status_end) is None \
            or _HEADER_LINES.fullmatch(data, status_end) is None:
        raise UpstreamError(f"malformed answer head {data[:100]!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # a legacy value (a file name): keep it sendable
    lines = text.split("\r\n")
    version, code, reason = [*lines[0].split(" ", 2), ""][:3]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return int(code), reason, headers, version == "HTTP/1.1"


def _framing(method: str, status: int, headers: list[tuple[str, str]],
             http11: bool) -> _Framing:
    connection: list[str] = []
    encodings: list[str] = []
    lengths: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            lengths.add(value)
        elif lower == "transfer-encoding":
            encodings += [v.strip().lower() for v in value.split(",") if v.strip()]
        elif lower == "connection":
            connection += [v.strip().lower() for v in value.split(",")]
    keep_alive = http11 and "close" not in connection
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return _Framing("none", keep_alive=keep_alive)
    if encodings:
        # Chunked last or not understood: with a Content-Length too, the connection is
        # not trusted for another request (RFC 9112 section 6.3).
        return _Framing("chunked" if encodings[-1] == "chunked" else "close",
                        keep_alive=keep_alive and not lengths and encodings == ["chunked"])
    if lengths:
        (length,) = lengths if len(lengths) == 1 else (None,)
        if length is None or not length.isdigit() or len(length) > 18:
            raise UpstreamError(f"invalid Content-Length {sorted(lengths)!r}")
        return _Framing("length", int(length), keep_alive=keep_alive)
    return _Framing("close", keep_alive=False)


class _Dechunker:
    """Decodes a chunked body as it arrives (chunk extensions and trailers dropped)."""

    def __init__(self) -> None:
        self._state = "size"  # "size", "data", "data-end", "trailer"
        self._left = 0
        self._pending = b""
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """The body's bytes in ``data`` and, once the body ended, what followed it."""
        pieces: list[bytes] = []
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, end = 0, len(buf)
        while pos < end:
            if self._state == "data":
                take = min(self._left, end - pos)
                pieces.append(buf[pos:pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = "data-end"
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > 4096:
                    raise UpstreamError("chunk line too long")
                self._pending = buf[pos:]
                break
            line, pos = buf[pos:eol], eol + 2
            if self._state == "data-end":
                if line:
                    raise UpstreamError("chunk longer than its size")
                self._state = "size"
            elif self._state == "size":
                size = line.split(b";", 1)[0].strip(b" \t")
                if _CHUNK_SIZE.fullmatch(size) is None:
                    raise UpstreamError(f"invalid chunk size {line[:40]!r}")
                self._left = int(size, 16)
                self._state = "data" if self._left else "trailer"
            elif not line:  # the blank line after the trailers
                self.done = True
                return pieces, buf[pos:]
        return pieces, b""


class Exchange:
    """A request sent and its answer's head read; read the body with ``chunks`` or
    ``read_all``, then ``release`` (always: it closes what cannot be reused)."""

    def __init__(self, conn: _Connection, status: int, reason: str,
                 headers: list[tuple[str, str]], framing: _Framing, rest: bytes,
                 sent_whole: bool) -> None:
        self.status = status
        self.reason = reason
        #: As the server sent them, hop-by-hop ones included: the caller filters.
        self.headers = headers
        self._conn = conn
        self._framing = framing
        self._rest = rest
        self._reusable = framing.keep_alive and sent_whole
        self._complete = framing.kind == "none"
        self._released = False

    @property
    def length(self) -> int | None:
        """The body's length when the answer says it (0 when it has none)."""
        kind = self._framing.kind
        return self._framing.length if kind == "length" else 0 if kind == "none" else None

    @property
    def bodiless(self) -> bool:
        """The answer has no body (to HEAD, a 204, a 304)."""
        return self._framing.kind == "none"

    @classmethod
    async def start(cls, conn: _Connection, method: str, head: bytes,
                    body: bytes | AsyncIterable[bytes] | None) -> Exchange:
        sent_whole = True
        if body is None:
            conn.write(head + b"\r\n\r\n")
        elif isinstance(body, bytes):
            conn.write(b"%s\r\nContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        else:
            conn.write(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent_whole = False
            try:
                async for piece in body:
                    if conn.closed:
                        break  # the server answered early (or left): read what it said
                    if piece:
                        conn.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        await conn.drain()
                else:
                    conn.write(b"0\r\n\r\n")
                    sent_whole = not conn.closed
            except BaseException:
                conn.close()  # the upstream saw half a request: never reuse it
                raise
        try:
            return await cls._read_head(conn, method, sent_whole)
        except BaseException:
            conn.close()
            raise

    @classmethod
    async def _read_head(cls, conn: _Connection, method: str, sent_whole: bool) -> Exchange:
        data = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD_BYTES:
                    raise UpstreamError("answer head too long")
                more = await conn.read()
                if not more:
                    if data:
                        raise UpstreamError("connection closed within the answer head")
                    raise _Unanswered
                data += more
                continue
            status, reason, headers, http11 = parse_head(data[:end])
            data = data[end + 4:]
            if 100 <= status < 200:
                if status == 101:
                    raise UpstreamError("unexpected protocol switch")
                continue  # 100 Continue and other interim answers: the real one follows
            framing = _framing(method, status, headers, http11)
            return cls(conn, status, reason, headers, framing, data, sent_whole)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (de-chunked). Raises ``UpstreamError`` when the
        server breaks it off."""
        kind = self._framing.kind
        conn = self._conn
        if kind == "length":
            left = self._framing.length
            data, self._rest = self._rest, b""
            while left > 0:
                if not data:
                    data = await conn.read()
                    if not data:
                        raise UpstreamError(f"connection closed with {left} bytes of the "
                                            f"answer missing")
                if len(data) > left:
                    data = data[:left]
                    self._reusable = False  # more than it announced: not trusted again
                left -= len(data)
                yield data
                data = b""
        elif kind == "chunked":
            decoder = _Dechunker()
            data, self._rest = self._rest, b""
            while not decoder.done:
                if not data:
                    data = await conn.read()
                    if not data:
                        raise UpstreamError("connection closed within a chunked answer")
                pieces, extra = decoder.feed(data)
                data = b""
                if extra:
                    self._reusable = False
                for piece in pieces:
                    if piece:
                        yield piece
        elif kind == "close":
            if self._rest:
                yield self._rest
                self._rest = b""
            while data := await conn.read():
                yield data
        self._complete = True

    async def read_all(self) -> bytes:
        if self._framing.kind == "length" and len(self._rest) == self._framing.length:
            body, self._rest, self._complete = self._rest, b"", True  # the common case
            return body
        return b"".join([piece async for piece in self.chunks()])

    def release(self) -> None:
        """Done with the exchange: its connection is kept for another request if the
        exchange is complete and both ends keep it alive, closed otherwise."""
        if self._released:
            return
        self._released = True
        if self._complete and self._reusable and not self._rest:
            self._conn.pool.release(self._conn)
        else:
            self._conn.close()
