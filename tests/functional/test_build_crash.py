"""A build that crashes with an error binderless does not know (a bug in a builder, a full
disk) tells the visitor and the log what it was, in one line, never with a traceback.

The launch flow is the real one; the builder is ``launch_fakes``'s stand-in, made to fail."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from binderless.backends.protocols import ImageRef, LogSink
from binderless.envplan import EnvironmentPlan
from binderless.phases import Phase
from binderless.service import describe_exception
from tests.conftest import FIXTURE_REPOS, file_spec, make_git_repo
from tests.functional.launch_fakes import FakeBuilder, Gate, Rig


class CrashingBuilder(FakeBuilder):
    """Fails every build with an error no builder translates."""

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        log("building\n")
        raise OSError(28, "No space left on device\n  while writing layer 3")


def test_describe_exception_is_one_line_with_type_and_message() -> None:
    assert describe_exception(ValueError("bad\n\n value")) == "ValueError: bad value"
    assert describe_exception(KeyError()) == "KeyError"
    long = describe_exception(RuntimeError("x" * 1000), limit=50)
    assert long.startswith("RuntimeError: xxx") and len(long) == len("RuntimeError: ") + 50


def test_an_unexpected_build_crash_names_its_error_in_the_event_and_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = file_spec(make_git_repo(FIXTURE_REPOS / "python-requirements", tmp_path / "repo"))
    rig = Rig(tmp_path)
    rig.builder = CrashingBuilder(Gate())
    rig.service.builder = rig.builder

    async def scenario() -> None:
        async with rig.running():
            launch = rig.launch(spec)
            final = await rig.final(launch)
            assert final.phase is Phase.FAILED
            assert "The build stopped unexpectedly" in final.message
            assert "OSError: [Errno 28] No space left on device while writing layer 3" \
                in final.message
            assert "Traceback" not in final.message

    with caplog.at_level(logging.WARNING, logger="binderless.service"):
        asyncio.run(scenario())
    [line] = [r for r in caplog.records if "stopped unexpectedly" in r.getMessage()]
    assert "OSError: [Errno 28] No space left on device while writing layer 3" in \
        line.getMessage()
    assert line.exc_info is None  # one line, no traceback
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("binderless"))
