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
    session        SESSION#<session_id>  SESSION       SESSIONS#<status> / <session_id>
    event          EVENTS#<stream>       <seq>         none
    build claim    BUILD#<key>           BUILD         none

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
  launches once ``ready`` or ``failed``, on stopped sessions, on every event of a stream
  once a final event is appended to it, and on finished build claims. DynamoDB deletes
  such items some time after that moment.

Reads of single items and of event streams are strongly consistent. Listings through the
index (``sessions``, ``count_active``, ``unfinished_launches``, ``launch_durations``) are
eventually consistent, as every global secondary index is: a write shows there within
about a second.

Errors of the AWS SDK become ``StateUnavailable`` (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, cast

from ..backends.protocols import BuildClaim, Route, SessionRecord
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
_SEQ_DIGITS = 10
# An item may hold 400 KB; a longer build log line is cut rather than refused.
_MAX_EVENT_BYTES = 350_000
_MAX_APPEND_ATTEMPTS = 100
_MAX_CACHED_STREAMS = 10_000
_BATCH = 25

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
}
_SESSION_FLOATS = frozenset({"created_at", "last_activity", "stopped_at"})
_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionRecord))
_BUILD_STATUSES = frozenset({"building", "built", "failed"})


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

    def kwargs(self, condition: str) -> dict[str, Any]:
        parts = []
        if self._set:
            parts.append("SET " + ", ".join(self._set))
        if self._remove:
            parts.append("REMOVE " + ", ".join(self._remove))
        args: dict[str, Any] = {
            "UpdateExpression": " ".join(parts),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": self.names,
        }
        if self.values:
            args["ExpressionAttributeValues"] = self.values
        return args


class _ConditionFailed(Exception):
    """A conditional write found the item in another state (``item``: as it was, if known)."""

    def __init__(self, item: Item | None) -> None:
        super().__init__("conditional check failed")
        self.item = item


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


