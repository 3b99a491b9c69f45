"""Generic moto fixtures for the AWS adapters: every AWS call of a test goes to moto, in process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws


@pytest.fixture
def region() -> str:
    return "us-east-1"


@pytest.fixture
def moto(region: str) -> Iterator[Any]:
    """The active ``mock_aws`` context; clients made while it is active talk to moto."""
    with mock_aws() as context:
        yield context
