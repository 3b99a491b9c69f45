"""All AWS-mode state in one DynamoDB table: launches, sessions and their routes, event
streams and build claims.

``DynamoState`` implements ``Store``, ``RouteTable``, ``EventLog`` and ``BuildClaims`` with
the semantics of the SQLite backend, so that several gateway processes can share it.

Item layout. Every key is a string; ``gsi1`` (``gsi1pk``/``gsi1sk``, all attributes
projected) is sparse and lists items by a group derived from their state::

    item           pk                    sk            gsi1pk / gsi1sk
    launch         LAUNCH#<launch_id>    LAUNCH        LAUNCHES#UNFINISHED / <created>#<id>
                                                         while not ready or failed;
                                                       LAUNCHES#READY#<built>#<image_key> /
                                                         <created>#<id> once ready;
                                                       none once failed
    session        SESSION#<session_id>  SESSION       SESSIONS#active / <status>#<session_id>
                                                         while starting or running;
                                                       SESSIONS#stopped / <session_id> after
    event          EVENTS#<stream>       <seq>         none
    build claim    BUILD#<key>           BUILD         none
    webhook        DELIVERY#<key>        DELIVERY      none (expires after its TTL)
    environment    ENV#<key>             ENV           ENVIRONMENTS / <key>
    its repo use   ENV#<key>             REPO#<sha256> none
    session quota  QUOTA#sessions        QUOTA         none
    repo quota     QUOTA#repo#<sha256>   QUOTA         none

* ``<seq>`` is the sequence number zero-padded to 10 digits, so that the string order of
  the sort key is the numeric order; items also carry ``seq`` as a number and the event as
  ``data``, the JSON text the SQLite backend stores too.
* ``<created>`` is ``created_at`` as a zero-padded fixed-point string, for the same reason.
* The route of a session lives on its session item (``target``, ``token``, ``owner``,
  ``status = running``), as in the SQLite backend.
* Numbers are DynamoDB numbers written from the exact decimal form of the float
  (``Decimal(repr(x))``); ``None`` is never stored: the attribute is left out (``REMOVE``
  on update) and reads give ``None`` back.
* ``expires_at`` (``TTL_ATTRIBUTE``, epoch seconds) is set to ``now + finished_ttl`` on
  launches once ``ready`` or ``failed``, on stopped sessions, on finished build claims,
  and on every event when it is written (no stream lives anywhere near that long).
  DynamoDB deletes such items some time after that moment.

Writes of a launch started in this process are held in memory and sent together, in one
``TransactWriteItems`` call: when the service asks (``flush``, before it starts anything
that costs money), when a final event ends the stream, and when the oldest held write is
``flush_after`` seconds old. Followers in this process read held events from memory at
once; other processes see them after the flush. This keeps a launch to a handful of
calls (see ``bench/aws_calls.py``).

Reads of single items and of event streams are strongly consistent. Listings through the
index (``sessions``, ``count_active``, ``unfinished_launches``, ``launch_durations``) are
eventually consistent, as every global secondary index is: a write shows there within
about a second.

Quotas. The two quota items count the sessions starting or running (``active``): in all,
and of one repository (keyed by the SHA-256 of its URL, which it also holds). A launch
reserves its session with one ``TransactWriteItems`` call: both counters go up only if
they are below their limits, and the session item (marked ``counted``) is put, so that
simultaneous launches cannot all pass a check made before the write. The counters go
down in the same transaction that moves a ``counted`` session out of starting/running and
removes the mark, so each reservation is released exactly once. DynamoDB cancels a
transaction that meets a concurrent one on the same item (``TransactionConflict``): it
is tried again after a short random pause.

Errors of the AWS SDK become ``StateUnavailable`` (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, cast

from ..backends.protocols import (
    BuildClaim,
    EnvironmentRecord,
    RepoUse,
    Reservation,
    Route,
    SessionRecord,
)
from ..errors import SessionNotFound, StateUnavailable
from ..events import Event
from ._errors import error_code

__all__ = ["GSI1", "TTL_ATTRIBUTE", "DynamoState", "table_definition"]

log = logging.getLogger("binderless.aws.dynamodb")

TTL_ATTRIBUTE = "expires_at"
GSI1 = "gsi1"

_FINISHED_PHASES = frozenset({"ready", "failed"})
_ACTIVE = ("starting", "running")
_UNFINISHED = "LAUNCHES#UNFINISHED"
_ACTIVE_SESSIONS = "SESSIONS#active"
_SEQ_DIGITS = 10
# An item may hold 400 KB; a longer build log line is cut rather than refused.
_MAX_EVENT_BYTES = 350_000
_MAX_APPEND_ATTEMPTS = 100
_MAX_CACHED_STREAMS = 10_000
# TransactWriteItems takes at most 100 writes and 4 MB; stay clear of the size limit.
_TRANSACTION_ITEMS = 100
_TRANSACTION_BYTES = 3_000_000
_MAX_FLUSH_ATTEMPTS = 5
# Streams of finished launches stay readable from memory this long (and at most this many).
_RECENT_SECONDS = 300.0
_MAX_RECENT = 1000

Item = dict[str, dict[str, Any]]

# Launch attributes besides its id, with their type and the value of a new launch.
_LAUNCH_FIELDS: dict[str, tuple[type, Any]] = {
    "provider": (str, ""),
    "spec": (str, ""),
    "resolved_ref": (str, ""),
    "image_key": (str, ""),
    "phase": (str, "waiting"),
    "session_id": (str, ""),
    "built": (int, 0),
    "created_at": (float, None),
    "finished_at": (float, None),
    "request": (str, ""),
    "driver": (str, ""),
    "lease_until": (float, None),
}
_SESSION_FLOATS = frozenset({"created_at", "last_activity", "stopped_at"})
_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionRecord))
_BUILD_STATUSES = frozenset({"building", "built", "failed"})
_QUOTA_SK = "QUOTA"
_SERVER_QUOTA = "QUOTA#sessions"
_COUNTED = "counted"
# Transactions on the quota counters that meet a concurrent one are tried again this many
# times, after a random pause of up to _CONFLICT_PAUSE * attempt seconds (at most
# _MAX_CONFLICT_PAUSE): a burst of launches takes turns on the two counter items.
_MAX_QUOTA_ATTEMPTS = 25
_CONFLICT_PAUSE = 0.05
_MAX_CONFLICT_PAUSE = 0.5
_CONDITION_FAILED = "ConditionalCheckFailed"
_CONFLICT = "TransactionConflict"


def table_definition(table_name: str) -> dict[str, Any]:
    """The ``CreateTable`` arguments of the state table (the templates mirror them).

    Enable TTL on ``TTL_ATTRIBUTE`` after creating it (``UpdateTimeToLive``).
    """
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": GSI1,
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "SSESpecification": {"Enabled": True},
    }


# ----- attribute values --------------------------------------------------------------------


def _value(value: str | int | float) -> dict[str, str]:
    """One attribute value; booleans are stored as the numbers 0 and 1."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool | int):
        return {"N": str(int(value))}
    if isinstance(value, float):
        number = Decimal(repr(value))
        if not number.is_finite():
            raise ValueError(f"DynamoDB cannot store the number {value!r}")
        return {"N": str(number)}
    raise TypeError(f"cannot store a {type(value).__name__} in the state table")


