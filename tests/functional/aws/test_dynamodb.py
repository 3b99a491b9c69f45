"""DynamoState against moto (in process), botocore's Stubber for what moto cannot do, and the
same behavioural checks run against the SQLite backend."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from moto.dynamodb.models import DynamoDBBackend

from binderless.aws.dynamodb import GSI1, TTL_ATTRIBUTE, DynamoState, table_definition
from binderless.backends.protocols import (
    BuildClaim,
    BuildClaims,
    EventLog,
    Reservation,
    Route,
    RouteTable,
    SessionRecord,
    Store,
)
from binderless.backends.sqlite import Database, SqliteEventLog, SqliteRoutes, SqliteStore
from binderless.errors import SessionNotFound, StateUnavailable
from binderless.events import Event
from binderless.phases import Phase
from tests.conftest import free_port

TABLE = "binderless-state"
TTL = 7 * 86400


class Clock:
    def __init__(self, now: float = 1_700_000_000.5) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(moto: Any, region: str) -> Any:
    dynamodb = boto3.client("dynamodb", region_name=region)
    dynamodb.create_table(**table_definition(TABLE))
    dynamodb.update_time_to_live(
        TableName=TABLE,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    return dynamodb


@pytest.fixture
def state(client: Any, clock: Clock) -> DynamoState:
    return DynamoState(client, TABLE, clock=clock, poll_interval=0.01, finished_ttl=TTL)


def raw(client: Any, pk: str, sk: str) -> dict[str, Any]:
    item = client.get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"]
    assert isinstance(item, dict)
    return item


def session(session_id: str = "s1", *, repo: str = "https://github.com/a/b", status: str = "starting",
            now: float = 1000.25) -> SessionRecord:
    return SessionRecord(
        session_id=session_id, launch_id=f"launch-{session_id}", owner="ada", repo_url=repo,
        resolved_ref="abc123", image_key="key1", home=f"/homes/{session_id}", target="",
        token=f"token-{session_id}", backend_id="", status=status, created_at=now,
        last_activity=now,
    )


def log_line(text: str) -> Event:
    return Event(Phase.BUILDING, text)


READY = Event(Phase.READY, "server running\n", {"url": "http://x/user/s1/", "token": "t"})


def test_it_satisfies_the_protocols(state: DynamoState) -> None:
    store: Store = state
    routes: RouteTable = state
    events: EventLog = state
    claims: BuildClaims = state
    assert all(backend is state for backend in (store, routes, events, claims))


# ----- table ---------------------------------------------------------------------------------


def test_table_definition_creates_an_encrypted_on_demand_table_with_the_index(client: Any) -> None:
    definition = table_definition("other")
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    assert definition["SSESpecification"] == {"Enabled": True}
    table = client.describe_table(TableName=TABLE)["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
        "pk": "HASH", "sk": "RANGE"}
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == GSI1
    assert {k["AttributeName"] for k in index["KeySchema"]} == {"gsi1pk", "gsi1sk"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": TTL_ATTRIBUTE}


# ----- launches ------------------------------------------------------------------------------


def test_launch_records_round_trip_with_the_sqlite_shape(state: DynamoState) -> None:
    assert state.get_launch("nope") is None
    state.create_launch("l1", "gh", "a/b/main", 100.5)
    assert state.get_launch("l1") == {
        "launch_id": "l1", "provider": "gh", "spec": "a/b/main", "resolved_ref": "",
        "image_key": "", "phase": "waiting", "session_id": "", "built": 0,
        "created_at": 100.5, "finished_at": None, "request": "", "driver": "",
        "lease_until": None,
    }
    state.update_launch("l1", resolved_ref="abc", image_key="k", built=1, phase="building")
    state.update_launch("l1")  # nothing to do
    launch = state.get_launch("l1")
    assert launch is not None
    assert (launch["resolved_ref"], launch["image_key"], launch["built"], launch["phase"]) == (
        "abc", "k", 1, "building")
    with pytest.raises(ValueError, match="already exists"):
        state.create_launch("l1", "gh", "a/b/main", 101.0)
    with pytest.raises(ValueError, match="no field pk"):
        state.update_launch("l1", pk="LAUNCH#other")


def test_updating_an_unknown_launch_or_session_creates_nothing(state: DynamoState,
                                                                client: Any) -> None:
    state.update_launch("ghost", phase="ready", finished_at=5.0)
    state.update_session("ghost", status="running")
    state.add(Route("ghost", "http://x", "t"))
    state.remove("ghost")
    state.finish_build("ghost", "built", "img")
    assert client.scan(TableName=TABLE)["Items"] == []


def test_unfinished_launches_and_durations_follow_the_phase(state: DynamoState, client: Any,
                                                             clock: Clock) -> None:
    for i, launch_id in enumerate(["a", "b", "c", "d"]):
        state.create_launch(launch_id, "gh", "x/y/main", 100.0 + i)
    state.update_launch("a", phase="ready", finished_at=110.5, image_key="k", built=1)
    state.update_launch("b", image_key="k", built=1)
    state.update_launch("b", phase="ready", finished_at=103.0)  # key set by an earlier update
    state.update_launch("c", phase="failed", finished_at=104.0, image_key="k", built=1)
    state.update_launch("d", image_key="k", built=0, phase="ready", finished_at=113.25)
    assert state.unfinished_launches() == []
    state.create_launch("e", "gh", "x/y/main", 200.0)
    assert state.unfinished_launches() == ["e"]
    # Newest first, like the SQLite version; failed ones do not count.
    assert state.launch_durations("k", True) == [103.0 - 101.0, 110.5 - 100.0]
    assert state.launch_durations("k", True, limit=1) == [2.0]
    assert state.launch_durations("k", False) == [113.25 - 103.0]
    assert state.launch_durations("other", True) == []
    assert state.launch_durations("k", True, limit=0) == []
    # Finished launches expire, unfinished ones do not; a failed one leaves the index.
    expires = int(clock.now + TTL)
    assert raw(client, "LAUNCH#a", "LAUNCH")[TTL_ATTRIBUTE] == {"N": str(expires)}
    assert raw(client, "LAUNCH#c", "LAUNCH")[TTL_ATTRIBUTE] == {"N": str(expires)}
    assert "gsi1pk" not in raw(client, "LAUNCH#c", "LAUNCH")
    assert TTL_ATTRIBUTE not in raw(client, "LAUNCH#e", "LAUNCH")


def test_floats_are_exact_dynamodb_numbers_and_none_is_left_out(state: DynamoState,
                                                                client: Any) -> None:
    stamp = 1712345678.123456
    state.create_launch("l1", "gh", "a/b/main", stamp)
    item = raw(client, "LAUNCH#l1", "LAUNCH")
    assert item["created_at"] == {"N": "1712345678.123456"}
    assert "finished_at" not in item
    for value in (0.1, 1e-7, 2.5e20, 3.0):
        state.update_launch("l1", finished_at=value)
        launch = state.get_launch("l1")
        assert launch is not None and launch["finished_at"] == value
    state.update_launch("l1", finished_at=None)
    assert "finished_at" not in raw(client, "LAUNCH#l1", "LAUNCH")
    launch = state.get_launch("l1")
    assert launch is not None and launch["finished_at"] is None and launch["created_at"] == stamp
    with pytest.raises(ValueError, match="cannot store"):
        state.update_launch("l1", finished_at=float("nan"))


# ----- sessions and routes -------------------------------------------------------------------


def test_sessions_are_listed_and_counted_by_status(state: DynamoState) -> None:
    state.add_session(session("s1"))
    state.add_session(session("s2", repo="https://github.com/c/d"))
    state.add_session(session("s3", status="running"))
    assert state.get_session("s1") == session("s1")
    with pytest.raises(ValueError, match="already exists"):
        state.add_session(session("s1"))
    assert {r.session_id for r in state.sessions("starting", "running")} == {"s1", "s2", "s3"}
    assert [r.session_id for r in state.sessions("running")] == ["s3"]
    assert state.sessions() == []
    assert state.count_active() == 3
    assert state.count_active("https://github.com/a/b") == 2
    assert state.count_active("https://github.com/x/y") == 0
    state.update_session("s1", status="running", backend_id="task/1", last_activity=1500.75)
    record = state.get_session("s1")
    assert (record.status, record.backend_id, record.last_activity) == ("running", "task/1", 1500.75)
    assert {r.session_id for r in state.sessions("running")} == {"s1", "s3"}
    with pytest.raises(SessionNotFound, match="There is no session 'nope'"):
        state.get_session("nope")
    with pytest.raises(ValueError, match="no field gsi1pk"):
        state.update_session("s1", gsi1pk="SESSIONS#x")


def test_stopped_sessions_expire_and_stop_counting(state: DynamoState, client: Any,
                                                   clock: Clock) -> None:
    state.add_session(session("s1", status="running"))
    assert TTL_ATTRIBUTE not in raw(client, "SESSION#s1", "SESSION")
    assert "stopped_at" not in raw(client, "SESSION#s1", "SESSION")
    state.update_session("s1", status="stopped", stopped_at=2000.5, stop_reason="idle")
    item = raw(client, "SESSION#s1", "SESSION")
    assert item[TTL_ATTRIBUTE] == {"N": str(int(clock.now + TTL))}
    assert item["gsi1pk"] == {"S": "SESSIONS#stopped"}
    record = state.get_session("s1")
    assert (record.status, record.stopped_at, record.stop_reason) == ("stopped", 2000.5, "idle")
    assert state.count_active() == 0
    assert [r.session_id for r in state.sessions("stopped")] == ["s1"]


def test_routes_live_on_the_session_item(state: DynamoState) -> None:
    hint = "It may have been stopped after being idle. Launch the repository again."
    state.add_session(session("s1"))
    with pytest.raises(SessionNotFound) as starting:
        state.lookup("s1")
    assert starting.value.hint == hint
    state.add(Route("s1", "http://10.0.0.5:8888", "tok", owner="ada"))
    assert state.lookup("s1") == Route("s1", "http://10.0.0.5:8888", "tok", owner="ada")
    assert state.get_session("s1").status == "running"
    assert state.count_active() == 1
    state.remove("s1")
    assert state.get_session("s1").target == ""
    state.update_session("s1", status="stopped")
    with pytest.raises(SessionNotFound, match="Session s1 is not running") as stopped:
        state.lookup("s1")
    assert stopped.value.hint == hint
    with pytest.raises(SessionNotFound):
        state.lookup("unknown")


# ----- events --------------------------------------------------------------------------------


def test_events_append_read_and_replay(state: DynamoState, client: Any) -> None:
    assert state.read("launch1") == []
    assert state.last_seq("launch1") == 0
    events = [Event(Phase.WAITING, "Resolving…\n"), log_line("Step 1\n"),
              Event(Phase.BUILT, "Built.\n", {"imageName": "img:1", "ratio": 0.25})]
    assert [state.append("launch1", e) for e in events] == [1, 2, 3]
    assert state.read("launch1") == list(enumerate(events, start=1))
    assert state.read("launch1", 2) == [(3, events[2])]
    assert state.read("launch1", 3) == []
    assert state.read("other") == []
    assert state.last_seq("launch1") == 3
    assert raw(client, "EVENTS#launch1", "0000000002")["seq"] == {"N": "2"}
    # A second writer that knows nothing of this stream continues it.
    other = DynamoState(client, TABLE)
    assert other.append("launch1", log_line("more\n")) == 4


def test_every_event_expires_a_ttl_after_it_is_written(state: DynamoState, client: Any,
                                                       clock: Clock) -> None:
    state.append("build-k", log_line("line 1\n"))
    clock.now += 60
    assert state.append("build-k", Event(Phase.FAILED, "oops\n", {"status_code": 500})) == 2
    assert raw(client, "EVENTS#build-k", "0000000001")[TTL_ATTRIBUTE] == {
        "N": str(int(clock.now - 60 + TTL))}
    assert raw(client, "EVENTS#build-k", "0000000002")[TTL_ATTRIBUTE] == {
        "N": str(int(clock.now + TTL))}
    assert state.read("build-k", 1) == [(2, Event(Phase.FAILED, "oops\n", {"status_code": 500}))]


def test_an_oversized_log_line_is_cut_to_fit_an_item(state: DynamoState) -> None:
    state.append("s", log_line("x" * 1_000_000 + "\n"))
    ((_seq, event),) = state.read("s")
    assert 100_000 < len(event.message) < 400_000
    assert event.message.endswith(" [line cut]\n")


def test_concurrent_appends_get_unique_gap_free_numbers(client: Any, atomic_moto: None) -> None:
    conflicts = 0

    def count_conflicts(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        nonlocal conflicts
        if parsed.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            conflicts += 1

    client.meta.events.register("after-call.dynamodb.PutItem", count_conflicts)
    # Three "gateway copies", two of them shared by two threads each.
    writers = [DynamoState(client, TABLE) for _ in range(3)]
    per_thread = 15
    plan = [writers[0], writers[0], writers[1], writers[1], writers[2]]
    barrier = threading.Barrier(len(plan))

    def write(index: int) -> list[int]:
        barrier.wait()
        return [plan[index].append("stream", log_line(f"{index}-{n}\n")) for n in range(per_thread)]

    with ThreadPoolExecutor(len(plan)) as pool:
        results = list(pool.map(write, range(len(plan))))
    total = per_thread * len(plan)
    numbers = sorted(n for result in results for n in result)
    assert numbers == list(range(1, total + 1))
    for result in results:  # each writer's own events stay in its order
        assert result == sorted(result)
    stored = writers[0].read("stream")
    assert [seq for seq, _ in stored] == numbers
    by_seq = {seq: event.message for seq, event in stored}
    for index, result in enumerate(results):
        assert [by_seq[seq] for seq in result] == [f"{index}-{n}\n" for n in range(per_thread)]
    assert conflicts > 0  # the writers did collide, and recovered


def test_follow_yields_stored_then_live_events_ticks_and_ends(state: DynamoState) -> None:
    state.append("l", Event(Phase.WAITING, "one\n"))
    state.append("l", Event(Phase.FETCHING, "two\n"))

    async def scenario() -> list[tuple[int, str] | None]:
        seen: list[tuple[int, str] | None] = []
        async for item in state.follow("l", 1, tick=0.05):
            seen.append(None if item is None else (item[0], item[1].message))
            if seen[-1] is None and seen.count(None) == 2:
                await asyncio.to_thread(state.append, "l", log_line("three\n"))
            if seen[-1] == (3, "three\n"):
                state.append("l", READY)
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert seen[0] == (2, "two\n")
    assert seen[-2:] == [(3, "three\n"), (4, "server running\n")]
    assert seen[1:-2] and all(item is None for item in seen[1:-2])


def test_follow_ends_at_a_stored_final_event(state: DynamoState) -> None:
    state.append("l", READY)
    state.append("l", log_line("after the end\n"))

    async def collect() -> list[tuple[int, Event] | None]:
        return [item async for item in state.follow("l", 0, tick=5)]

    assert asyncio.run(asyncio.wait_for(collect(), timeout=10)) == [(1, READY)]


# ----- build claims --------------------------------------------------------------------------


def test_one_of_two_claimants_builds_and_the_other_follows(state: DynamoState,
                                                          client: Any) -> None:
    assert state.get_build("k") is None
    first = state.claim_build("k", "gw-1", "build-k-1", now=100.0)
    assert first == BuildClaim(claimed=True, owner="gw-1", stream="build-k-1", status="building")
    # A second process with its own DynamoState.
    second = DynamoState(client, TABLE).claim_build("k", "gw-2", "build-k-2", now=150.0)
    assert second == replace(first, claimed=False)
    assert state.get_build("k") == replace(first, claimed=False)
    state.finish_build("k", "built", "registry/img:k")
    assert state.get_build("k") == BuildClaim(
        claimed=False, owner="gw-1", stream="build-k-1", status="built", image_name="registry/img:k")
    # Callers claim only after finding no image: a built claim whose image is gone is re-won.
    assert state.claim_build("k", "gw-2", "build-k-3", now=10_000.0).claimed


def test_failed_or_stale_claims_can_be_claimed_again(state: DynamoState, client: Any,
                                                     clock: Clock) -> None:
    state.claim_build("k", "gw-1", "s1", now=100.0)
    state.finish_build("k", "failed")
    assert raw(client, "BUILD#k", "BUILD")[TTL_ATTRIBUTE] == {"N": str(int(clock.now + TTL))}
    assert state.claim_build("k", "gw-2", "s2", now=200.0).claimed
    # Still building and fresh: not stale yet.
    assert not state.claim_build("k", "gw-3", "s3", now=200.0 + 3600).claimed
    taken = state.claim_build("k", "gw-3", "s3", now=200.0 + 3601)
    assert taken == BuildClaim(claimed=True, owner="gw-3", stream="s3", status="building")
    assert state.claim_build("k", "gw-4", "s4", now=300.0, stale_after=50).claimed is False
    # The stale owner finishing late does not clobber the new build.
    state.finish_build("k", "failed", owner="gw-2")
    assert state.get_build("k") == replace(taken, claimed=False)
    state.finish_build("k", "built", "img", owner="gw-3")
    assert state.get_build("k") == BuildClaim(False, "gw-3", "s3", "built", "img")
    with pytest.raises(ValueError, match="built' or 'failed"):
        state.finish_build("k", "building")


def test_racing_claimants_in_threads_start_exactly_one_build(client: Any,
                                                             atomic_moto: None) -> None:
    claimants = [DynamoState(client, TABLE) for _ in range(6)]
    barrier = threading.Barrier(len(claimants))

    def claim(index: int) -> BuildClaim:
        barrier.wait()
        return claimants[index].claim_build("k", f"gw-{index}", f"stream-{index}", now=1.0)

    with ThreadPoolExecutor(len(claimants)) as pool:
        claims = list(pool.map(claim, range(len(claimants))))
    winners = [c for c in claims if c.claimed]
    assert len(winners) == 1
    assert {c.stream for c in claims} == {winners[0].stream}


# ----- pagination and errors (Stubber) -------------------------------------------------------


def stubbed(region: str = "us-east-1") -> tuple[DynamoState, Stubber]:
    client = boto3.client("dynamodb", region_name=region)
    return DynamoState(client, TABLE), Stubber(client)


def event_item(seq: int) -> dict[str, Any]:
    return {"pk": {"S": "EVENTS#l"}, "sk": {"S": f"{seq:010d}"}, "seq": {"N": str(seq)},
            "data": {"S": f'{{"message": "m{seq}"}}'}}


def test_reads_and_listings_follow_every_page() -> None:
    state, stub = stubbed()
    last = {"pk": {"S": "EVENTS#l"}, "sk": {"S": "0000000001"}}
    stub.add_response("query", {"Items": [event_item(1)], "LastEvaluatedKey": last},
                      {"TableName": TABLE, "KeyConditionExpression": ANY,
                       "ExpressionAttributeValues": ANY, "ConsistentRead": True})
    stub.add_response("query", {"Items": [event_item(2)]},
                      {"TableName": TABLE, "KeyConditionExpression": ANY,
                       "ExpressionAttributeValues": ANY, "ConsistentRead": True,
                       "ExclusiveStartKey": last})
    record = {"pk": {"S": "SESSION#s1"}, "sk": {"S": "SESSION"}, "session_id": {"S": "s1"},
              "status": {"S": "running"}, "created_at": {"N": "1"}, "last_activity": {"N": "2"}}
    gsi_last = {"pk": {"S": "SESSION#s1"}, "sk": {"S": "SESSION"},
                "gsi1pk": {"S": "SESSIONS#active"}, "gsi1sk": {"S": "running#s1"}}
    index_query = {"TableName": TABLE, "IndexName": GSI1, "KeyConditionExpression": ANY,
                   "ExpressionAttributeValues": ANY}
    stub.add_response("query", {"Items": [record], "LastEvaluatedKey": gsi_last}, index_query)
    stub.add_response("query", {"Items": [{**record, "session_id": {"S": "s2"}}]},
                      {**index_query, "ExclusiveStartKey": gsi_last})
    count_query = {**index_query, "ProjectionExpression": "repo_url"}
    repo = {"repo_url": {"S": "https://github.com/a/b"}}
    stub.add_response("query", {"Items": [repo, repo], "LastEvaluatedKey": gsi_last},
                      count_query)
    stub.add_response("query", {"Items": [{"repo_url": {"S": "https://github.com/x/y"}}]},
                      {**count_query, "ExclusiveStartKey": gsi_last})
    with stub:
        assert [(seq, e.message) for seq, e in state.read("l")] == [(1, "m1"), (2, "m2")]
        assert [r.session_id for r in state.sessions("running")] == ["s1", "s2"]
        assert state.active_counts("https://github.com/a/b") == (3, 2)
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException",
                                  "InternalServerError"])
def test_throttling_and_service_errors_become_state_unavailable(code: str) -> None:
    state, stub = stubbed()
    stub.add_client_error("get_item", service_error_code=code, http_status_code=400)
    stub.add_client_error("put_item", service_error_code=code, http_status_code=400)
    stub.add_client_error("query", service_error_code=code, http_status_code=400)
    with stub:
        with pytest.raises(StateUnavailable) as lookup:
            state.lookup("s1")
        with pytest.raises(StateUnavailable):
            state.append("l", log_line("x\n"))
        with pytest.raises(StateUnavailable):
            state.count_active()
    error = lookup.value
    assert error.status_code == 503
    assert error.message == (
        f"binderless could not reach its state store (DynamoDB): {code}. Try again in a minute.")
    assert isinstance(error.__cause__, ClientError)


def test_follow_reports_an_unavailable_store() -> None:
    state, stub = stubbed()
    stub.add_client_error("query", service_error_code="ThrottlingException")

    async def follow() -> None:
        async for _item in state.follow("l"):
            pass

    with stub, pytest.raises(StateUnavailable, match="ThrottlingException"):
        asyncio.run(follow())


def test_a_missing_table_is_reported(moto: Any, region: str) -> None:
    state = DynamoState(boto3.client("dynamodb", region_name=region), "no-such-table")
    with pytest.raises(StateUnavailable, match="ResourceNotFoundException"):
        state.get_session("s1")


def test_an_unreachable_endpoint_is_reported() -> None:
    # A closed port on 127.0.0.1: refused at once, nothing leaves the machine.
    client = boto3.client(
        "dynamodb", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1,
                      read_timeout=1),
    )
    with pytest.raises(StateUnavailable, match="EndpointConnectionError"):
        DynamoState(client, TABLE).get_launch("l1")


# ----- the two backends behave alike ---------------------------------------------------------


Backend = tuple[Store, RouteTable, EventLog]


@pytest.fixture(params=["sqlite", "dynamodb", "dynamodb-held"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        db = Database(tmp_path / "state.db")
        try:
            yield SqliteStore(db), SqliteRoutes(db), SqliteEventLog(db)
        finally:
            db.close()
    else:
        client = request.getfixturevalue("client")  # a moto table
        dynamo = DynamoState(client, TABLE, poll_interval=0.01,
                             write_behind=request.param == "dynamodb-held")
        yield dynamo, dynamo, dynamo


def expect_not_found(call: Callable[[], object], match: str) -> SessionNotFound:
    with pytest.raises(SessionNotFound, match=match) as info:
        call()
    return info.value


def test_both_backends_behave_alike(backend: Backend) -> None:
    store, routes, events = backend
    # Launches.
    store.create_launch("l1", "gh", "a/b/main", 10.0)
    store.create_launch("l2", "gh", "a/b/main", 20.0)
    store.create_launch("l3", "gh", "a/b/main", 30.0)
    with pytest.raises(Exception):  # noqa: B017 - each backend's own duplicate-key error
        store.create_launch("l1", "gh", "a/b/main", 10.0)
    store.update_launch("l1", resolved_ref="abc", image_key="k", built=1)
    store.update_launch("l1", phase="ready", finished_at=12.5, session_id="s1")
    store.update_launch("l2", image_key="k", built=1, phase="ready", finished_at=21.0)
    store.update_launch("l3", image_key="k", phase="failed", finished_at=31.0)
    store.update_launch("ghost", phase="ready")
    for launch_id in ("l1", "l2", "l3"):
        store.flush(launch_id)  # a store may hold the writes of a launch until now
    assert store.get_launch("l1") == {
        "launch_id": "l1", "provider": "gh", "spec": "a/b/main", "resolved_ref": "abc",
        "image_key": "k", "phase": "ready", "session_id": "s1", "built": 1,
        "created_at": 10.0, "finished_at": 12.5, "request": "", "driver": "",
        "lease_until": None,
    }
    assert store.get_launch("ghost") is None
    assert store.launch_durations("k", True) == [1.0, 2.5]
    assert store.launch_durations("k", False) == []
    assert store.unfinished_launches() == []
    store.create_launch("l4", "gl", "c/d/main", 40.0)
    store.flush("l4")
    assert store.unfinished_launches() == ["l4"]

    # Sessions and routes.
    store.add_session(session("s1", now=10.5))
    store.add_session(session("s2", repo="https://github.com/c/d"))
    assert store.get_session("s1") == session("s1", now=10.5)
    expect_not_found(lambda: store.get_session("nope"), "There is no session 'nope'")
    assert store.count_active() == 2
    assert store.count_active("https://github.com/c/d") == 1
    hint = "It may have been stopped after being idle. Launch the repository again."
    assert expect_not_found(lambda: routes.lookup("s1"), "Session s1 is not running").hint == hint
    store.update_session("s1", backend_id="pid:1", target="http://127.0.0.1:9")
    routes.add(Route("s1", "http://127.0.0.1:9", "tok-1", owner="ada"))
    assert routes.lookup("s1") == Route("s1", "http://127.0.0.1:9", "tok-1", owner="ada")
    assert [r.session_id for r in store.sessions("running")] == ["s1"]
    assert sorted(r.session_id for r in store.sessions("starting", "running")) == ["s1", "s2"]
    routes.remove("s1")
    assert store.get_session("s1").target == ""
    store.update_session("s1", status="stopped", stopped_at=99.5, stop_reason="idle")
    stopped = store.get_session("s1")
    assert (stopped.status, stopped.stopped_at, stopped.stop_reason, stopped.token) == (
        "stopped", 99.5, "idle", "tok-1")
    assert expect_not_found(lambda: routes.lookup("s1"), "Session s1 is not running").hint == hint
    expect_not_found(lambda: routes.lookup("ghost"), "Session ghost is not running")
    assert store.count_active() == 1
    assert store.sessions() == []

    # Events, replay and follow.
    built = Event(Phase.BUILT, "Built.\n", {"imageName": "img", "n": 2.5, "tags": ["a"]})
    assert [events.append("l4", e) for e in (Event(Phase.WAITING, "w\n"), built)] == [1, 2]
    assert events.read("l4") == [(1, Event(Phase.WAITING, "w\n")), (2, built)]
    assert events.read("l4", 1) == [(2, built)]
    assert events.read("nothing") == []

    async def follow() -> list[tuple[int, Event] | None]:
        seen: list[tuple[int, Event] | None] = []
        async for item in events.follow("l4", 1, tick=0.05):
            seen.append(item)
            if item is None:
                events.append("l4", READY)
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), timeout=10))
    assert seen[0] == (2, built)
    assert seen[-1] == (3, READY)
    assert seen[1:-1] and all(item is None for item in seen[1:-1])


# ----- held writes (the gateway) -------------------------------------------------------------


def counted(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb.*",
                                lambda model, **_: calls.append(model.name))
    return calls


def test_a_held_launch_is_written_in_one_call_and_its_final_event_flushes(
        client: Any, clock: Clock) -> None:
    gateway = DynamoState(client, TABLE, clock=clock, write_behind=True, flush_after=3600)
    other = DynamoState(client, TABLE)
    calls = counted(client)
    gateway.create_launch("l1", "gh", "a/b/main", clock.now)
    gateway.update_launch("l1", resolved_ref="abc", image_key="k")
    assert gateway.append("l1", Event(Phase.WAITING, "w\n")) == 1
    gateway.add_session(dataclasses.replace(session("s1"), launch_id="l1"))
    gateway.update_session("s1", backend_id="arn:task/1")
    # Read-your-writes here, nothing in the table yet, and no call made.
    assert gateway.get_launch("l1")["image_key"] == "k"  # type: ignore[index]
    assert gateway.get_session("s1").backend_id == "arn:task/1"
    assert gateway.read("l1") == [(1, Event(Phase.WAITING, "w\n"))]
    assert calls == []
    assert other.get_launch("l1") is None

    calls.clear()
    gateway.flush("l1")
    assert calls == ["TransactWriteItems"]
    assert other.get_launch("l1")["resolved_ref"] == "abc"  # type: ignore[index]
    assert other.get_session("s1").backend_id == "arn:task/1"
    assert other.unfinished_launches() == ["l1"]
    assert other.read("l1") == [(1, Event(Phase.WAITING, "w\n"))]
    calls.clear()
    gateway.flush("l1")  # nothing held: no call
    assert calls == []

    calls.clear()
    gateway.add(Route("s1", "http://10.0.0.5:8888", "tok", owner=""))
    gateway.update_launch("l1", session_id="s1", phase="ready", finished_at=clock.now + 3)
    assert gateway.append("l1", READY) == 2
    # The final event went out with the route and the launch, before anyone heard of it.
    assert calls == ["TransactWriteItems"]
    calls.clear()
    assert other.lookup("s1") == Route("s1", "http://10.0.0.5:8888", "tok", owner="ada")
    assert other.get_launch("l1")["phase"] == "ready"  # type: ignore[index]
    assert other.unfinished_launches() == []
    assert other.launch_durations("k", False) == [3.0]
    assert [seq for seq, _e in other.read("l1")] == [1, 2]
    # Released: later writes of its session go straight to the table.
    gateway.update_session("s1", last_activity=clock.now + 60)
    assert calls[-1] == "UpdateItem"
    assert gateway.read("l1") == other.read("l1")


def test_held_writes_go_out_once_the_oldest_is_due(client: Any, clock: Clock) -> None:
    gateway = DynamoState(client, TABLE, clock=clock, write_behind=True, flush_after=0)
    calls = counted(client)
    gateway.create_launch("l1", "gh", "a/b/main", clock.now)
    gateway.append("l1", Event(Phase.WAITING, "w\n"))
    assert calls == ["TransactWriteItems"]
    assert DynamoState(client, TABLE).read("l1") == [(1, Event(Phase.WAITING, "w\n"))]


def test_held_events_are_renumbered_after_another_writers(client: Any, clock: Clock) -> None:
    gateway = DynamoState(client, TABLE, clock=clock, write_behind=True, flush_after=3600)
    gateway.create_launch("l1", "gh", "a/b/main", clock.now)
    gateway.flush("l1")
    gateway.append("l1", Event(Phase.WAITING, "mine\n"))
    # The reconciler (another process) wrote first.
    DynamoState(client, TABLE).append("l1", Event(Phase.WAITING, "theirs\n"))
    gateway.flush("l1")
    assert [(seq, e.message) for seq, e in DynamoState(client, TABLE).read("l1")] == [
        (1, "theirs\n"), (2, "mine\n")]


def test_a_held_stream_is_followed_from_memory(client: Any, clock: Clock) -> None:
    gateway = DynamoState(client, TABLE, clock=clock, write_behind=True, flush_after=3600,
                          poll_interval=0.01)
    gateway.create_launch("l1", "gh", "a/b/main", clock.now)
    calls = counted(client)

    async def follow() -> list[int]:
        seen: list[int] = []
        gateway.append("l1", Event(Phase.WAITING, "w\n"))
        async for item in gateway.follow("l1", 0, tick=0.05):
            if item is None:
                gateway.append("l1", READY)
                continue
            seen.append(item[0])
        return seen

    assert asyncio.run(asyncio.wait_for(follow(), timeout=10)) == [1, 2]
    assert calls == ["TransactWriteItems"]  # the final flush; no polling


def test_one_process_at_a_time_takes_a_launch_over(backend: Backend) -> None:
    store, _routes, _events = backend
    store.create_launch("l1", "gh", "a/b/main", 10.0)
    store.update_launch("l1", request="{}", driver="gw-a", lease_until=70.0)
    store.flush("l1")
    assert store.take_launch("l1", "gw-b", was_driver="gw-a", was_lease=70.0, lease_until=200.0)
    # A second taker read the same old driver and lease: too late.
    assert not store.take_launch("l1", "gw-c", was_driver="gw-a", was_lease=70.0,
                                 lease_until=210.0)
    launch = store.get_launch("l1")
    assert launch is not None and (launch["driver"], launch["lease_until"]) == ("gw-b", 200.0)
    store.create_launch("l2", "gh", "a/b/main", 10.0)  # created through the API: no driver
    store.flush("l2")
    assert store.take_launch("l2", "gw-b", was_driver="", was_lease=None, lease_until=99.0)
    store.update_launch("l2", phase="ready", finished_at=50.0)
    store.flush("l2")
    assert not store.take_launch("l2", "gw-c", was_driver="gw-b", was_lease=99.0,
                                 lease_until=300.0)
    assert not store.take_launch("ghost", "gw-c", was_driver="", was_lease=None, lease_until=1.0)


# ----- session quotas: the check and the record in one transaction ---------------------------

REPO = "https://github.com/a/b"


def quota(client: Any, pk: str = "QUOTA#sessions") -> int | None:
    item = client.get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": "QUOTA"}}).get("Item")
    return int(item["active"]["N"]) if item else None


def repo_quota(client: Any, repo: str = REPO) -> int | None:
    import hashlib

    return quota(client, f"QUOTA#repo#{hashlib.sha256(repo.encode()).hexdigest()}")


@pytest.fixture
def atomic_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks a transaction's conditions and then writes, with no lock; DynamoDB
    isolates transactions (a conflicting one is cancelled, see the Stubber test below)."""
    lock = threading.Lock()
    original = DynamoDBBackend.transact_write_items

    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(*args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", locked)


def test_simultaneous_reservations_fill_the_quota_exactly(client: Any,
                                                          atomic_transactions: None) -> None:
    states = [DynamoState(client, TABLE) for _ in range(5)]  # five gateways
    barrier = threading.Barrier(25)

    def reserve(i: int) -> Reservation:
        barrier.wait()
        return states[i % 5].reserve_session(session(f"s{i}"), max_total=5, max_of_repo=25)

    with ThreadPoolExecutor(25) as pool:
        answers = list(pool.map(reserve, range(25)))
    reserved = [f"s{i}" for i, answer in enumerate(answers) if answer.reserved]
    assert len(reserved) == 5
    assert {(a.refused, a.active) for a in answers if not a.reserved} == {("server", 5)}
    assert (quota(client), repo_quota(client)) == (5, 5)
    for i in range(25):  # a refused launch wrote no session
        item = client.get_item(TableName=TABLE, Key={"pk": {"S": f"SESSION#s{i}"},
                                                    "sk": {"S": "SESSION"}}).get("Item")
        assert (item is not None) == (f"s{i}" in reserved)


def test_a_reservation_is_one_call_and_a_refusal_writes_nothing(state: DynamoState,
                                                                client: Any) -> None:
    calls = counted(client)
    assert state.reserve_session(session("s1"), max_total=2, max_of_repo=1).reserved
    assert calls == ["TransactWriteItems"]
    assert state.get_session("s1") == session("s1")
    assert state.count_active() == 1
    # The repository's limit, with the count as the refused transaction found it.
    calls.clear()
    assert state.reserve_session(session("s2"), max_total=2, max_of_repo=1) == Reservation(
        "repo", 1)
    assert calls == ["TransactWriteItems"]  # the count came back with the refusal
    assert state.reserve_session(session("s3", repo="https://github.com/c/d"), max_total=2,
                                 max_of_repo=1).reserved
    assert state.reserve_session(session("s4", repo="https://github.com/e/f"), max_total=2,
                                 max_of_repo=1) == Reservation("server", 2)
    assert (quota(client), repo_quota(client)) == (2, 1)
    with pytest.raises(SessionNotFound):
        state.get_session("s2")
    with pytest.raises(SessionNotFound):
        state.get_session("s4")
    # A long URL is counted under its digest: keys stay short.
    long_repo = "https://example.org/" + "x" * 3000
    assert state.reserve_session(session("s5", repo=long_repo), max_total=3,
                                 max_of_repo=1).reserved
    assert repo_quota(client, long_repo) == 1


def test_stopping_a_reserved_session_gives_its_slot_back_once(state: DynamoState,
                                                               client: Any) -> None:
    for name in ("s1", "s2"):
        assert state.reserve_session(session(name), max_total=2, max_of_repo=2).reserved
    state.add(Route("s2", "http://10.0.0.5:8888", "tok"))  # starting -> running: still counted
    assert quota(client) == 2
    state.update_session("s1", status="stopped", stopped_at=5.0, stop_reason="idle")
    assert (quota(client), repo_quota(client)) == (1, 1)
    stopped = state.get_session("s1")
    assert (stopped.status, stopped.stopped_at, stopped.stop_reason) == ("stopped", 5.0, "idle")
    assert "counted" not in raw(client, "SESSION#s1", "SESSION")
    assert raw(client, "SESSION#s1", "SESSION")["gsi1pk"] == {"S": "SESSIONS#stopped"}
    state.update_session("s1", status="stopped", stop_reason="again")  # no second release
    assert (quota(client), repo_quota(client)) == (1, 1)
    assert state.get_session("s1").stop_reason == "again"
    state.update_session("s2", status="stopped")
    assert (quota(client), repo_quota(client)) == (0, 0)
    # A session recorded outside the quotas never touches the counters.
    state.add_session(session("s3"))
    state.update_session("s3", status="stopped")
    assert quota(client) == 0
    assert state.reserve_session(session("s4"), max_total=1, max_of_repo=1).reserved


def test_a_held_launch_goes_out_with_its_reservation(client: Any, clock: Clock) -> None:
    gateway = DynamoState(client, TABLE, clock=clock, write_behind=True, flush_after=3600)
    other = DynamoState(client, TABLE)
    gateway.create_launch("l1", "gh", "a/b/main", clock.now)
    gateway.update_launch("l1", resolved_ref="abc")
    gateway.append("l1", Event(Phase.WAITING, "w\n"))
    calls = counted(client)
    record = dataclasses.replace(session("s1"), launch_id="l1")
    assert gateway.reserve_session(record, max_total=5, max_of_repo=5).reserved
    assert calls == ["TransactWriteItems"]
    # A reserved session never exists without its launch, which a reconciler can find.
    assert other.get_launch("l1")["resolved_ref"] == "abc"  # type: ignore[index]
    assert other.unfinished_launches() == ["l1"]
    assert other.get_session("s1").status == "starting"
    # Later writes of the session are held again, and sent with the launch's next flush.
    calls.clear()
    gateway.update_session("s1", image_key="k2", backend_id="arn:task/1")
    assert calls == []
    gateway.flush("l1")
    assert calls == ["TransactWriteItems"]
    assert other.get_session("s1").backend_id == "arn:task/1"
    assert other.read("l1") == [(1, Event(Phase.WAITING, "w\n"))]
    # A launch that fails gives its slot back, its held writes first.
    gateway.update_session("s1", target="http://10.0.0.5:8888")
    gateway.update_session("s1", status="stopped", stop_reason="launch failed")
    assert quota(client) == 0
    stopped = other.get_session("s1")
    assert (stopped.status, stopped.target) == ("stopped", "http://10.0.0.5:8888")
    assert gateway.get_session("s1").status == "stopped"


def cancelled(codes: list[str], *, with_reasons: bool = True,
              item: dict[str, Any] | None = None) -> dict[str, Any]:
    reasons = [{"Code": code, **({"Item": item} if item and code != "None" else {})}
               for code in codes]
    return {
        "service_error_code": "TransactionCanceledException",
        "service_message": "Transaction cancelled, please refer cancellation reasons for "
                           f"specific reasons [{', '.join(codes)}]",
        "modeled_fields": {"CancellationReasons": reasons} if with_reasons else {},
    }


def test_a_reservation_that_meets_a_concurrent_transaction_is_tried_again() -> None:
    state, stub = stubbed()
    stub.add_client_error("transact_write_items",
                          **cancelled(["TransactionConflict", "None", "None"]))
    stub.add_client_error("transact_write_items",
                          **cancelled(["None", "TransactionConflict", "None"]))
    stub.add_response("transact_write_items", {})
    with stub:
        assert state.reserve_session(session("s1"), max_total=5, max_of_repo=5).reserved
        stub.assert_no_pending_responses()


def test_cancellation_reasons_are_read_from_the_message_when_missing() -> None:
    state, stub = stubbed()
    stub.add_client_error("transact_write_items", **cancelled(
        ["ConditionalCheckFailed", "None", "None"], with_reasons=False))
    stub.add_response("get_item", {"Item": {"pk": {"S": "QUOTA#sessions"},
                                            "sk": {"S": "QUOTA"}, "active": {"N": "7"}}})
    with stub:
        assert state.reserve_session(session("s1"), max_total=7, max_of_repo=5) == Reservation(
            "server", 7)
        stub.assert_no_pending_responses()


def test_a_retried_call_that_went_through_finds_its_own_reservation() -> None:
    state, stub = stubbed()
    mine = {"pk": {"S": "SESSION#s1"}, "sk": {"S": "SESSION"}, "token": {"S": "token-s1"},
            "counted": {"N": "1"}}
    stub.add_client_error("transact_write_items",
                          **cancelled(["None", "None", "ConditionalCheckFailed"]))
    stub.add_response("get_item", {"Item": mine})
    stub.add_client_error("transact_write_items",
                          **cancelled(["None", "None", "ConditionalCheckFailed"]))
    stub.add_response("get_item", {"Item": {**mine, "token": {"S": "someone else's"}}})
    with stub:
        assert state.reserve_session(session("s1"), max_total=5, max_of_repo=5).reserved
        with pytest.raises(ValueError, match="already exists"):
            state.reserve_session(session("s1"), max_total=5, max_of_repo=5)
        stub.assert_no_pending_responses()


def test_both_backends_reserve_alike(backend: Backend) -> None:
    store, routes, _events = backend
    assert store.reserve_session(session("s1"), max_total=2, max_of_repo=1).reserved
    assert store.reserve_session(session("s2"), max_total=2, max_of_repo=1) == Reservation(
        "repo", 1)
    assert store.reserve_session(session("s3", repo="https://github.com/c/d"), max_total=2,
                                 max_of_repo=1).reserved
    assert store.reserve_session(session("s4", repo="https://github.com/e/f"), max_total=2,
                                 max_of_repo=1) == Reservation("server", 2)
    assert store.count_active() == 2
    routes.add(Route("s1", "http://127.0.0.1:9", "tok"))
    store.update_session("s1", status="stopped", stopped_at=9.0)
    assert store.reserve_session(session("s4", repo="https://github.com/e/f"), max_total=2,
                                 max_of_repo=1).reserved
    assert sorted(r.session_id for r in store.sessions("starting", "running")) == ["s3", "s4"]
