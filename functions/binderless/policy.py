"""Operator policy: which specs may launch, and how many sessions each may have.

Patterns are regular expressions matched (case-insensitively, from the start)
against the spec, as BinderHub does; a pattern written ``<prefix>:<regex>``
applies to one provider only (``gh:^evil-org/``). ``spec_quotas`` entries are
``<pattern>=<sessions>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import SpecNotAllowed
from .settings import Settings

__all__ = ["SpecPolicy", "quota_for"]


def _matches(pattern: str, prefix: str, spec: str) -> bool:
    scope, sep, regex = pattern.partition(":")
    if sep and re.fullmatch(r"[a-z0-9]+", scope):
        if scope != prefix:
            return False
    else:
        regex = pattern
    try:
        return any(re.match(regex, s, re.IGNORECASE) for s in (spec, unquote(spec)))
    except re.error:
        return False


@dataclass(frozen=True)
class SpecPolicy:
    settings: Settings

    def check(self, prefix: str, spec: str) -> None:
        """Raise ``SpecNotAllowed`` when policy refuses ``prefix/spec``."""
        allowed = self.settings.allowed_providers
        if allowed and prefix not in allowed:
            raise SpecNotAllowed(
                f"Launching from {prefix!r} repositories is not enabled on this server.",
                hint=f"Enabled here: {', '.join(allowed)}.",
            )
        if any(_matches(p, prefix, spec) for p in self.settings.banned_specs) or (
            self.settings.allowed_specs
            and not any(_matches(p, prefix, spec) for p in self.settings.allowed_specs)
        ):
            raise SpecNotAllowed(
                f"Sorry, {spec} is not allowed to launch. Please contact admins for more info!"
            )

    def quota(self, prefix: str, spec: str) -> int:
        """Sessions one repository may run at once under this policy."""
        return quota_for(self.settings, prefix, spec)


def quota_for(settings: Settings, prefix: str, spec: str) -> int:
    for entry in settings.spec_quotas:
        pattern, _, number = entry.rpartition("=")
        if pattern and number.strip().isdigit() and _matches(pattern.strip(), prefix, spec):
            return int(number)
    if any(_matches(p, prefix, spec) for p in settings.high_quota_specs):
        return settings.high_quota
    return settings.max_sessions_per_repo