def _str(item: Mapping[str, Mapping[str, Any]], name: str, default: str = "") -> str:
    attr = item.get(name)
    return str(attr["S"]) if attr is not None and "S" in attr else default


def _float(item: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    attr = item.get(name)
    return float(Decimal(attr["N"])) if attr is not None and "N" in attr else None


def _int(item: Mapping[str, Mapping[str, Any]], name: str, default: int = 0) -> int:
    attr = item.get(name)
    return int(Decimal(attr["N"])) if attr is not None and "N" in attr else default


def _stamp(seconds: float) -> str:
    """A time as a string whose order is the numeric order (for sort keys)."""
    return f"{max(seconds, 0.0):020.6f}"


def _seq_key(seq: int) -> str:
    return f"{max(seq, 0):0{_SEQ_DIGITS}d}"


class _Update:
    """Builds an ``UpdateItem`` expression with placeholder names and values."""

    def __init__(self) -> None:
        self._set: list[str] = []
        self._remove: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, str]] = {}

    def name(self, attr: str) -> str:
        token = f"#n{len(self.names)}"
        self.names[token] = attr
        return token

    def value(self, value: str | int | float) -> str:
        token = f":v{len(self.values)}"
        self.values[token] = _value(value)
        return token

    def set(self, attr: str, value: str | int | float | None) -> None:
        if value is None:
            self.remove(attr)
        else:
            self._set.append(f"{self.name(attr)} = {self.value(value)}")

    def remove(self, attr: str) -> None:
        self._remove.append(self.name(attr))

    def increment(self, attr: str) -> None:
        name = self.name(attr)
        self._set.append(f"{name} = {name} + {self.value(1)}")

    def add(self, attr: str, delta: int) -> str:
        """Add ``delta`` to a number that counts from 0 when absent; returns its name."""
        name = self.name(attr)
        self._set.append(f"{name} = if_not_exists({name}, {self.value(0)}) + {self.value(delta)}")
        return name

    def kwargs(self, condition: str | None) -> dict[str, Any]:
        parts = []
        if self._set:
            parts.append("SET " + ", ".join(self._set))
        if self._remove:
            parts.append("REMOVE " + ", ".join(self._remove))
        args: dict[str, Any] = {
            "UpdateExpression": " ".join(parts),
            "ExpressionAttributeNames": self.names,
        }
        if condition is not None:
            args["ConditionExpression"] = condition
        if self.values:
            args["ExpressionAttributeValues"] = self.values
        return args


class _Cancelled(Exception):
    """A ``TransactWriteItems`` call was refused; ``reasons`` line up with its writes."""

    def __init__(self, reasons: list[dict[str, Any]], message: str) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.message = message


def _message_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


class _SequenceTaken(Exception):
    """A held event's sequence number was taken by another writer."""


class _ConditionFailed(Exception):
    """A conditional write found the item in another state (``item``: as it was, if known)."""

    def __init__(self, item: Item | None) -> None:
        super().__init__("conditional check failed")
        self.item = item


def _reason_codes(exc: _Cancelled, count: int) -> list[str]:
    """The cancellation reason of each write of a cancelled transaction (``"None"``: that
    write was fine). Taken from the reasons, else from the message, which lists them in
    the same order ("... [None, ConditionalCheckFailed]")."""
    codes = [str(reason.get("Code") or "None") for reason in exc.reasons]
    if not codes:
        listed = re.search(r"\[([^\]]*)\]\s*$", exc.message)
        codes = [code.strip() for code in listed.group(1).split(",")] if listed else []
    return (codes + ["None"] * count)[:count]


def _pause(attempt: int) -> float:
    """A random wait before trying a conflicting transaction again (full jitter)."""
    return random.uniform(0, min(_CONFLICT_PAUSE * attempt, _MAX_CONFLICT_PAUSE))


def _repo_quota(repo_url: str) -> str:
    """The key of a repository's quota item (a URL may be longer than a key may be)."""
    return f"QUOTA#repo#{hashlib.sha256(repo_url.encode()).hexdigest()}"


def _sdk_failure(exc: BaseException) -> str:
    """The name of an SDK failure worth reporting as an unreachable store, else ``""``."""
    code = error_code(exc)
    if code:
        return code
    from botocore.exceptions import BotoCoreError, ParamValidationError

    if isinstance(exc, BotoCoreError) and not isinstance(exc, ParamValidationError):
        return type(exc).__name__
    return ""


def _unavailable(code: str) -> StateUnavailable:
    return StateUnavailable(
        f"binderless could not reach its state store (DynamoDB): {code}. Try again in a minute."
    )


