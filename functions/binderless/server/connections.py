"""The server's listening sockets and its client connections.

aiohttp's web server closes idle keep-alive connections (``keepalive_timeout``, here
``idle_connection_seconds``) and limits header sizes, but it has no cap on open
connections, no deadline for a request head that never completes (slowloris), and it
leaves accepting to asyncio, whose accept loop (Python 3.11) logs a traceback and
schedules another retry for every failed ``accept()`` once the process runs out of file
descriptors: a million log lines a minute and a loop too busy to answer anyone. So this
module accepts connections itself:

* at most ``max_connections`` client connections are open; at the cap the connection
  idle the longest (no request in progress: never sent a full request head, or kept
  alive between requests) is closed to make room, and if every connection is busy the
  next one waits in the kernel's queue until one ends;
* a connection that has not sent a complete request head ``header_timeout_seconds``
  after it was accepted is closed (later heads on a kept-alive connection are bounded by
  the idle timeout, which aiohttp starts when the previous response ends);
* running out of descriptors sheds idle connections and pauses accepting briefly, with
  one log line a minute, never a traceback per attempt.

Each connection starts on the session proxy's fast path (``fastpath.py``) when the
application has one: plain requests to sessions are served there, and the connection is
handed to aiohttp's ``RequestHandler`` for anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..settings import Settings
from .fastpath import FAST_PATH_KEY, FastConnection

__all__ = ["ConnectionGuard", "Listener", "QuietExceptionHandler", "connection_cap",
           "raise_open_files_limit", "start_listener"]

log = logging.getLogger("binderless.connections")

#: accept() errors that mean "out of descriptors or memory", not "this client failed".
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long accepting pauses after running out of descriptors.
ACCEPT_RETRY_SECONDS = 0.25
#: Kernel queue of connections not yet accepted.
LISTEN_BACKLOG = 1024


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one (many systems start processes at
    1,024 with a far higher hard limit) and return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """The client connections allowed at once: ``configured``, or (0) derived from the
    open-files limit. A proxied connection may hold a second descriptor to its session's
    server, and the rest of the process (sessions' pipes and logs, the database, builds,
    outgoing requests) keeps a fifth of the limit, at least 100."""
    if configured > 0:
        return configured
    reserve = max(100, open_files // 5)
    return max(16, (open_files - reserve) // 2)


class QuietExceptionHandler:
    """An event-loop exception handler that logs each kind of error at most once per
    ``interval`` seconds (with a count of the ones left out) and without a traceback for
    resource exhaustion, which is a state, not a bug."""

    def __init__(self, interval: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        key = f"{context.get('message', '')}|{type(exc).__name__ if exc else ''}"
        now = self.clock()
        if key in self._last and now - self._last[key] < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        note = f" ({skipped} more like it since the last report)" if skipped else ""
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            log.warning("%s: %s%s", context.get("message", "event loop error"), exc, note)
        else:
            loop.default_exception_handler(
                {**context, "message": str(context.get("message", "")) + note})


class Tracked(Protocol):
    """What the guard needs of a connection's protocol (aiohttp's ``RequestHandler``, or a
    ``FastConnection``): its transport (``None`` once closed) and a way to close it."""

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...

    def force_close(self) -> None: ...


@dataclass
class _Connection:
    accepted: float
    #: When the last request ended (or the connection was accepted).
    idle_since: float
    started: bool = False
    active: int = 0


class ConnectionGuard:
    """Tracks the server's client connections (see the module's docstring).

    ``factory`` makes the protocol of one connection (``runner.server``, or a
    ``FastConnection``); ``middleware`` must be in the application, so the guard knows
    which connections are in the middle of a request (a ``FastConnection`` reports its
    own requests: ``started``, ``finished``)."""

    def __init__(self, factory: Callable[[], Tracked], *, max_connections: int,
                 header_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.factory = factory
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.clock = clock
        self._open: dict[Tracked, _Connection] = {}
        #: aiohttp's protocols of fast connections handed over, to their state.
        self._aliases: dict[RequestHandler, _Connection] = {}
        self._freed = asyncio.Event()
        self._accepted = 0
        #: Connections closed to make room (at the cap, or out of descriptors).
        self.evicted = 0

    def __len__(self) -> int:
        self._prune()
        return len(self._open)

    def protocol(self) -> Tracked:
        """A new connection's protocol, tracked from now on."""
        handler = self.factory()
        now = self.clock()
        self._accepted += 1
        if self._accepted % 256 == 0:
            self._prune()  # now and then, so closed connections are not kept
        self._open[handler] = _Connection(accepted=now, idle_since=now)
        asyncio.get_running_loop().call_later(self.header_timeout, self._head_deadline,
                                              handler)
        return handler

    def _head_deadline(self, handler: Tracked) -> None:
        state = self._open.get(handler)
        if state is None:
            return
        if handler.transport is None:
            self._forget(handler)  # already closed
        elif not state.started:
            handler.force_close()  # no complete request head in time
            self._forget(handler)

    def _forget(self, handler: Tracked) -> None:
        if self._open.pop(handler, None) is not None:
            self._freed.set()

    def _prune(self) -> None:
        for handler in [h for h in self._open if h.transport is None]:
            self._forget(handler)
        for alias in [h for h in self._aliases if h.transport is None]:
            del self._aliases[alias]

    # ----- reported by a FastConnection ---------------------------------------------------

    def started(self, conn: Tracked) -> _Connection | None:
        """``conn`` began serving a request (its head is complete)."""
        state = self._open.get(conn)
        if state is not None:
            state.started = True
            state.active += 1
        return state

    def finished(self, state: _Connection) -> None:
        state.active -= 1
        state.idle_since = self.clock()

    def handed_over(self, conn: Tracked, handler: RequestHandler) -> None:
        """``conn``'s requests are ``handler``'s from now on (seen by ``middleware``)."""
        state = self._open.get(conn)
        if state is not None:
            self._aliases[handler] = state

    def closed(self, conn: Tracked) -> None:
        self._forget(conn)

    def fast_connections(self) -> list[FastConnection]:
        """Open connections still on the fast path."""
        return [c for c in self._open if isinstance(c, FastConnection) and c.handler is None]

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         ) -> web.StreamResponse:
        state = self._open.get(request.protocol) or self._aliases.get(request.protocol)
        if state is None:
            return await handler(request)
        state.started = True
        state.active += 1
        try:
            return await handler(request)
        finally:
            state.active -= 1
            state.idle_since = self.clock()

    def shed(self, count: int = 1) -> int:
        """Close up to ``count`` idle connections, those idle longest first (a connection
        that never sent a request head before one kept alive between requests)."""
        self._prune()
        idle = [(state.started, state.idle_since, handler)
                for handler, state in self._open.items() if state.active == 0]
        idle.sort(key=lambda item: (item[0], item[1]))
        for _, _, handler in idle[:count]:
            handler.force_close()
            self._forget(handler)
        self.evicted += min(count, len(idle))
        return min(count, len(idle))

    async def room(self) -> None:
        """Return once another connection may be accepted."""
        while len(self) >= self.max_connections:
            if self.shed():
                return
            self._freed.clear()
            # Closed connections are noticed when pruned: look again now and then.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 0.1)


