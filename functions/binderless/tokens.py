"""Provider tokens stored in AWS: ``ssm:<parameter name>`` or ``secretsmanager:<secret id>``.

A token setting may name where the token lives instead of holding it. Only the
AWS mode reads them (the local mode creates no AWS client and says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .settings import Settings

__all__ = ["SECRET_FIELDS", "load_secrets"]

#: Provider tokens, the sign-in secrets (the OpenID Connect client secret, the key
#: that signs sign-in cookies) and the prebuild webhooks' secret.
SECRET_FIELDS = ("github_token", "gitlab_token", "oidc_client_secret", "auth_secret",
                 "webhook_secret")


def load_secrets(settings: Settings, client_factory: Callable[[str], Any] | None) -> Settings:
    """Replace ``ssm:``/``secretsmanager:`` references in token settings by their values.

    ``client_factory(service)`` makes a boto3 client; ``None`` in local mode.
    Raises ``ValueError`` naming the setting when a reference cannot be read.
    """
    values: dict[str, Any] = {}
    for name in SECRET_FIELDS:
        value: str = getattr(settings, name)
        scheme, sep, ref = value.partition(":")
        if not sep or scheme not in ("ssm", "secretsmanager"):
            continue
        if client_factory is None:
            raise ValueError(f"{name} refers to {scheme}:, which only the AWS mode reads; "
                             "set the token itself for the local mode")
        try:
            if scheme == "ssm":
                answer = client_factory("ssm").get_parameter(Name=ref, WithDecryption=True)
                values[name] = str(answer["Parameter"]["Value"])
            else:
                answer = client_factory("secretsmanager").get_secret_value(SecretId=ref)
                values[name] = str(answer["SecretString"])
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise ValueError(f"{name}: could not read {scheme}:{ref} ({code})") from exc
    return dataclasses.replace(settings, **values) if values else settings
