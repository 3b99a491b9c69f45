"""The lean forwarder (``binderless.server.forward``) against a scripted upstream: keep-alive
reuse, framing (length, chunked, until close, none), answers cut short or garbled, and
connections never reused after anything but a complete exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from binderless.server.forward import Exchange, UpstreamError, UpstreamPool, request_head

#: What the scripted upstream answers to one request (its head and body): the bytes to
#: send, and whether to close the connection after them.
Script = Callable[[bytes, bytes], tuple[bytes, bool]]


@dataclass
class Upstream:
    """A raw HTTP/1.1 server that answers each request as ``script`` says."""

    script: Script
    port: int = 0
    #: How long to wait before closing a connection the script closes.
    close_delay: float = 0.0
    connections: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lower = head.lower()
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in lower:
                    while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)):
                        body += await reader.readexactly(size)
                        await reader.readexactly(2)
                    await reader.readuntil(b"\r\n")
                self.requests.append((head, body))
                answer, close = self.script(head, body)
                writer.write(answer)
                await writer.drain()
                if close:
                    await asyncio.sleep(self.close_delay)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(script: Script, scenario: Callable[[UpstreamPool, Upstream], Awaitable[None]],
        close_delay: float = 0.0) -> Upstream:
    upstream = Upstream(script, close_delay=close_delay)

    async def main() -> None:
        server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        upstream.port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool()
        try:
            await asyncio.wait_for(scenario(pool, upstream), 20)
        finally:
            await pool.close()
            server.close()
            for writer in upstream.writers:
                writer.close()
            await asyncio.sleep(0.01)  # the handlers see their connections end
            await server.wait_closed()

    asyncio.run(main())
    return upstream


def head(method: str = "GET", path: str = "/x") -> bytes:
    return request_head(method, path, "upstream", [(b"X-Test", b"1")])


async def get(pool: UpstreamPool, upstream: Upstream, method: str = "GET",
              body: bytes | AsyncIterator[bytes] | None = None) -> tuple[Exchange, bytes]:
    exchange = await pool.send("127.0.0.1", upstream.port, method, head(method), body)
    try:
        data = await exchange.read_all()
    finally:
        exchange.release()
    return exchange, data


def ok(body: bytes = b"hello", extra: bytes = b"") -> Script:
    return lambda head, _: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                            % (len(body), extra, body), False)


def test_a_kept_alive_connection_is_reused() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        for _ in range(3):
            exchange, data = await get(pool, upstream)
            assert (exchange.status, data) == (200, b"hello")
        assert pool.opened == 1

    upstream = run(ok(), scenario)
    assert upstream.connections == 1
    first_head = upstream.requests[0][0]
    assert first_head.startswith(b"GET /x HTTP/1.1\r\nHost: upstream\r\nX-Test: 1\r\n\r\n")


def test_chunked_answers_are_decoded_whatever_the_pieces() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        for _ in range(2):
            exchange, data = await get(pool, upstream)
            assert exchange.length is None
            assert data == b"hello 0123456789"
        assert pool.opened == 1  # the trailer's end is the answer's end: reused

    run(lambda *_: (chunked, False), scenario)


def test_chunked_body_arriving_a_byte_at_a_time() -> None:
    from binderless.server.forward import _Dechunker

    encoded = b"3\r\nabc\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\nNEXT"
    decoder, out, extra = _Dechunker(), b"", b""
    for i in range(len(encoded)):
        pieces, extra = decoder.feed(encoded[i:i + 1])
        out += b"".join(pieces)
        if decoder.done:
            extra += encoded[i + 1:]
            break
    assert (out, extra) == (b"abc" + b"x" * 16, b"NEXT")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",  # cut short
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",  # chunk cut short
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
])
def test_answers_broken_off_or_garbled_mid_body_raise(answer: bytes) -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        with pytest.raises(UpstreamError):
            await get(pool, upstream)
        assert pool.idle("127.0.0.1", upstream.port) == 0

    run(lambda *_: (answer, True), scenario)


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: 1",  # closed within the head
    b"",  # closed without a word
])
def test_malformed_or_missing_heads_are_upstream_errors(answer: bytes) -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        with pytest.raises(UpstreamError):
            await pool.send("127.0.0.1", upstream.port, "GET", head(), None)

    run(lambda *_: (answer, True), scenario)


def test_connections_are_not_reused_after_anything_but_a_complete_exchange() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        # The head read, the body not: the next request must not read its rest.
        exchange = await pool.send("127.0.0.1", upstream.port, "GET", head(), None)
        exchange.release()
        _, data = await get(pool, upstream)
        assert data == b"x" * 1000
        assert pool.opened == 2

    run(ok(b"x" * 1000), scenario)


def test_bytes_past_the_announced_length_end_the_connection() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        _, data = await get(pool, upstream)
        assert data == b"abc"
        await asyncio.sleep(0.05)
        _, data = await get(pool, upstream)
        assert data == b"abc"
        assert pool.opened == 2

    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n"
    run(lambda *_: (smuggled, False), scenario)


def test_close_framing_and_connection_close_are_never_reused() -> None:
    answers = iter([
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ])

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        assert (await get(pool, upstream))[1] == b"ok"
        assert (await get(pool, upstream))[1] == b"until the end"
        assert (await get(pool, upstream))[1] == b"ok"
        assert pool.opened == 3

    run(lambda *_: next(answers), scenario)


def test_interim_answers_are_skipped_and_head_answers_have_no_body() -> None:
    def script(request: bytes, _: bytes) -> tuple[bytes, bool]:
        if request.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", False
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        exchange, data = await get(pool, upstream, "HEAD")
        assert (exchange.status, exchange.bodiless, data) == (200, True, b"")
        assert ("Content-Length", "5000") in exchange.headers
        exchange, data = await get(pool, upstream)
        assert (exchange.status, data) == (204, b"")
        assert pool.opened == 1

    run(script, scenario)


def test_bodies_are_sent_with_their_length_or_chunked() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"one ", b"", b"two"):
            yield piece

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        await get(pool, upstream, "PUT", b"x" * 70)
        await get(pool, upstream, "POST", pieces())

    upstream = run(lambda head, body: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                       % (len(body), body), False), scenario)
    (put_head, put_body), (post_head, post_body) = upstream.requests
    assert b"Content-Length: 70\r\n" in put_head and put_body == b"x" * 70
    assert b"Transfer-Encoding: chunked\r\n" in post_head and post_body == b"one two"


def test_a_connection_closed_while_idle_is_retried_only_when_safe() -> None:
    # The server closes a kept-alive connection as the next request arrives, without a
    # word: an idempotent request is sent again on a new connection; a POST is not.
    def script(request: bytes, _: bytes) -> tuple[bytes, bool]:
        if upstream_state["answered"]:
            upstream_state["answered"] = False
            return b"", True
        upstream_state["answered"] = True
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False

    upstream_state = {"answered": False}

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        await get(pool, upstream)
        assert (await get(pool, upstream, "PUT", b"data"))[1] == b"ok"  # sent again
        with pytest.raises(UpstreamError):
            await get(pool, upstream, "POST", b"data")

    upstream = run(script, scenario)
    assert [r[0].split(b" ")[0] for r in upstream.requests] == [b"GET", b"PUT", b"PUT", b"POST"]


def test_an_upstream_that_is_not_there_is_an_upstream_error() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.send("127.0.0.1", 1, "GET", head(), None)

    run(ok(), scenario)


def test_idle_connections_closed_by_their_server_leave_the_pool() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        await get(pool, upstream)
        assert pool.idle("127.0.0.1", upstream.port) == 1
        for _ in range(100):
            if pool.idle("127.0.0.1", upstream.port) == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.idle("127.0.0.1", upstream.port) == 0

    # Connection: close is not announced: the server just closes, a little later.
    run(lambda *_: (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True), scenario,
        close_delay=0.2)


def test_bytes_arriving_while_a_connection_is_idle_never_reach_the_next_request() -> None:
    """An upstream that sends bytes after a complete answer (a body after its answer to
    HEAD, an answer to nothing) leaves them on the kept-alive connection once it is back in
    the pool: the next request must get a fresh connection and its own answer, never the
    leftover bytes read as one."""
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        exchange, data = await get(pool, upstream)
        assert (exchange.status, data) == (200, b"hello")
        upstream.writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
        await upstream.writers[0].drain()
        await asyncio.sleep(0.05)  # the late bytes reach the idle connection
        exchange, data = await get(pool, upstream)
        assert (exchange.status, data) == (200, b"hello")
        assert pool.opened == 2

    upstream = run(ok(), scenario)
    assert len(upstream.requests) == 2