class Listener:
    """Listening sockets that accept through a ``ConnectionGuard``."""

    def __init__(self, runner: web.AppRunner, guard: ConnectionGuard,
                 sockets: list[socket.socket]) -> None:
        self.runner = runner
        self.guard = guard
        self.sockets = sockets
        self._tasks = [asyncio.create_task(self._accept(sock)) for sock in sockets]
        self._exhausted_at = -1e9

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.guard.room()
            try:
                conn, _ = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRNOS:
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                        continue  # that client gave up; the next may not
                    raise
                self._exhausted(exc)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            try:
                await loop.connect_accepted_socket(self.guard.protocol, conn)  # type: ignore[type-var]
            except OSError:
                conn.close()

    def _exhausted(self, exc: OSError) -> None:
        now = self.guard.clock()
        shed = self.guard.shed(max(1, len(self.guard) // 10))
        if now - self._exhausted_at >= 60.0:
            self._exhausted_at = now
            log.warning("out of file descriptors (%s) with %d client connections open: "
                        "closed %d idle ones; raise the open-files limit (ulimit -n) or "
                        "lower max_connections", exc.strerror, len(self.guard), shed)

    async def close(self) -> None:
        """Stop accepting, then close the connections and the application."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self.sockets:
            sock.close()
        for conn in self.guard.fast_connections():
            conn.force_close()  # aiohttp's cleanup closes the rest
        await self.runner.cleanup()


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str | int]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and sockets[1:]:  # every address on the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def start_listener(app: web.Application, settings: Settings, *,
                         port: int | None = None) -> Listener:
    """Serve ``app`` on ``settings.host`` and ``port`` (default ``settings.port``; 0: any
    free port) with the connection limits of ``settings``. Raises ``OSError`` when the
    address is taken. ``Listener.close()`` stops it."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietExceptionHandler())
    cap = connection_cap(settings.max_connections, raise_open_files_limit())

    def handler() -> RequestHandler:
        assert runner.server is not None
        return runner.server()

    fast = app.get(FAST_PATH_KEY)

    def protocol() -> Tracked:
        if fast is None or not fast.enabled:
            return handler()
        return FastConnection(fast, handler, guard, settings.idle_connection_seconds)

    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                           keepalive_timeout=settings.idle_connection_seconds)
    guard = ConnectionGuard(protocol, max_connections=cap,
                            header_timeout=settings.header_timeout_seconds)
    app.middlewares.insert(0, guard.middleware)
    await runner.setup()
    try:
        sockets = _listening_sockets(settings.host, settings.port if port is None else port)
    except OSError:
        await runner.cleanup()
        raise
    # What start-up allocated (modules, the application, settings) lives as long as the
    # process: the collector need not walk it again on every full collection.
    gc.freeze()
    log.debug("accepting up to %d client connections", cap)
    return Listener(runner, guard, sockets)