class DynamoState:
    """``Store``, ``RouteTable``, ``EventLog`` and ``BuildClaims`` in one DynamoDB table.

    ``client`` is a boto3 DynamoDB client (not a resource); ``clock`` gives the time for
    event and TTL stamps; followers poll every ``poll_interval`` seconds; items of finished
    launches, sessions, streams and builds expire ``finished_ttl`` seconds after the end.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 2.0,
        finished_ttl: float = 7 * 86400,
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

    # ----- calls -----------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        if "RequestItems" not in kwargs:
            kwargs["TableName"] = self.table_name
        try:
            response = getattr(self.client, operation)(**kwargs)
        except Exception as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                old = getattr(exc, "response", {}).get("Item")
                raise _ConditionFailed(old) from exc
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

    def create_launch(self, launch_id: str, provider: str, spec: str, now: float) -> None:
        item: Item = {
            "pk": {"S": f"LAUNCH#{launch_id}"},
            "sk": {"S": "LAUNCH"},
            "launch_id": {"S": launch_id},
            "version": {"N": "0"},
            "gsi1pk": {"S": _UNFINISHED},
            "gsi1sk": {"S": f"{_stamp(now)}#{launch_id}"},
        }
        for name, (_kind, default) in _LAUNCH_FIELDS.items():
            if default is not None:
                item[name] = _value(default)
        item.update(provider=_value(provider), spec=_value(spec), created_at=_value(now))
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
        update = _Update()
        for name, value in fields.items():
            update.set(name, value)
        update.increment("version")
        response = self._update(f"LAUNCH#{launch_id}", "LAUNCH", update, ReturnValues="ALL_NEW")
        if response is not None:
            self._index_launch(cast(Item, response["Attributes"]))

    def _index_launch(self, item: Item) -> None:
        """Bring the index keys and the expiry of a launch in line with its phase.

        They derive from several attributes that separate updates set, so they are written
        after the update that changed them, only if no later update came in between
        (a later one re-indexes)."""
        launch_id = _str(item, "launch_id")
        phase = _str(item, "phase")
        created = _float(item, "created_at") or 0.0
        finished = phase in _FINISHED_PHASES
        gsi: tuple[str, str] | None = None
        if not finished:
            gsi = (_UNFINISHED, f"{_stamp(created)}#{launch_id}")
        elif phase == "ready" and _float(item, "finished_at") is not None:
            gsi = (f"LAUNCHES#READY#{_int(item, 'built')}#{_str(item, 'image_key')}",
                   f"{_stamp(created)}#{launch_id}")
        current = (_str(item, "gsi1pk"), _str(item, "gsi1sk")) if "gsi1pk" in item else None
        has_expiry = TTL_ATTRIBUTE in item
        if gsi == current and has_expiry == finished:
            return
        update = _Update()
        if gsi is None:
            update.remove("gsi1pk")
            update.remove("gsi1sk")
        else:
            update.set("gsi1pk", gsi[0])
            update.set("gsi1sk", gsi[1])
        if finished and not has_expiry:
            update.set(TTL_ATTRIBUTE, self._expiry())
        elif not finished and has_expiry:
            update.remove(TTL_ATTRIBUTE)
        condition = f"{update.name('version')} = {update.value(_int(item, 'version'))}"
        self._update(f"LAUNCH#{launch_id}", "LAUNCH", update, condition)

    def get_launch(self, launch_id: str) -> dict[str, Any] | None:
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

    def add_session(self, record: SessionRecord) -> None:
        item: Item = {
            "pk": {"S": f"SESSION#{record.session_id}"},
            "sk": {"S": "SESSION"},
            "gsi1pk": {"S": f"SESSIONS#{record.status}"},
            "gsi1sk": {"S": record.session_id},
        }
        for name in _SESSION_FIELDS:
            value = getattr(record, name)
            if value is not None:
                item[name] = _value(value)
        if record.status == "stopped":
            item[TTL_ATTRIBUTE] = _value(self._expiry())
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
        except _ConditionFailed as exc:
            raise ValueError(f"Session {record.session_id} already exists.") from exc

    def update_session(self, session_id: str, **fields: Any) -> None:
        if not fields:
            return
        unknown = set(fields) - set(_SESSION_FIELDS[1:])
        if unknown:
            raise ValueError(f"Sessions have no field {', '.join(sorted(unknown))}.")
        update = _Update()
        for name, value in fields.items():
            update.set(name, value)
        if "status" in fields:
            update.set("gsi1pk", f"SESSIONS#{fields['status']}")
            if fields["status"] == "stopped":
                update.set(TTL_ATTRIBUTE, self._expiry())
            else:
                update.remove(TTL_ATTRIBUTE)
        self._update(f"SESSION#{session_id}", "SESSION", update)

    def get_session(self, session_id: str) -> SessionRecord:
        item = self._get(f"SESSION#{session_id}", "SESSION")
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
        return [self._record(item) for status in dict.fromkeys(statuses)
                for item in self._query_index(f"SESSIONS#{status}")]

    def count_active(self, repo_url: str | None = None) -> int:
        total = 0
        for status in _ACTIVE:
            args: dict[str, Any] = {
                "IndexName": GSI1,
                "Select": "COUNT",
                "KeyConditionExpression": "gsi1pk = :g",
                "ExpressionAttributeValues": {":g": {"S": f"SESSIONS#{status}"}},
            }
            if repo_url is not None:
                args["FilterExpression"] = "repo_url = :r"
                args["ExpressionAttributeValues"][":r"] = {"S": repo_url}
            while True:
                page = self._call("query", **args)
                total += int(page.get("Count", 0))
                if not page.get("LastEvaluatedKey"):
                    break
                args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return total

    # ----- RouteTable: on the session items --------------------------------------------

    def add(self, route: Route) -> None:
        update = _Update()
        update.set("target", route.target)
        update.set("token", route.token)
        update.set("status", "running")
        update.set("gsi1pk", "SESSIONS#running")
        update.remove(TTL_ATTRIBUTE)
        self._update(f"SESSION#{route.session_id}", "SESSION", update)

    def lookup(self, session_id: str) -> Route:
        item = self._get(f"SESSION#{session_id}", "SESSION",
                         ("session_id", "target", "token", "owner", "status"))
        if item is None or _str(item, "status") != "running":
            raise SessionNotFound(
                f"Session {session_id} is not running.",
                hint="It may have been stopped after being idle. Launch the repository again.",
            )
        return Route(session_id=session_id, target=_str(item, "target"),
                     token=_str(item, "token"), owner=_str(item, "owner"))

    def remove(self, session_id: str) -> None:
        update = _Update()
        update.set("target", "")
        self._update(f"SESSION#{session_id}", "SESSION", update)

    # ----- EventLog --------------------------------------------------------------------

    def append(self, stream: str, event: Event) -> int:
        """Store ``event`` as the next of ``stream``, also with other writers at work.

        The item of a sequence number is written only if it does not exist yet; a writer
        that finds it taken reads the last number and tries the next one. A number is
        taken only once the previous one exists, so the numbers have no gaps and a reader
        never sees a later event before an earlier one."""
        data = _event_data(event)
        final = event.is_final
        with self._seq_lock:
            seq = self._last_seq.get(stream, 0) + 1
        for _attempt in range(_MAX_APPEND_ATTEMPTS):
            item: Item = {
                "pk": {"S": f"EVENTS#{stream}"},
                "sk": {"S": _seq_key(seq)},
                "seq": _value(seq),
                "data": {"S": data},
                "created_at": _value(self.clock()),
            }
            if final:
                item[TTL_ATTRIBUTE] = _value(self._expiry())
            try:
                self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
            except _ConditionFailed:
                seq = self.last_seq(stream) + 1
                continue
            self._remember(stream, seq, final)
            self._wake(stream)
            if final:
                self._expire_stream(stream, int(item[TTL_ATTRIBUTE]["N"]))
            return seq
        raise _unavailable("too many concurrent writers to one event stream")

    def _remember(self, stream: str, seq: int, final: bool) -> None:
        with self._seq_lock:
            if final:
                self._last_seq.pop(stream, None)
                return
            if len(self._last_seq) >= _MAX_CACHED_STREAMS and stream not in self._last_seq:
                self._last_seq.clear()
            self._last_seq[stream] = max(seq, self._last_seq.get(stream, 0))

    def _expire_stream(self, stream: str, expires_at: int) -> None:
        """Give every event of a finished stream its expiry. Events never change once
        written, so each is rewritten whole, 25 to a request. Failing here loses nothing
        but the expiry, so it is logged, not raised."""
        try:
            pending = [
                {"PutRequest": {"Item": {**item, TTL_ATTRIBUTE: _value(expires_at)}}}
                for item in self._query(KeyConditionExpression="pk = :p",
                                        ExpressionAttributeValues={":p": {"S": f"EVENTS#{stream}"}},
                                        ConsistentRead=True)
                if TTL_ATTRIBUTE not in item
            ]
            delay = 0.05
            for _attempt in range(8):
                if not pending:
                    return
                rest: list[dict[str, Any]] = []
                for start in range(0, len(pending), _BATCH):
                    chunk = pending[start:start + _BATCH]
                    response = self._call("batch_write_item",
                                          RequestItems={self.table_name: chunk})
                    rest += response.get("UnprocessedItems", {}).get(self.table_name, [])
                pending = rest
                if pending:
                    time.sleep(delay)
                    delay *= 2
            log.warning("%d events of stream %s got no expiry", len(pending), stream)
        except StateUnavailable:
            log.warning("could not set the expiry of the events of stream %s", stream,
                        exc_info=True)

    def read(self, stream: str, after: int = 0) -> list[tuple[int, Event]]:
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
        seconds for what other processes append (the table cannot notify)."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        waiter = asyncio.Event()
        while True:
            if waiter.is_set() or not any(w is waiter for _l, w in self._wakeups.get(stream, [])):
                waiter = asyncio.Event()
                with self._seq_lock:
                    self._wakeups.setdefault(stream, []).append((loop, waiter))
            items = await asyncio.to_thread(self.read, stream, after)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(),
                                       timeout=min(self.poll_interval, quiet_since + tick - now))

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
