"""Generic moto fixtures for the AWS adapters: every AWS call of a test goes to moto, in process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend


@pytest.fixture
def region() -> str:
    return "us-east-1"


@pytest.fixture
def moto(region: str) -> Iterator[Any]:
    """The active ``mock_aws`` context; clients made while it is active talk to moto."""
    with mock_aws() as context:
        yield context


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks a write's condition and then writes, with no lock: two threads can both
    pass the check (DynamoDB never lets them). Serialise moto's writes so that the tests of
    concurrent writers test our code, not moto's race."""
    lock = threading.Lock()
    for name in ("put_item", "update_item"):
        original = getattr(DynamoDBBackend, name)

        def locked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)
