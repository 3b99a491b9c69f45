"""The time estimate the loading page shows, from earlier launches of the same environment."""

from __future__ import annotations

from typing import Any

import pytest

from binderless.errors import LaunchNotFound
from binderless.estimate import SAMPLES, launch_estimate

LAUNCH = "0123456789abcdef0123456789abcdef"


class History:
    """A store's launch records and durations, recording what the estimate asks."""

    def __init__(self, launch: dict[str, Any] | None, durations: list[float]) -> None:
        self.launch = launch
        self.durations = durations
        self.asked: list[tuple[str, bool, int]] = []

    def get_launch(self, launch_id: str) -> dict[str, Any] | None:
        return self.launch if launch_id == LAUNCH else None

    def launch_durations(self, image_key: str, built: bool, limit: int = 10) -> list[float]:
        self.asked.append((image_key, built, limit))
        return self.durations


def launch(**fields: Any) -> dict[str, Any]:
    return {"launch_id": LAUNCH, "phase": "building", "image_key": "k1", "built": 1,
            "created_at": 1000.0, **fields}


def test_the_median_of_earlier_launches_less_the_time_gone() -> None:
    store = History(launch(), [30.0, 50.0, 40.0])
    estimate = launch_estimate(store, LAUNCH, now=1010.0)
    assert store.asked == [("k1", True, SAMPLES)]
    assert estimate == {
        "launch_id": LAUNCH, "phase": "building", "image_key": "k1", "built": True,
        "samples": 3, "typical_seconds": 40.0, "elapsed_seconds": 10.0,
        "remaining_seconds": 30.0,
    }


def test_a_launch_that_found_its_environment_asks_for_such_launches() -> None:
    store = History(launch(built=0, phase="built"), [2.5, 3.5])
    estimate = launch_estimate(store, LAUNCH, now=1001.0)
    assert store.asked == [("k1", False, SAMPLES)]
    assert estimate["typical_seconds"] == 3.0 and estimate["remaining_seconds"] == 2.0


def test_time_left_never_goes_below_zero() -> None:
    estimate = launch_estimate(History(launch(), [20.0]), LAUNCH, now=1100.0)
    assert estimate["remaining_seconds"] == 0.0 and estimate["elapsed_seconds"] == 100.0


@pytest.mark.parametrize("durations", [[], [-1.0]])
def test_no_earlier_launch_no_estimate(durations: list[float]) -> None:
    estimate = launch_estimate(History(launch(), durations), LAUNCH, now=1005.0)
    assert estimate["samples"] == 0
    assert estimate["typical_seconds"] is None and estimate["remaining_seconds"] is None


def test_before_the_environment_is_known_nothing_is_asked() -> None:
    store = History(launch(image_key="", built=0, phase="fetching"), [10.0])
    estimate = launch_estimate(store, LAUNCH, now=1001.0)
    assert store.asked == []
    assert estimate["image_key"] is None and estimate["remaining_seconds"] is None


@pytest.mark.parametrize("launch_id", ["ffffffffffffffffffffffffffffffff", "../etc", "X" * 500, ""])
def test_unknown_or_malformed_launches_are_not_found(launch_id: str) -> None:
    with pytest.raises(LaunchNotFound) as caught:
        launch_estimate(History(launch(), [1.0]), launch_id, now=1001.0)
    assert caught.value.status_code == 404
    assert len(caught.value.message) < 120