def _event_data(event: Event) -> str:
    payload = event.to_json()
    data = json.dumps(payload)
    while len(data.encode()) > _MAX_EVENT_BYTES and payload.get("message"):
        message = str(payload["message"])
        payload["message"] = message[: len(message) // 2].rstrip("\n") + " [line cut]\n"
        data = json.dumps(payload)
    return data



def _session_keys(session_id: str, status: str, expiry: int) -> dict[str, str | int | None]:
    """Index keys and expiry of a session in ``status`` (``None``: remove the attribute)."""
    if status in _ACTIVE:
        return {"gsi1pk": _ACTIVE_SESSIONS, "gsi1sk": f"{status}#{session_id}",
                TTL_ATTRIBUTE: None}
    return {"gsi1pk": f"SESSIONS#{status}", "gsi1sk": session_id,
            TTL_ATTRIBUTE: expiry if status == "stopped" else None}


def _launch_keys(item: Item, expiry: int) -> dict[str, str | int | None]:
    """Index keys and expiry of a launch item, from its phase (``None``: remove)."""
    launch_id = _str(item, "launch_id")
    phase = _str(item, "phase")
    created = _float(item, "created_at") or 0.0
    finished = phase in _FINISHED_PHASES
    keys: dict[str, str | int | None] = {"gsi1pk": None, "gsi1sk": None}
    if not finished:
        keys = {"gsi1pk": _UNFINISHED, "gsi1sk": f"{_stamp(created)}#{launch_id}"}
    elif phase == "ready" and _float(item, "finished_at") is not None:
        keys = {"gsi1pk": f"LAUNCHES#READY#{_int(item, 'built')}#{_str(item, 'image_key')}",
                "gsi1sk": f"{_stamp(created)}#{launch_id}"}
    if not finished:
        keys[TTL_ATTRIBUTE] = None
    elif TTL_ATTRIBUTE not in item:
        keys[TTL_ATTRIBUTE] = expiry
    return keys


def _holds(item: Item, name: str, value: str | int | float | None) -> bool:
    """Whether ``item`` already has ``value`` as ``name`` (``None``: has no ``name``)."""
    if value is None:
        return name not in item
    return name in item and item[name] == _value(value)


@dataclasses.dataclass
class _Pending:
    """An item whose latest writes are held in memory: ``item`` as this process knows it,
    ``written`` once the table has a version of it, ``changes`` since that version
    (``None`` removes the attribute)."""

    item: Item
    written: bool = False
    changes: dict[str, str | int | float | None] = dataclasses.field(default_factory=dict)

    def change(self, changes: Mapping[str, str | int | float | None]) -> None:
        for name, value in changes.items():
            if value is None:
                self.item.pop(name, None)
            else:
                self.item[name] = _value(value)
            self.changes[name] = value

    @property
    def dirty(self) -> bool:
        return not self.written or bool(self.changes)


@dataclasses.dataclass
class _Held:
    """The held writes of one launch: its record, its sessions, its event stream.

    ``local`` is the stream as this process wrote it, from sequence number ``first``;
    followers here read it from memory."""

    launch: _Pending
    sessions: dict[str, _Pending] = dataclasses.field(default_factory=dict)
    events: list[Item] = dataclasses.field(default_factory=list)
    local: list[tuple[int, Event]] = dataclasses.field(default_factory=list)
    first: int = 1
    seq: int = 0
    since: float | None = None
    final: bool = False
    ended_at: float = 0.0

    def touch(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    @property
    def dirty(self) -> bool:
        return bool(self.events) or self.launch.dirty or any(
            p.dirty for p in self.sessions.values())


class DynamoState:
    """``Store``, ``RouteTable``, ``EventLog`` and ``BuildClaims`` in one DynamoDB table.

    ``client`` is a boto3 DynamoDB client (not a resource); ``clock`` gives the time for
    event and TTL stamps; followers poll every ``poll_interval`` seconds; items of finished
    launches, sessions, streams and builds expire ``finished_ttl`` seconds after the end.
    With ``write_behind`` (the session gateway), the writes of launches created here are
    held and sent together (see the module doc); without it (the Lambda functions) every
    write is sent at once.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 2.0,
        finished_ttl: float = 7 * 86400,
        write_behind: bool = False,
        flush_after: float = 5.0,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.clock = clock
        self.poll_interval = poll_interval
        self.finished_ttl = finished_ttl
        # Last sequence number this process wrote per stream: the next append tries the
        # following one first and asks the table only when another writer got there first.
        self._last_seq: dict[str, int] = {}
        self._seq_lock = threading.Lock()
        # Followers in this process wake at once when this process appends to their stream;
        # events other processes write are found by polling.
        self._wakeups: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        # Writes of launches started here, held until the next flush (see the module doc).
        self.write_behind = write_behind
        self.flush_after = flush_after
        self._held: dict[str, _Held] = {}
        self._session_launch: dict[str, str] = {}
        self._hold_lock = threading.RLock()
        self._recent: dict[str, _Held] = {}

    # ----- calls -----------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        if "RequestItems" not in kwargs and "TransactItems" not in kwargs:
            kwargs["TableName"] = self.table_name
        try:
            response = getattr(self.client, operation)(**kwargs)
        except Exception as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                old = getattr(exc, "response", {}).get("Item")
                raise _ConditionFailed(old) from exc
            if code == "TransactionCanceledException":
                reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
                raise _Cancelled(reasons, _message_of(exc)) from exc
            code = _sdk_failure(exc)
            if not code:
                raise
            log.warning("DynamoDB %s on %s failed: %s", operation, self.table_name, code)
            raise _unavailable(code) from exc
        return cast(dict[str, Any], response)

    def _get(self, pk: str, sk: str, projection: tuple[str, ...] = ()) -> Item | None:
        args: dict[str, Any] = {"Key": {"pk": {"S": pk}, "sk": {"S": sk}}, "ConsistentRead": True}
        if projection:
            names = {f"#p{i}": attr for i, attr in enumerate(projection)}
            args["ProjectionExpression"] = ", ".join(names)
            args["ExpressionAttributeNames"] = names
        item = self._call("get_item", **args).get("Item")
        return cast(Item, item) if item else None

    def _update(self, pk: str, sk: str, update: _Update, condition: str = "attribute_exists(pk)",
                **extra: Any) -> dict[str, Any] | None:
        """Update an existing item; ``None`` when the condition fails (as SQLite's UPDATE of
        no row changes nothing)."""
        try:
            return self._call("update_item", Key={"pk": {"S": pk}, "sk": {"S": sk}},
                              **update.kwargs(condition), **extra)
        except _ConditionFailed:
            return None

    def _query(self, **kwargs: Any) -> Iterator[Item]:
        """Every item a query matches, page after page."""
        while True:
            page = self._call("query", **kwargs)
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _query_index(self, gsi1pk: str, **kwargs: Any) -> Iterator[Item]:
        return self._query(
            IndexName=GSI1,
            KeyConditionExpression="gsi1pk = :g",
            ExpressionAttributeValues={":g": {"S": gsi1pk}},
            **kwargs,
        )

    def _expiry(self) -> int:
        return int(self.clock() + self.finished_ttl)

    # ----- Store: launches -------------------------------------------------------------

    def create_launch(self, launch_id: str, provider: str, spec: str, now: float,
                      **fields: Any) -> None:
        unknown = set(fields) - set(_LAUNCH_FIELDS)
        if unknown:
            raise ValueError(f"Launches have no field {', '.join(sorted(unknown))}.")
        item: Item = {
            "pk": {"S": f"LAUNCH#{launch_id}"},
            "sk": {"S": "LAUNCH"},
            "launch_id": {"S": launch_id},
            "version": {"N": "0"},
        }
        for name, (_kind, default) in _LAUNCH_FIELDS.items():
            if default is not None:
                item[name] = _value(default)
        item.update(provider=_value(provider), spec=_value(spec), created_at=_value(now))
        item.update({name: _value(value) for name, value in fields.items() if value is not None})
        pending = _Pending(item)
        pending.change(_launch_keys(item, self._expiry()))
        if self.write_behind:
            with self._hold_lock:
                if launch_id in self._held:
                    raise ValueError(f"Launch {launch_id} already exists.")
                self._held[launch_id] = held = _Held(pending)
                held.touch()
            return
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except _ConditionFailed as exc:
            raise ValueError(f"Launch {launch_id} already exists.") from exc

    def update_launch(self, launch_id: str, **fields: Any) -> None:
        if not fields:
            return
        unknown = set(fields) - set(_LAUNCH_FIELDS)
        if unknown:
            raise ValueError(f"Launches have no field {', '.join(sorted(unknown))}.")
        with self._hold_lock:
            held = self._held.get(launch_id)
            if held is not None:
                launch = held.launch
                launch.change(fields)
                launch.change({"version": _int(launch.item, "version") + 1})
                launch.change(_launch_keys(launch.item, self._expiry()))
                held.touch()
                self._flush_if_due(launch_id)
                return
        update = _Update()
        for name, value in fields.items():
            update.set(name, value)
        update.increment("version")
        response = self._update(f"LAUNCH#{launch_id}", "LAUNCH", update, ReturnValues="ALL_NEW")
        if response is not None:
            self._index_launch(cast(Item, response["Attributes"]))

    def take_launch(self, launch_id: str, driver: str, *, was_driver: str,
                    was_lease: float | None, lease_until: float) -> bool:
        """Become the driver of an unfinished launch, if its driver and lease are still
        ``was_driver`` and ``was_lease`` (nobody else took it in between). With
        ``write_behind``, the launch's writes are held here from now on."""
        update = _Update()
        update.set("driver", driver)
        update.set("lease_until", lease_until)
        update.increment("version")
        condition = (f"attribute_exists(pk) AND {update.name('driver')} = "
                     f"{update.value(was_driver)}")
        lease = update.name("lease_until")
        condition += (f" AND {lease} = {update.value(was_lease)}" if was_lease is not None
                      else f" AND attribute_not_exists({lease})")
        condition += f" AND NOT {update.name('phase')} IN ({update.value('ready')}, " \
                     f"{update.value('failed')})"
        response = self._update(f"LAUNCH#{launch_id}", "LAUNCH", update, condition,
                                ReturnValues="ALL_NEW")
        if response is None:
            return False
        if self.write_behind:
            last = self.last_seq(launch_id)
            with self._hold_lock:
                self._held[launch_id] = _Held(
                    _Pending(cast(Item, response["Attributes"]), written=True),
                    first=last + 1, seq=last)
        return True

    def _index_launch(self, item: Item) -> None:
        """Bring the index keys and the expiry of a launch in line with its phase.

        They derive from several attributes that separate updates set, so they are written
        after the update that changed them, only if no later update came in between
        (a later one re-indexes)."""
        keys = _launch_keys(item, self._expiry())
        if all(_holds(item, name, value) for name, value in keys.items()):
            return
        update = _Update()
        for name, value in keys.items():
            update.set(name, value)
        condition = f"{update.name('version')} = {update.value(_int(item, 'version'))}"
        self._update(f"LAUNCH#{_str(item, 'launch_id')}", "LAUNCH", update, condition)

    def get_launch(self, launch_id: str) -> dict[str, Any] | None:
        with self._hold_lock:
            held = self._held.get(launch_id)
            item = dict(held.launch.item) if held is not None else None
        if item is None:
            item = self._get(f"LAUNCH#{launch_id}", "LAUNCH")
        if item is None:
            return None
        launch: dict[str, Any] = {"launch_id": launch_id}
        for name, (kind, default) in _LAUNCH_FIELDS.items():
            if kind is str:
                launch[name] = _str(item, name, default)
            elif kind is int:
                launch[name] = _int(item, name, default)
            else:
                launch[name] = _float(item, name)
        return launch

    def unfinished_launches(self) -> list[str]:
        return [_str(item, "launch_id") for item in self._query_index(_UNFINISHED)]

    def launch_durations(self, image_key: str, built: bool, limit: int = 10) -> list[float]:
        if limit <= 0:
            return []
        durations: list[float] = []
        items = self._query_index(f"LAUNCHES#READY#{int(built)}#{image_key}",
                                  ScanIndexForward=False, Limit=limit)
        for item in items:
            durations.append((_float(item, "finished_at") or 0.0) - (_float(item, "created_at") or 0.0))
            if len(durations) == limit:
                break
        return durations

    # ----- Store: sessions -------------------------------------------------------------

    def _session_item(self, record: SessionRecord) -> Item:
        item: Item = {
            "pk": {"S": f"SESSION#{record.session_id}"},
            "sk": {"S": "SESSION"},
        }
        for name in _SESSION_FIELDS:
            value = getattr(record, name)
            if value is not None:
                item[name] = _value(value)
        for name, value in _session_keys(record.session_id, record.status, self._expiry()).items():
            if value is not None:
                item[name] = _value(value)
        return item

    def add_session(self, record: SessionRecord) -> None:
        item = self._session_item(record)
        with self._hold_lock:
            held = self._held.get(record.launch_id)
            if held is not None:
                held.sessions[record.session_id] = _Pending(item)
                self._session_launch[record.session_id] = record.launch_id
                held.touch()
                return
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except _ConditionFailed as exc:
            raise ValueError(f"Session {record.session_id} already exists.") from exc

    def _count(self, pk: str, delta: int, limit: int | None = None,
               repo_url: str = "") -> dict[str, Any]:
        """A transaction write adding ``delta`` to a quota item's ``active``; with
        ``limit``, only while ``active`` is below it."""
        update = _Update()
        active = update.add("active", delta)
        if repo_url:
            update.set("repo_url", repo_url)
        # A quota item nobody uses goes away with the sessions it counted.
        update.set(TTL_ATTRIBUTE, self._expiry())
        write: dict[str, Any] = {"TableName": self.table_name,
                                 "Key": {"pk": {"S": pk}, "sk": {"S": _QUOTA_SK}}}
        if limit is None:
            write.update(update.kwargs(None))
        else:
            write.update(update.kwargs(
                f"attribute_not_exists({active}) OR {active} < {update.value(limit)}"))
            # The count comes back with a refusal, for its message: no second call.
            write["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": write}

    def _active_of(self, pk: str, reason: Mapping[str, Any] | None) -> int:
        item = (reason or {}).get("Item") or self._get(pk, _QUOTA_SK) or {}
        return _int(cast(Item, item), "active")

    def reserve_session(self, record: SessionRecord, *, max_total: int,
                        max_of_repo: int) -> Reservation:
        """Put the session item and count it, if both quotas allow, in one transaction
        (see the module doc). A launch whose writes are held sends its launch record in
        the same call: a reserved session never exists without its launch in the table,
        where a reconciler finds it if this process dies."""
        item = self._session_item(record)
        item[_COUNTED] = _value(1)
        for attempt in range(1, _MAX_QUOTA_ATTEMPTS + 1):
            with self._hold_lock:
                answer = self._try_reserve(record, item, max_total, max_of_repo)
            if answer is not None:
                return answer
            time.sleep(_pause(attempt))
        raise _unavailable("too many launches reserved sessions at the same moment")

    def _try_reserve(self, record: SessionRecord, item: Item, max_total: int,
                     max_of_repo: int) -> Reservation | None:
        """One reservation transaction; ``None`` when it met a concurrent one."""
        held = self._held.get(record.launch_id)
        repo_pk = _repo_quota(record.repo_url)
        writes = [
            self._count(_SERVER_QUOTA, 1, max_total),
            self._count(repo_pk, 1, max_of_repo, record.repo_url),
            {"Put": {"TableName": self.table_name, "Item": item,
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ]
        if held is not None and held.launch.dirty:
            writes.append(self._write_of(held.launch))
        try:
            self._call("transact_write_items", TransactItems=writes)
        except _Cancelled as exc:
            codes = _reason_codes(exc, len(writes))
            reasons = exc.reasons + [{}] * len(writes)
            if codes[0] == _CONDITION_FAILED:
                return Reservation("server", self._active_of(_SERVER_QUOTA, reasons[0]))
            if codes[1] == _CONDITION_FAILED:
                return Reservation("repo", self._active_of(repo_pk, reasons[1]))
            if codes[2] == _CONDITION_FAILED:
                # An SDK retry of a call that went through finds its own session: reserved.
                if not self._reserved_before(record):
                    raise ValueError(f"Session {record.session_id} already exists.") from exc
            elif _CONFLICT in codes:
                return None
            else:
                log.warning("DynamoDB refused a reservation: %s", exc.message)
                raise _unavailable("TransactionCanceledException") from exc
        if held is not None:
            held.launch.written = True
            held.launch.changes.clear()
            held.sessions[record.session_id] = _Pending(dict(item), written=True)
            self._session_launch[record.session_id] = record.launch_id
        return Reservation()

    def _reserved_before(self, record: SessionRecord) -> bool:
        """Whether the session item already in the table is this reservation's own."""
        existing = self._get(f"SESSION#{record.session_id}", "SESSION")
        return existing is not None and _str(existing, "token") == record.token and \
            _COUNTED in existing

    def _release_slot(self, session_id: str,
                      changes: Mapping[str, str | int | float | None]) -> bool:
        """Move a counted session out of starting/running with ``changes`` and give its
        quota back, in one transaction; ``False`` when it was not counted (nothing done)."""
        with self._hold_lock:
            launch_id = self._session_launch.get(session_id)
            if launch_id is not None:
                self.flush(launch_id)  # its held writes go first
            item = self._held_session(session_id)
        if item is None:
            item = self._get(f"SESSION#{session_id}", "SESSION", ("repo_url", "status", _COUNTED))
        if item is None or _COUNTED not in item or _str(item, "status") not in _ACTIVE:
            return False
        repo_url = _str(item, "repo_url")
        for attempt in range(1, _MAX_QUOTA_ATTEMPTS + 1):
            update = _Update()
            for name, value in changes.items():
                update.set(name, value)
            update.remove(_COUNTED)
            status = update.name("status")
            condition = (f"{status} IN ({update.value('starting')}, {update.value('running')})"
                         f" AND attribute_exists({update.name(_COUNTED)})")
            writes = [
                {"Update": {"TableName": self.table_name,
                            "Key": {"pk": {"S": f"SESSION#{session_id}"}, "sk": {"S": "SESSION"}},
                            **update.kwargs(condition)}},
                self._count(_SERVER_QUOTA, -1),
                self._count(_repo_quota(repo_url), -1),
            ]
            try:
                self._call("transact_write_items", TransactItems=writes)
            except _Cancelled as exc:
                codes = _reason_codes(exc, len(writes))
                if codes[0] == _CONDITION_FAILED:
                    return False  # released by another process in the meantime
                if _CONFLICT not in codes:
                    log.warning("DynamoDB refused a quota release: %s", exc.message)
                    raise _unavailable("TransactionCanceledException") from exc
                time.sleep(_pause(attempt))
                continue
            with self._hold_lock:
                launch_id = self._session_launch.get(session_id)
                held = self._held.get(launch_id) if launch_id else None
                pending = held.sessions.get(session_id) if held is not None else None
                if pending is not None:  # what the table now holds, nothing left to send
                    pending.item.pop(_COUNTED, None)
                    for name, value in changes.items():
                        if value is None:
                            pending.item.pop(name, None)
                        else:
                            pending.item[name] = _value(value)
            return True
        raise _unavailable("too many sessions stopped at the same moment")

    def update_session(self, session_id: str, **fields: Any) -> None:
        if not fields:
            return
        unknown = set(fields) - set(_SESSION_FIELDS[1:])
        if unknown:
            raise ValueError(f"Sessions have no field {', '.join(sorted(unknown))}.")
        changes: dict[str, str | int | float | None] = dict(fields)
        if "status" in fields:
            changes.update(_session_keys(session_id, str(fields["status"]), self._expiry()))
            if fields["status"] not in _ACTIVE and self._release_slot(session_id, changes):
                return
        if self._change_held_session(session_id, changes):
            return
        update = _Update()
        for name, value in changes.items():
            update.set(name, value)
        self._update(f"SESSION#{session_id}", "SESSION", update)

    def get_session(self, session_id: str) -> SessionRecord:
        item = self._held_session(session_id) or self._get(f"SESSION#{session_id}", "SESSION")
        if item is None:
            raise SessionNotFound(f"There is no session {session_id!r}.")
        return self._record(item)

    @staticmethod
    def _record(item: Item) -> SessionRecord:
        values: dict[str, Any] = {}
        for name in _SESSION_FIELDS:
            values[name] = _float(item, name) if name in _SESSION_FLOATS else _str(item, name)
        return SessionRecord(**values)

    def sessions(self, *statuses: str) -> list[SessionRecord]:
        records: list[SessionRecord] = []
        for status in dict.fromkeys(statuses):
            if status in _ACTIVE:
                items = self._query(
                    IndexName=GSI1,
                    KeyConditionExpression="gsi1pk = :g AND begins_with(gsi1sk, :s)",
                    ExpressionAttributeValues={":g": {"S": _ACTIVE_SESSIONS},
                                               ":s": {"S": f"{status}#"}})
            else:
                items = self._query_index(f"SESSIONS#{status}")
            records += [self._record(item) for item in items]
        return records

    def count_active(self, repo_url: str | None = None) -> int:
        total, of_repo = self.active_counts(repo_url or "")
        return total if repo_url is None else of_repo

    def active_counts(self, repo_url: str) -> tuple[int, int]:
        """Sessions starting or running: in all, and of ``repo_url``; one query."""
        total = of_repo = 0
        for item in self._query(IndexName=GSI1, KeyConditionExpression="gsi1pk = :g",
                                ExpressionAttributeValues={":g": {"S": _ACTIVE_SESSIONS}},
                                ProjectionExpression="repo_url"):
            total += 1
            of_repo += _str(item, "repo_url") == repo_url
        return total, of_repo

    # ----- RouteTable: on the session items --------------------------------------------

    def add(self, route: Route) -> None:
        changes: dict[str, str | int | float | None] = {
            "target": route.target, "token": route.token, "status": "running",
            **_session_keys(route.session_id, "running", 0)}
        if self._change_held_session(route.session_id, changes):
            return
        update = _Update()
        for name, value in changes.items():
            update.set(name, value)
        self._update(f"SESSION#{route.session_id}", "SESSION", update)

    def lookup(self, session_id: str) -> Route:
        item = self._held_session(session_id) or self._get(
            f"SESSION#{session_id}", "SESSION", ("session_id", "target", "token", "owner", "status"))
        if item is None or _str(item, "status") != "running":
            raise SessionNotFound(
                f"Session {session_id} is not running.",
                hint="It may have been stopped after being idle. Launch the repository again.",
            )
        return Route(session_id=session_id, target=_str(item, "target"),
                     token=_str(item, "token"), owner=_str(item, "owner"))

    def remove(self, session_id: str) -> None:
        if self._change_held_session(session_id, {"target": ""}):
            return
        update = _Update()
        update.set("target", "")
        self._update(f"SESSION#{session_id}", "SESSION", update)

    # ----- EventLog --------------------------------------------------------------------

    def append(self, stream: str, event: Event) -> int:
        """Store ``event`` as the next of ``stream``, also with other writers at work.

        The stream of a launch whose writes are held gets the next number of this
        process, and the event waits for the next flush (a final event flushes at once,
        before any follower hears of it). Otherwise the item of a sequence number is
        written only if it does not exist yet; a writer that finds it taken reads the last
        number and tries the next one. A number is taken only once the previous one
        exists, so the numbers have no gaps and a reader never sees a later event before
        an earlier one."""
        data = _event_data(event)
        final = event.is_final
        with self._hold_lock:
            held = self._held.get(stream)
            if held is not None:
                held.seq += 1
                seq = held.seq
                held.events.append(self._event_item(stream, seq, data))
                held.local.append((seq, event))
                held.touch()
                if final:
                    held.final = True
                    held.ended_at = time.monotonic()
                    self.flush(stream)
                    self._release(stream)
                else:
                    self._flush_if_due(stream)
        if held is not None:
            self._wake(stream)
            return seq
        with self._seq_lock:
            seq = self._last_seq.get(stream, 0) + 1
        for _attempt in range(_MAX_APPEND_ATTEMPTS):
            item = self._event_item(stream, seq, data)
            try:
                self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
            except _ConditionFailed:
                seq = self.last_seq(stream) + 1
                continue
            self._remember(stream, seq, final)
            self._wake(stream)
            return seq
        raise _unavailable("too many concurrent writers to one event stream")

    def _event_item(self, stream: str, seq: int, data: str) -> Item:
        return {
            "pk": {"S": f"EVENTS#{stream}"},
            "sk": {"S": _seq_key(seq)},
            "seq": _value(seq),
            "data": {"S": data},
            "created_at": _value(self.clock()),
            TTL_ATTRIBUTE: _value(self._expiry()),
        }

    def _remember(self, stream: str, seq: int, final: bool) -> None:
        with self._seq_lock:
            if final:
                self._last_seq.pop(stream, None)
                return
            if len(self._last_seq) >= _MAX_CACHED_STREAMS and stream not in self._last_seq:
                self._last_seq.clear()
            self._last_seq[stream] = max(seq, self._last_seq.get(stream, 0))

    # ----- held writes -------------------------------------------------------------------

    def _held_session(self, session_id: str) -> Item | None:
        with self._hold_lock:
            launch_id = self._session_launch.get(session_id)
            held = self._held.get(launch_id) if launch_id else None
            pending = held.sessions.get(session_id) if held is not None else None
            return dict(pending.item) if pending is not None else None

    def _change_held_session(self, session_id: str,
                             changes: Mapping[str, str | int | float | None]) -> bool:
        with self._hold_lock:
            launch_id = self._session_launch.get(session_id)
            held = self._held.get(launch_id) if launch_id else None
            pending = held.sessions.get(session_id) if held is not None else None
            if held is None or pending is None or launch_id is None:
                return False
            pending.change(changes)
            held.touch()
            self._flush_if_due(launch_id)
            return True

    def _flush_if_due(self, launch_id: str) -> None:
        if self._flush_due(launch_id):
            self.flush(launch_id)

    def flush(self, launch_id: str) -> None:
        """Send the held writes of ``launch_id`` (nothing when none are held), in as few
        ``TransactWriteItems`` calls as the limits allow: usually one."""
        with self._hold_lock:
            held = self._held.get(launch_id)
            if held is None or not held.dirty:
                return
            for _attempt in range(_MAX_FLUSH_ATTEMPTS):
                try:
                    self._send(held)
                except _SequenceTaken:
                    self._renumber(launch_id, held)
                    continue
                held.since = None
                return
            raise _unavailable("another writer kept taking this launch's event numbers")

    def _send(self, held: _Held) -> None:
        records: list[dict[str, Any]] = []
        for pending in (held.launch, *held.sessions.values()):
            if pending.dirty:
                records.append(self._write_of(pending))
        events = [{"Put": {"TableName": self.table_name, "Item": item,
                           "ConditionExpression": "attribute_not_exists(pk)"}}
                  for item in held.events]
        # Events first, so that a reader never finds a launch ready without its events.
        batches: list[list[dict[str, Any]]] = []
        batch: list[dict[str, Any]] = []
        size = 0
        for write in events:
            weight = len(json.dumps(write))
            if len(batch) == _TRANSACTION_ITEMS or size + weight > _TRANSACTION_BYTES:
                batches.append(batch)
                batch, size = [], 0
            batch.append(write)
            size += weight
        if batch and len(batch) + len(records) > _TRANSACTION_ITEMS:
            batches.append(batch)
            batch = []
        batches.append(batch + records)
        for chunk in batches:
            self._transact(chunk)
            written = sum(1 for write in chunk if "Put" in write and
                          write["Put"]["Item"]["pk"]["S"].startswith("EVENTS#"))
            del held.events[:written]
        for pending in (held.launch, *held.sessions.values()):
            pending.written = True
            pending.changes.clear()

    def _write_of(self, pending: _Pending) -> dict[str, Any]:
        key = {"pk": pending.item["pk"], "sk": pending.item["sk"]}
        if not pending.written:
            return {"Put": {"TableName": self.table_name, "Item": pending.item,
                            "ConditionExpression": "attribute_not_exists(pk)"}}
        update = _Update()
        for name, value in pending.changes.items():
            update.set(name, value)
        return {"Update": {"TableName": self.table_name, "Key": key,
                           **update.kwargs("attribute_exists(pk)")}}

    def _transact(self, writes: list[dict[str, Any]]) -> None:
        if not writes:
            return
        try:
            self._call("transact_write_items", TransactItems=writes)
        except _Cancelled as exc:
            taken = any(reason.get("Code") == "ConditionalCheckFailed" and "Put" in write
                        and write["Put"]["Item"]["pk"]["S"].startswith("EVENTS#")
                        for reason, write in zip(exc.reasons, writes, strict=False))
            # Without reasons (some SDKs drop them), the message still names the cause.
            if taken or (not exc.reasons and "ConditionalCheckFailed" in exc.message):
                raise _SequenceTaken from exc
            log.warning("DynamoDB refused a transaction: %s", exc.message)
            raise _unavailable("TransactionCanceledException") from exc

    def _renumber(self, stream: str, held: _Held) -> None:
        """Another process wrote to this stream (the reconciler, taking an abandoned launch
        for failed): number the held events after what the table has."""
        last = self.last_seq(stream)
        written = held.seq - len(held.events)
        shift = last - written
        log.warning("stream %s: another writer appended %d events; renumbering", stream, shift)
        for item in held.events:
            seq = _int(item, "seq") + shift
            item["seq"] = _value(seq)
            item["sk"] = {"S": _seq_key(seq)}
        held.local = [(seq + shift if seq > written else seq, event)
                      for seq, event in held.local]
        held.seq += shift

    def _release(self, launch_id: str) -> None:
        """A flushed, finished launch: stop holding its writes. Its stream stays readable
        from memory for a while, for followers that reconnect here."""
        held = self._held.get(launch_id)
        if held is None or held.dirty:
            return
        for session_id in held.sessions:
            self._session_launch.pop(session_id, None)
        self._recent[launch_id] = held
        self._held.pop(launch_id, None)
        now = time.monotonic()
        for stream, old in list(self._recent.items()):
            if now - old.ended_at > _RECENT_SECONDS or len(self._recent) > _MAX_RECENT:
                self._recent.pop(stream, None)

    def _local_events(self, stream: str, after: int) -> list[tuple[int, Event]] | None:
        """The events after ``after`` from this process's memory, or ``None`` when memory
        does not hold all of them."""
        with self._hold_lock:
            held = self._held.get(stream) or self._recent.get(stream)
            if held is None or after < held.first - 1:
                return None
            return [(seq, event) for seq, event in held.local if seq > after]

    def read(self, stream: str, after: int = 0) -> list[tuple[int, Event]]:
        local = self._local_events(stream, after)
        if local is not None:
            return local
        items = self._query(
            KeyConditionExpression="pk = :p AND sk > :s",
            ExpressionAttributeValues={":p": {"S": f"EVENTS#{stream}"},
                                       ":s": {"S": _seq_key(after)}},
            ConsistentRead=True,
        )
        return [(_int(item, "seq"), Event.from_json(json.loads(_str(item, "data"))))
                for item in items]

    def _newest_event(self, stream: str) -> Item | None:
        items = self._call(
            "query",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": f"EVENTS#{stream}"}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        ).get("Items", [])
        return cast(Item, items[0]) if items else None

    def last_seq(self, stream: str) -> int:
        newest = self._newest_event(stream)
        return _int(newest, "seq") if newest is not None else 0

    def last_event_at(self, stream: str) -> float | None:
        newest = self._newest_event(stream)
        return _float(newest, "created_at") if newest is not None else None

    def _wake(self, stream: str) -> None:
        with self._seq_lock:
            waiters = self._wakeups.pop(stream, [])
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(waiter.set)

    async def follow(
        self, stream: str, after: int = 0, *, tick: float = 20.0
    ) -> AsyncIterator[tuple[int, Event] | None]:
        """Read the stream when this process appends to it, and poll every ``poll_interval``
        seconds for what other processes append (the table cannot notify). A stream this
        process writes is read from memory, without polling; following it also sends its
        held writes once they are due."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        waiter = asyncio.Event()
        while True:
            if waiter.is_set() or not any(w is waiter for _l, w in self._wakeups.get(stream, [])):
                waiter = asyncio.Event()
                with self._seq_lock:
                    self._wakeups.setdefault(stream, []).append((loop, waiter))
            items = self._local_events(stream, after)
            local = items is not None
            if items is None:
                items = await asyncio.to_thread(self.read, stream, after)
            elif self._flush_due(stream):
                await asyncio.to_thread(self.flush_if_due, stream)
            for seq, event in items:
                after = seq
                yield seq, event
                if event.is_final:
                    return
            now = loop.time()
            if items:
                quiet_since = now
            elif now - quiet_since >= tick:
                quiet_since = now
                yield None
                continue
            wait = quiet_since + tick - now
            if not local:
                wait = min(self.poll_interval, wait)
            elif self.flush_after > 0:
                wait = min(self.flush_after, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=wait)

    def _flush_due(self, launch_id: str) -> bool:
        with self._hold_lock:
            held = self._held.get(launch_id)
            return held is not None and held.since is not None and (
                time.monotonic() - held.since >= self.flush_after)

    def flush_if_due(self, launch_id: str) -> None:
        """Send the held writes of ``launch_id`` if the oldest is ``flush_after`` old."""
        with self._hold_lock:
            self._flush_if_due(launch_id)

    # ----- BuildClaims -----------------------------------------------------------------

    def claim_build(self, key: str, owner: str, stream: str, now: float,
                    stale_after: float = 3600.0) -> BuildClaim:
        """Claim the build of environment ``key`` for ``owner``, whose build writes to
        ``stream``. The claim is won when there is none, the last build ended (failed, or
        built but the image has since gone: callers claim only after finding no image), or
        a build was claimed more than ``stale_after`` seconds ago and never finished.
        Otherwise the current claim comes back with ``claimed=False``: follow its stream."""
        item: Item = {
            "pk": {"S": f"BUILD#{key}"},
            "sk": {"S": "BUILD"},
            "key": {"S": key},
            "owner": {"S": owner},
            "stream": {"S": stream},
            "status": {"S": "building"},
            "claimed_at": _value(now),
        }
        for _attempt in range(5):
            try:
                self._call(
                    "put_item",
                    Item=item,
                    ConditionExpression=(
                        "attribute_not_exists(pk) OR #s <> :building "
                        "OR (#s = :building AND #c < :stale)"
                    ),
                    ExpressionAttributeNames={"#s": "status", "#c": "claimed_at"},
                    ExpressionAttributeValues={
                        ":building": {"S": "building"},
                        ":stale": _value(now - stale_after),
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except _ConditionFailed as exc:
                existing = exc.item or self._get(f"BUILD#{key}", "BUILD")
                if existing is None:  # gone (expired) since: try again
                    continue
                return self._claim(existing, claimed=False)
            return BuildClaim(claimed=True, owner=owner, stream=stream, status="building")
        raise _unavailable("the build claim kept changing")

    def finish_build(self, key: str, status: str, image_name: str = "", *,
                     owner: str | None = None) -> None:
        """Record the end of a build (``built`` or ``failed``). With ``owner``, only if the
        claim is still that owner's: a stale claim taken over stays with the new builder."""
        if status not in _BUILD_STATUSES - {"building"}:
            raise ValueError(f"A build finishes as 'built' or 'failed', not {status!r}.")
        update = _Update()
        update.set("status", status)
        update.set("image_name", image_name)
        update.set("finished_at", self.clock())
        update.set(TTL_ATTRIBUTE, self._expiry())
        condition = "attribute_exists(pk)"
        if owner is not None:
            condition += f" AND {update.name('owner')} = {update.value(owner)}"
        self._update(f"BUILD#{key}", "BUILD", update, condition)

    def get_build(self, key: str) -> BuildClaim | None:
        item = self._get(f"BUILD#{key}", "BUILD")
        return self._claim(item, claimed=False) if item is not None else None

    @staticmethod
    def _claim(item: Item, *, claimed: bool) -> BuildClaim:
        return BuildClaim(claimed=claimed, owner=_str(item, "owner"), stream=_str(item, "stream"),
                          status=_str(item, "status"), image_name=_str(item, "image_name"))

    # ----- Deliveries (webhooks already received; see ``prebuild.py``) -------------------

    def remember_delivery(self, key: str, now: float, ttl: float) -> bool:
        """One conditional put: written only if no record of ``key`` exists, or the one
        there has expired (DynamoDB deletes expired items late, so the condition checks
        the time itself). ``False`` when another copy of the delivery got there first."""
        try:
            self._call(
                "put_item",
                Item={"pk": {"S": f"DELIVERY#{key}"}, "sk": {"S": "DELIVERY"},
                      TTL_ATTRIBUTE: _value(int(now + ttl))},
                ConditionExpression="attribute_not_exists(pk) OR #e <= :now",
                ExpressionAttributeNames={"#e": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": _value(int(now))},
            )
        except _ConditionFailed:
            return False
        return True

    # ----- EnvironmentUsage (the catalogue's records; see ``catalogue.py``) -------------

    def hold_environment(self, key: str, now: float, *, stale_after: float = 300.0) -> bool:
        update = _Update()
        update.set("held_at", now)
        update.set("gsi1pk", "ENVIRONMENTS")
        update.set("gsi1sk", key)
        update.remove("pruning_since")
        mark = update.name("pruning_since")
        condition = f"attribute_not_exists({mark}) OR {mark} < {update.value(now - stale_after)}"
        try:
            self._call("update_item", Key={"pk": {"S": f"ENV#{key}"}, "sk": {"S": "ENV"}},
                       **update.kwargs(condition))
        except _ConditionFailed:
            return False
        return True

    def note_environment(self, key: str, now: float, *, image_name: str = "",
                         built: bool = False, files: tuple[str, ...] = (),
                         repo_url: str = "", ref: str = "") -> None:
        update = _Update()
        update.set("gsi1pk", "ENVIRONMENTS")
        update.set("gsi1sk", key)
        if image_name:
            update.set("image_name", image_name)
        if built:
            update.set("built_at", now)
            update.set("files", json.dumps(list(files)))
        if repo_url:
            update.add("launches", 1)
            update.set("last_launched_at", now)
        self._call("update_item", Key={"pk": {"S": f"ENV#{key}"}, "sk": {"S": "ENV"}},
                   **update.kwargs(None))
        if repo_url:
            use = _Update()
            use.set("repo_url", repo_url)
            use.set("ref", ref)
            use.add("launches", 1)
            use.set("last_launched_at", now)
            digest = hashlib.sha256(f"{repo_url}\0{ref}".encode()).hexdigest()[:32]
            self._call("update_item",
                       Key={"pk": {"S": f"ENV#{key}"}, "sk": {"S": f"REPO#{digest}"}},
                       **use.kwargs(None))

    def _repo_uses(self, key: str) -> list[Item]:
        return list(self._query(
            KeyConditionExpression="pk = :p AND begins_with(sk, :r)",
            ExpressionAttributeValues={":p": {"S": f"ENV#{key}"}, ":r": {"S": "REPO#"}}))

    def environment_records(self) -> list[EnvironmentRecord]:
        records = []
        for item in self._query_index("ENVIRONMENTS"):
            key = _str(item, "gsi1sk")
            try:
                files = tuple(str(f) for f in json.loads(_str(item, "files") or "[]"))
            except ValueError:
                files = ()
            uses = sorted((RepoUse(_str(u, "repo_url"), _str(u, "ref"), _int(u, "launches"),
                                   _float(u, "last_launched_at") or 0.0)
                           for u in self._repo_uses(key)),
                          key=lambda r: r.last_launched_at, reverse=True)
            records.append(EnvironmentRecord(
                key=key, image_name=_str(item, "image_name"), files=files,
                built_at=_float(item, "built_at"),
                last_launched_at=_float(item, "last_launched_at"),
                launches=_int(item, "launches"), repos=tuple(uses)))
        return records

    def begin_prune(self, key: str, now: float, *, grace: float,
                    stale_after: float = 300.0) -> str:
        # The session index lags behind writes by about a second; a launch's hold (one
        # strongly consistent item) covers that gap, and the conditional write below is
        # the one atomic step between a prune and a launch (see ``catalogue.py``).
        active = sum(1 for r in self.sessions(*_ACTIVE) if r.image_key == key)
        if active:
            return f"{active} session{'s' if active != 1 else ''} running"
        build = self.get_build(key)
        if build is not None and build.status == "building":
            return "it is being built"
        update = _Update()
        update.set("pruning_since", now)
        update.set("gsi1pk", "ENVIRONMENTS")
        update.set("gsi1sk", key)
        held, mark = update.name("held_at"), update.name("pruning_since")
        condition = (f"(attribute_not_exists({held}) OR {held} <= {update.value(now - grace)}) "
                     f"AND (attribute_not_exists({mark}) OR {mark} < "
                     f"{update.value(now - stale_after)})")
        try:
            self._call("update_item", Key={"pk": {"S": f"ENV#{key}"}, "sk": {"S": "ENV"}},
                       ReturnValuesOnConditionCheckFailure="ALL_OLD",
                       **update.kwargs(condition))
        except _ConditionFailed as exc:
            old = exc.item or {}
            if (_float(old, "held_at") or 0.0) > now - grace:
                return "a launch started using it moments ago"
            return "another prune is removing it"
        return ""

    def end_prune(self, key: str, *, removed: bool) -> None:
        if not removed:
            update = _Update()
            update.remove("pruning_since")
            self._update(f"ENV#{key}", "ENV", update)
            return
        for item in self._repo_uses(key):
            self._call("delete_item", Key={"pk": item["pk"], "sk": item["sk"]})
        self._call("delete_item", Key={"pk": {"S": f"ENV#{key}"}, "sk": {"S": "ENV"}})
