"""An in-process ``binderless`` server on a free port, with injectable backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from binderless.server import create_app
from binderless.service import LaunchService
from tests.conftest import free_port


@contextmanager
def serve_in_thread(service: LaunchService) -> Iterator[str]:
    with serving(service) as (base, _loop):
        yield base


@contextmanager
def serving(service: LaunchService) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """The server's base URL, and the event loop it (and so the service) runs on."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(service))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", loop
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
