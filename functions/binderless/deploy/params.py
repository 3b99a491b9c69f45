"""``--param KEY=VALUE``: checked against the service template before any AWS call."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import DeployError
from .plan import PLUMBING

__all__ = ["operator_parameters", "parse_params"]


def operator_parameters(template: Mapping[str, Any]) -> tuple[str, ...]:
    """The service stack's parameters an operator may set (all but the plumbing)."""
    return tuple(name for name in template.get("Parameters", {}) if name not in PLUMBING)


def parse_params(items: Iterable[str], template: Mapping[str, Any]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict, each checked as CloudFormation would check it."""
    declared = template.get("Parameters", {})
    allowed = operator_parameters(template)
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DeployError(f"--param takes KEY=VALUE, not {item!r}")
        if key in PLUMBING:
            raise DeployError(f"--param {key}: binderless deploy sets {key} itself")
        if key not in allowed:
            raise DeployError(f"--param {key}: the stack has no such parameter. It has: "
                              + ", ".join(sorted(allowed)))
        _check(key, value, declared[key])
        values[key] = value
    return values


def _check(key: str, value: str, spec: Mapping[str, Any]) -> None:
    choices = spec.get("AllowedValues")
    if choices is not None and value not in [str(c) for c in choices]:
        raise DeployError(f"--param {key}={value}: choose one of "
                          + ", ".join(str(c) for c in choices))
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        hint = spec.get("ConstraintDescription") or f"it must match {pattern}"
        raise DeployError(f"--param {key}={value!r} is not allowed: {hint}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise DeployError(f"--param {key}={value!r}: {key} is a number") from None
        low, high = spec.get("MinValue"), spec.get("MaxValue")
        if low is not None and number < float(low):
            raise DeployError(f"--param {key}={value}: the least is {low}")
        if high is not None and number > float(high):
            raise DeployError(f"--param {key}={value}: the most is {high}")
