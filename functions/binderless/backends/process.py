"""Run a child process and stream its output lines to a log sink."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .protocols import LogSink

__all__ = ["ProcessFailed", "process_exists", "stream_process"]


class ProcessFailed(Exception):
    def __init__(self, cmd: Sequence[str], returncode: int | None, tail: list[str]) -> None:
        super().__init__(f"{cmd[0]} exited with {returncode}")
        self.returncode = returncode
        self.tail = tail


async def stream_process(
    cmd: Sequence[str],
    *,
    log: LogSink,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800.0,
) -> None:
    """Run ``cmd``; each line of its output (stdout and stderr) goes to ``log``.

    Raises ``ProcessFailed`` (with the last lines) on a non-zero exit or a timeout.
    """
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    tail: list[str] = []
    assert proc.stdout is not None

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            # Progress bars redraw with carriage returns: keep the last state only.
            line = line.rsplit("\r", 1)[-1]
            tail.append(line)
            del tail[:-40]
            log(line + "\n")
        await proc.wait()

    try:
        await asyncio.wait_for(pump(), timeout=timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        tail.append(f"(stopped after {timeout:.0f} seconds)")
        raise ProcessFailed(cmd, None, tail) from None
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ProcessFailed(cmd, proc.returncode, tail)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 9)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts; a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
