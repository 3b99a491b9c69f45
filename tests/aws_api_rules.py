"""Rules of the real AWS APIs that moto does not enforce, as botocore event hooks.

``enforce_api_rules(client)`` makes a client (of moto, or with a ``Stubber``) refuse a
request the way AWS would, before it is sent, so a test against moto fails where a real
account would (REFERENCE section 4, "API rules moto does not enforce"). Each rule names
the API reference it comes from.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

__all__ = ["LIST_TASKS_FILTERS", "enforce_api_rules"]

#: ECS ListTasks: "When you specify startedBy as the filter, it must be the only filter
#: that you use" (API reference, ListTasks, startedBy). The cluster is the scope, and
#: maxResults / nextToken page; the rest filter.
LIST_TASKS_FILTERS = ("containerInstance", "family", "serviceName", "desiredStatus",
                      "launchType")
#: ECS RegisterTaskDefinition: ephemeralStorage.sizeInGiB is 21 to 200 (EphemeralStorage).
EPHEMERAL_GIB = (21, 200)


def _refuse(operation: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": "InvalidParameterException", "Message": message}},
                       operation)


def _list_tasks(params: dict[str, Any], **_: Any) -> None:
    extra = [name for name in LIST_TASKS_FILTERS if name in params]
    if "startedBy" in params and extra:
        raise _refuse("ListTasks", "startedBy must be the only filter; also given: "
                      + ", ".join(extra))


def _register_task_definition(params: dict[str, Any], **_: Any) -> None:
    size = (params.get("ephemeralStorage") or {}).get("sizeInGiB")
    if size is not None and not EPHEMERAL_GIB[0] <= size <= EPHEMERAL_GIB[1]:
        raise _refuse("RegisterTaskDefinition",
                      f"ephemeralStorage.sizeInGiB must be between {EPHEMERAL_GIB[0]} and "
                      f"{EPHEMERAL_GIB[1]}, not {size}")


def enforce_api_rules(client: Any) -> Any:
    """``client`` (returned) now refuses what AWS refuses and moto accepts."""
    events = client.meta.events
    events.register("before-parameter-build.ecs.ListTasks", _list_tasks)
    events.register("before-parameter-build.ecs.RegisterTaskDefinition",
                    _register_task_definition)
    return client
