"""The AWS configuration end to end, against ``moto_server`` on 127.0.0.1.

The session gateway is the real one (``aws_service`` behind the aiohttp server): its
state lives in (moto) DynamoDB, builds go through CodeBuild, S3, CloudWatch Logs and ECR,
sessions through ECS task definitions and RunTask. Only what moto cannot do is done by
the stand-ins of ``aws_standins.py``, as local processes: the build itself (the uv builder
instead of repo2docker) and the task's container (the real ``session-start`` and a real
Jupyter server on a loopback address of its own). Nothing contacts a host but 127.x.x.x
and the package index the uv builds install from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.moto_api import state_manager
from moto.server import ThreadedMotoServer

from binderless.aws.dynamodb import DynamoState, table_definition
from binderless.aws.s3 import client_config
from binderless.aws.wiring import Overrides, aws_service
from binderless.backends.protocols import SessionRecord
from binderless.errors import SessionNotFound
from binderless.providers.git import GitProvider
from binderless.service import LaunchService
from binderless.settings import Settings
from binderless.urlguard import UrlGuard
from tests.aws_api_rules import enforce_api_rules
from tests.aws_network import session_network
from tests.conftest import file_spec, free_port, git
from tests.e2e.aws_standins import LocalCodeBuildProject, LocalFargateTasks, LocalImages
from tests.e2e.streams import Stream, read_stream, run_code
from tests.functional.inprocess import serving

pytestmark = pytest.mark.e2e

MakeRepo = Callable[[str], Path]
T = TypeVar("T")

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
REPOSITORY = "binderless-envs"
TABLE = "binderless-e2e"
BUCKET = "binderless-e2e"
PROJECT = "binderless-build"
CLUSTER = "binderless"
SESSION_LOGS = "/binderless/sessions"
BUILD_LOGS = f"/aws/codebuild/{PROJECT}"
POLL = 0.1
PHASES = ["waiting", "fetching", "building", "built", "launching", "ready"]
TRUST = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":'
         '{"Service":"%s"},"Action":"sts:AssumeRole"}]}')


# ----- moto and the deployment's resources ---------------------------------------------


class Moto:
    """Clients of moto_server at ``endpoint``, with fake credentials."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # Clients are thread-safe, making them is not: one session, one client at a time.
        self._session = boto3.session.Session(aws_access_key_id="testing",
                                              aws_secret_access_key="testing",
                                              region_name=REGION)
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        config = None
        if service == "s3":  # the gateway's own config, with path-style URLs on an IP
            config = client_config().merge(Config(s3={"addressing_style": "path"}))
        with self._lock:
            client = self._session.client(service, endpoint_url=self.endpoint, config=config)
        # What AWS refuses and moto accepts (ListTasks' filters) fails here too.
        return enforce_api_rules(client) if service == "ecs" else client


@dataclass(frozen=True)
class Deployment:
    subnet: str
    security_group: str
    execution_role: str
    task_role: str


@pytest.fixture(scope="module")
def moto_server() -> Iterator[Moto]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    # One line per request otherwise: failure reports would drown in them.
    requests_log = logging.getLogger("werkzeug")
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server.start()
    # moto moves a task one state on at every DescribeTasks (RUNNING to STOPPED in a few):
    # the stand-ins know the tasks' real states; moto's must stay as RunTask left them.
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
    try:
        yield Moto(f"http://127.0.0.1:{port}")
    finally:
        state_manager.unset_transition("ecs::task")
        server.stop()
        requests_log.setLevel(level)


@pytest.fixture(scope="module")
def deployment(moto_server: Moto) -> Deployment:
    return create_deployment(moto_server)


def create_deployment(moto_server: Moto) -> Deployment:
    """What ``infra/`` creates: table, bucket, registry, network, cluster, roles, logs,
    and the CodeBuild project."""
    aws = moto_server.client
    aws("dynamodb").create_table(**table_definition(TABLE))
    aws("s3").create_bucket(Bucket=BUCKET)
    aws("ecr").create_repository(repositoryName=REPOSITORY)
    network = session_network(aws("ec2"), REGION)
    (subnet,), group = network.subnets, network.security_group
    iam = aws("iam")
    roles = {name: iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST % service)
             ["Role"]["Arn"] for name, service in (
                 ("execution", "ecs-tasks.amazonaws.com"), ("session", "ecs-tasks.amazonaws.com"),
                 ("build", "codebuild.amazonaws.com"))}
    aws("ecs").create_cluster(clusterName=CLUSTER)
    logs = aws("logs")
    logs.create_log_group(logGroupName=SESSION_LOGS)
    logs.create_log_group(logGroupName=BUILD_LOGS)
    aws("codebuild").create_project(
        name=PROJECT, source={"type": "S3", "location": f"{BUCKET}/sources/"},
        artifacts={"type": "NO_ARTIFACTS"}, serviceRole=roles["build"],
        environment={"type": "LINUX_CONTAINER", "image": f"{REGISTRY}/binderless-runner:latest",
                     "computeType": "BUILD_GENERAL1_MEDIUM", "privilegedMode": True})
    return Deployment(subnet, group, roles["execution"], roles["session"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> LocalImages:
    """The local builds' environments ("images"), shared by the tests of this module."""
    return LocalImages(tmp_path_factory.mktemp("aws-images"))


# ----- the gateway -------------------------------------------------------------------------


@dataclass
class Gateway:
    base: str
    service: LaunchService
    project: LocalCodeBuildProject
    tasks: LocalFargateTasks
    state: DynamoState  # the test's own view of the table
    aws: Callable[[str], Any]
    loop: asyncio.AbstractEventLoop  # the one the gateway's server and service run on

    def build_url(self, spec: str, query: str = "") -> str:
        return f"{self.base}/build/{spec}{query}"

    def assert_no_orphans(self) -> None:
        assert_no_orphans(self.tasks, self.state)


def assert_no_orphans(tasks: LocalFargateTasks, state: DynamoState) -> None:
    """No stand-in process runs and no session is starting or running."""
    assert tasks.running() == []
    assert state.sessions("starting", "running") == []


async def stop_sessions(service: LaunchService, state: DynamoState) -> None:
    for record in state.sessions("starting", "running"):
        await service.stop_session(record.session_id, reason="test over")


def gateway_settings(deployment: Deployment, state_dir: Path) -> Settings:
    return Settings(
        mode="aws", state_dir=state_dir, aws_table=TABLE, aws_bucket=BUCKET,
        ecr_registry=REGISTRY, ecr_repository=REPOSITORY,
        base_image=f"{REGISTRY}/mirror/buildpack-deps:jammy", codebuild_project=PROJECT,
        ecs_cluster=CLUSTER, subnets=(deployment.subnet,),
        security_groups=(deployment.security_group,),
        execution_role_arn=deployment.execution_role, task_role_arn=deployment.task_role,
        session_log_group=SESSION_LOGS, session_cpu=256, session_memory=512,
        allow_local_paths=False, final_linger_seconds=0.0, keepalive_seconds=1.0,
        ready_timeout_seconds=60.0, build_timeout_seconds=300.0, cull_interval_seconds=3600.0)


@contextlib.contextmanager
def running_gateway(moto_server: Moto, deployment: Deployment, images: LocalImages,
                    workdir: Path, *, cluster: dict[str, Any] | None = None,
                    **settings: Any) -> Iterator[Gateway]:
    """A session gateway wired like ``binderless gateway``, with the two stand-ins;
    gateways given the same ``cluster`` dict share their (stand-in) session tasks."""
    projects: list[LocalCodeBuildProject] = []
    made_tasks: list[LocalFargateTasks] = []

    def project(client: Any, name: str) -> LocalCodeBuildProject:
        projects.append(LocalCodeBuildProject(client, name, client_factory=moto_server.client,
                                              images=images, log_group=BUILD_LOGS))
        return projects[-1]

    def tasks(client: Any, **kwargs: Any) -> LocalFargateTasks:
        made_tasks.append(LocalFargateTasks(client, client_factory=moto_server.client,
                                            images=images, workdir=workdir / "tasks",
                                            shared=cluster, **kwargs))
        return made_tasks[-1]

    overrides = Overrides(
        project=project, tasks=tasks, poll_interval=POLL,
        # Only here: the AWS mode refuses local paths and loopback URLs (the URL guard,
        # tested on its own elsewhere); this test serves its fixture repositories as
        # local git repositories, so its git provider allows them.
        providers={"git": GitProvider(allow_local=True, guard=UrlGuard(enforce=False))})
    config = dataclasses.replace(gateway_settings(deployment, workdir / "gateway"), **settings)
    service = aws_service(config, moto_server.client, overrides)
    state = DynamoState(moto_server.client("dynamodb"), TABLE)
    [stand_in_project], [stand_in_tasks] = projects, made_tasks
    try:
        with serving(service) as (base, loop):
            yield Gateway(base, service, stand_in_project, stand_in_tasks, state,
                          moto_server.client, loop)
    finally:
        stand_in_tasks.close()
        stand_in_project.close()


@pytest.fixture
def gateway(moto_server: Moto, deployment: Deployment, images: LocalImages,
            tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(moto_server, deployment, images, tmp_path) as gateway:
        yield gateway
        # On AWS a gateway leaves the sessions running when it stops (they belong to the
        # shared state; the reconciler culls them): stop them as the culler would, then
        # nothing may be left behind.
        asyncio.run(stop_sessions(gateway.service, gateway.state))
        assert_no_orphans(gateway.tasks, gateway.state)


# ----- helpers -----------------------------------------------------------------------------


def collapsed(stream: Stream) -> list[str]:
    return [p for i, p in enumerate(stream.phases) if i == 0 or p != stream.phases[i - 1]]


def session_id(ready: dict[str, Any]) -> str:
    return str(ready["url"]).rstrip("/").rsplit("/", 1)[-1]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def launch_id(stream: Stream) -> str:
    return stream.ids[-1].split(":", 1)[0]


def eventually(check: Callable[[], T], timeout: float = 15.0) -> T:
    """``check()``'s result once it no longer fails: a launch's clean-up ends just after
    its ``failed`` event."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def builds() -> int:
    return LocalCodeBuildProject.builds_started


# ----- tests -------------------------------------------------------------------------------


def test_launch_builds_on_codebuild_and_runs_a_fargate_task(gateway: Gateway,
                                                            fixture_repo: MakeRepo) -> None:
    repo = fixture_repo("python-requirements")
    sha = git("rev-parse", "HEAD", cwd=repo)
    spec = file_spec(repo)
    before = builds()
    stream = read_stream(gateway.build_url(spec), timeout=120)

    assert stream.status == 200
    assert collapsed(stream) == PHASES, stream.text()
    assert builds() == before + 1
    text = stream.text()
    # The build: source zipped to S3, CodeBuild started, its CloudWatch log followed.
    assert "on AWS CodeBuild" in text and "Uploaded the repository to S3" in text
    assert f"Started AWS CodeBuild build {PROJECT}:" in text
    assert "Pushed " + REGISTRY in text  # a line of the build's CloudWatch log
    built = next(e for e in stream.events if e["phase"] == "built")
    assert built["message"] == "Built image, launching...\n"
    image = str(built["imageName"])
    assert image.startswith(f"{REGISTRY}/{REPOSITORY}:")
    # The session: a Fargate task, waited for while PROVISIONING.
    assert "Started Fargate task" in text and "Task running at 127." in text

    ready = stream.final
    assert ready["url"].startswith(gateway.base + "/user/") and ready["url"].endswith("/")
    assert len(ready["token"]) >= 32
    assert ready["image"] == image
    assert ready["repo_url"] == "file://" + str(repo)
    assert ready["binder_launch_host"] == gateway.base + "/"
    assert ready["binder_request"] == f"v2/{spec}"
    assert ready["binder_persistent_request"].endswith(f"/{sha}")
    assert ready["binder_client_ip"] == "127.0.0.1"
    assert len(stream.ids) == len(stream.events)

    # What AWS (moto) saw: the image in ECR, the build's source deleted, the checkout in
    # S3, the task run with the session's environment, and the route in DynamoDB.
    tag = image.rsplit(":", 1)[1]
    ecr = gateway.aws("ecr")
    assert ecr.describe_images(repositoryName=REPOSITORY,
                               imageIds=[{"imageTag": tag}])["imageDetails"]
    s3 = gateway.aws("s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="sources/")["KeyCount"] == 0
    sid = session_id(ready)
    s3.head_object(Bucket=BUCKET, Key=f"checkouts/{sid}.tar.gz")
    record = gateway.state.get_session(sid)
    assert record.status == "running"
    host = record.target.removeprefix("http://").removesuffix(":8888")
    assert host.startswith("127.") and host != "127.0.0.1", record.target
    task = gateway.aws("ecs").describe_tasks(cluster=CLUSTER,
                                             tasks=[record.backend_id])["tasks"][0]
    override = task["overrides"]["containerOverrides"][0]
    environment = {pair["name"]: pair["value"] for pair in override["environment"]}
    # Nothing that opens the session is readable through the ECS API: the task got the
    # token's hash, and the token and the checkout's URL from the gateway once it ran.
    assert "JUPYTER_TOKEN" not in environment and "BINDERLESS_CHECKOUT_URL" not in environment
    assert environment["BINDERLESS_TOKEN_SHA256"] == hashlib.sha256(
        ready["token"].encode()).hexdigest()
    assert ready["token"] not in json.dumps(task, default=str)
    assert "X-Amz-" not in json.dumps(task, default=str)
    assert "--ip=0.0.0.0" in override["command"]
    assert gateway.state.lookup(sid).target == record.target

    # A kernel runs code through the gateway's proxy, in the built environment, in the
    # checkout session-start unpacked into $HOME (it then drops the URL).
    out = run_code(ready["url"], ready["token"],
                   "import os, six\nprint(6 * 7, os.environ['BINDER_REQUEST'], "
                   "os.getcwd() == os.environ['HOME'], 'BINDERLESS_CHECKOUT_URL' in os.environ)")
    assert out.split() == ["42", f"v2/{spec}", "True", "False"]
    listing = httpx.get(ready["url"] + "api/contents", headers=auth(ready["token"])).json()
    assert {"README.md", "index.ipynb", "requirements.txt"} <= {c["name"] for c in
                                                                listing["content"]}
    # Without the token the gateway refuses.
    assert httpx.get(ready["url"] + "api/contents").status_code == 403
    assert httpx.get(ready["url"] + "api/contents?token=wrong").status_code == 403
    # The server's output reached the task's CloudWatch stream (the awslogs driver's).
    page = gateway.aws("logs").get_log_events(
        logGroupName=SESSION_LOGS, logStreamName=LocalFargateTasks.log_stream(record.backend_id),
        startFromHead=True)
    assert any("Jupyter" in event["message"] for event in page["events"])


def test_second_launch_finds_the_image_and_runs_the_new_checkout(
        gateway: Gateway, fixture_repo: MakeRepo) -> None:
    repo = fixture_repo("python-requirements")
    first = read_stream(gateway.build_url(file_spec(repo), "?build_only=true"), timeout=120)
    assert first.final["phase"] == "ready", first.text()
    before = builds()

    # A new commit that changes no environment file: same image, new checkout.
    (repo / "README.md").write_text("# changed after the image was built\n")
    git("commit", "-qam", "change only the README", cwd=repo)
    second = read_stream(gateway.build_url(file_spec(repo)), timeout=120)
    assert collapsed(second) == ["waiting", "fetching", "built", "launching", "ready"], (
        second.text())
    built = next(e for e in second.events if e["phase"] == "built")
    assert built["message"] == "Found built image, launching...\n"
    assert built["imageName"] == first.final["imageName"]
    assert builds() == before
    # The session has this launch's checkout (session-start), not the image's copy.
    ready = second.final
    readme = httpx.get(ready["url"] + "api/contents/README.md",
                       headers=auth(ready["token"])).json()
    assert readme["content"] == "# changed after the image was built\n"


def test_each_session_runs_its_own_start_script_on_a_shared_image(
        gateway: Gateway, fixture_repo: MakeRepo) -> None:
    """python-requirements and start-script have the same environment files, so they share
    one image; only the second has a start script, and only its sessions may run it."""
    plain = read_stream(gateway.build_url(file_spec(fixture_repo("python-requirements"))),
                        timeout=120).final
    with_start = read_stream(gateway.build_url(file_spec(fixture_repo("start-script"))),
                             timeout=120).final
    assert plain["image"] == with_start["image"]
    code = "import os; print(os.environ.get('FROM_START_SCRIPT'))"
    assert run_code(with_start["url"], with_start["token"], code) == "yes\n"
    assert run_code(plain["url"], plain["token"], code) == "None\n"


def test_simultaneous_launches_of_a_new_environment_share_one_build(
        gateway: Gateway, fixture_repo: MakeRepo) -> None:
    url = gateway.build_url(file_spec(fixture_repo("postbuild")))
    before = builds()
    read = functools.partial(read_stream, timeout=120)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        streams = list(pool.map(read, [url, url]))

    for stream in streams:
        assert stream.final["phase"] == "ready", stream.text()
    assert builds() == before + 1
    assert sum("already being built" in s.text() for s in streams) == 1
    assert streams[0].final["image"] == streams[1].final["image"]
    records = [gateway.state.get_session(session_id(s.final)) for s in streams]
    assert records[0].target != records[1].target  # two tasks, two addresses, one port
    for stream in streams:
        ready = stream.final
        # postBuild's file is in the image's home, under the session's checkout.
        made = httpx.get(ready["url"] + "api/contents/generated.txt",
                         headers=auth(ready["token"]))
        assert made.status_code == 200 and made.json()["content"] == "made by postBuild\n"


def test_failing_build_ends_with_one_failed_event_and_starts_no_task(
        gateway: Gateway, fixture_repo: MakeRepo) -> None:
    before = builds()
    stream = read_stream(gateway.build_url(file_spec(fixture_repo("failing-postbuild"))),
                         timeout=120)

    failed = [e for e in stream.events if e["phase"] == "failed"]
    assert len(failed) == 1 and stream.final is failed[0], stream.text()
    message = failed[0]["message"]
    assert "could not build the image on AWS CodeBuild" in message
    assert "postBuild failed (exit code 3)" in message, message
    assert failed[0]["status_code"] == 500
    assert "launching" not in stream.phases
    assert builds() == before + 1
    assert gateway.tasks.tasks == {}  # RunTask was never called
    assert gateway.aws("s3").list_objects_v2(Bucket=BUCKET, Prefix="sources/")["KeyCount"] == 0
    launch = gateway.state.get_launch(launch_id(stream))
    assert launch is not None
    key = str(launch["image_key"])
    claim = gateway.state.get_build(key)
    assert claim is not None and claim.status == "failed"
    with pytest.raises(ClientError, match="ImageNotFound"):
        gateway.aws("ecr").describe_images(repositoryName=REPOSITORY,
                                           imageIds=[{"imageTag": key}])
    gateway.assert_no_orphans()


def test_task_that_stops_before_it_is_ready_fails_the_launch_and_leaves_nothing(
        gateway: Gateway, fixture_repo: MakeRepo) -> None:
    stream = read_stream(gateway.build_url(file_spec(fixture_repo("start-crash"))),
                         timeout=120)

    failed = [e for e in stream.events if e["phase"] == "failed"]
    assert len(failed) == 1 and stream.final is failed[0], stream.text()
    assert "stopped before" in failed[0]["message"], failed[0]["message"]
    assert "launching" in stream.phases  # the task was started, then it stopped
    # The session was recorded, then stopped (just after the failed event); its route is
    # gone.
    def stopped_session() -> SessionRecord:
        sessions = [r for r in gateway.state.sessions("stopped")
                    if r.launch_id == launch_id(stream)]
        assert len(sessions) == 1 and sessions[0].stop_reason == "launch failed"
        return sessions[0]

    sid = eventually(stopped_session).session_id
    with pytest.raises(SessionNotFound):
        gateway.state.lookup(sid)
    assert httpx.get(f"{gateway.base}/user/{sid}/api/status").status_code == 404
    # Its task ran (and exited 1), and ECS was told to stop it.
    [task] = gateway.tasks.tasks.values()
    assert task.state().last_status == "STOPPED" and task.state().exit_code == 1
    described = gateway.aws("ecs").describe_tasks(cluster=CLUSTER, tasks=[task.arn])["tasks"]
    assert described[0]["desiredStatus"] == "STOPPED"
    eventually(gateway.assert_no_orphans)


# ----- a gateway crashes in the middle of a launch -------------------------------------------


class GatewayCrash(BaseException):
    """Stands for the process dying: no handler of the launch runs (they catch Exception
    and CancelledError), nothing more is written, the task it started keeps running."""


class CrashAfterStart:
    """The gateway's spawner, dying just after the session's task has been started."""

    def __init__(self, spawner: Any) -> None:
        self.spawner = spawner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spawner, name)

    async def start(self, spec: Any, log: Callable[[str], None]) -> Any:
        await self.spawner.start(spec, log)
        raise GatewayCrash


LEASE = 1.0


@contextlib.contextmanager
def crashed_and_spare_gateways(moto_server: Moto, deployment: Deployment, images: LocalImages,
                               tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    cluster: dict[str, Any] = {}
    with running_gateway(moto_server, deployment, images, tmp_path / "a", cluster=cluster,
                         launch_lease_seconds=LEASE) as doomed, \
            running_gateway(moto_server, deployment, images, tmp_path / "b", cluster=cluster,
                            launch_lease_seconds=LEASE) as spare:
        doomed.service.spawner = cast(Any, CrashAfterStart(doomed.service.spawner))
        yield doomed, spare
        asyncio.run(stop_sessions(spare.service, spare.state))
        assert_no_orphans(spare.tasks, spare.state)


def start_and_crash(gateway: Gateway, spec: str) -> tuple[Stream, str]:
    """A launch on ``gateway`` up to its task's start, then the gateway dies; returns what
    its client saw and the launch's session id."""
    seen = read_stream(gateway.build_url(spec), timeout=120,
                       stop_when=lambda e: "Task running at" in str(e.get("message")))
    assert "Task running at" in seen.text(), seen.text()
    launch = gateway.state.get_launch(launch_id(seen))
    # What a takeover needs is durable before the task starts: the session, reserved (and
    # so recorded, with its id and token) in the same write as the quota check. The
    # launch's later events may still be held in memory when the gateway dies.
    assert launch is not None and launch["session_id"]
    assert gateway.state.get_session(str(launch["session_id"])).status == "starting"
    time.sleep(LEASE * 1.5)  # the dead gateway's lease runs out
    return seen, str(launch["session_id"])


def session_tasks(gateway: Gateway, session: str) -> list[str]:
    """The ECS tasks (in moto) started for ``session``."""
    ecs = gateway.aws("ecs")
    arns = ecs.list_tasks(cluster=CLUSTER)["taskArns"]
    described = ecs.describe_tasks(cluster=CLUSTER, tasks=arns, include=["TAGS"])["tasks"]
    return [t["taskArn"] for t in described
            if {"key": "binderless:session", "value": session} in t.get("tags", [])]


@dataclass
class CrashedLaunch:
    """A launch whose gateway died just after starting its task, and a spare gateway."""

    doomed: Gateway
    spare: Gateway
    spec: str
    seen: Stream  # what the client saw before the crash
    session: str
    task: str

    @property
    def launch(self) -> str:
        return launch_id(self.seen)


@pytest.fixture
def crashed(moto_server: Moto, deployment: Deployment, images: LocalImages, tmp_path: Path,
            fixture_repo: MakeRepo) -> Iterator[CrashedLaunch]:
    spec = file_spec(fixture_repo("python-requirements"))
    with crashed_and_spare_gateways(moto_server, deployment, images, tmp_path) as (a, b):
        seen, session = start_and_crash(a, spec)
        [task] = session_tasks(a, session)
        yield CrashedLaunch(a, b, spec, seen, session, task)


def test_a_reconnecting_client_resumes_a_crashed_gateways_launch_without_a_second_task(
        crashed: CrashedLaunch) -> None:
    a, b, session = crashed.doomed, crashed.spare, crashed.session
    # The browser's EventSource reconnects (to another gateway, through the load
    # balancer) with the id of the last event it saw.
    rest = read_stream(b.build_url(crashed.spec), headers={"Last-Event-ID": crashed.seen.ids[-1]},
                       timeout=120)
    assert rest.final["phase"] == "ready", rest.text()
    assert "Picking up this launch" in rest.text()
    assert session_id(rest.final) == session
    # The launch host is the one the request came to (on AWS, the public address).
    assert rest.final["url"] == f"{a.base}/user/{session}/"
    assert session_tasks(a, session) == [crashed.task]  # found and used, not started again
    assert {i.split(":")[0] for i in rest.ids} == {crashed.launch}
    assert run_code(f"{b.base}/user/{session}/", rest.final["token"], "print(6 * 7)") == "42\n"
    assert b.state.get_launch(crashed.launch)["driver"] == b.service.instance_id  # type: ignore[index]


def test_the_reconciler_finishes_a_crashed_gateways_launch_nobody_came_back_for(
        crashed: CrashedLaunch) -> None:
    b, session = crashed.spare, crashed.session
    # No client comes back, and no EventBridge event arrives: the spare gateway's
    # reconciler takes the launch over and finishes it.
    result = asyncio.run_coroutine_threadsafe(b.service.reconcile(), b.loop).result(60)
    assert result["resumed"] == [crashed.launch]
    final = eventually(lambda: ready_event(b, crashed.launch), timeout=60)
    assert session_id(final) == session
    assert session_tasks(b, session) == [crashed.task]
    assert b.state.lookup(session).token == final["token"]
    # Through the spare gateway: the "crashed" one is dead.
    assert httpx.get(f"{b.base}/user/{session}/api/status",
                     headers=auth(final["token"])).status_code == 200


def ready_event(gateway: Gateway, launch: str) -> dict[str, Any]:
    events = [e.to_json() for _seq, e in gateway.state.read(launch)]
    assert events and events[-1]["phase"] == "ready", events
    return events[-1]


def test_an_ended_sessions_changes_come_back_for_its_browser_only(
        gateway: Gateway, fixture_repo: MakeRepo) -> None:
    """An anonymous session on Fargate writes a file and changes one; it is stopped (the
    stand-in sends SIGTERM, as StopTask does) and its task POSTs them to S3 as a form
    upload that moto_server parses (session-start); the same browser is offered them and a new launch with the restore
    id finds both; another browser is refused, and nothing was saved in the gateway."""
    repo = fixture_repo("python-requirements")
    spec = file_spec(repo)
    page = httpx.get(f"{gateway.base}/v2/{spec}")
    cookie = {"Cookie": f"binderless_visitor={page.cookies['binderless_visitor']}"}
    first = read_stream(gateway.build_url(spec), headers=cookie, timeout=180)
    assert first.final["phase"] == "ready", first.text()
    url, token = first.final["url"], first.final["token"]
    for name, text in (("notes.txt", "written in the session\n"), ("README.md", "# mine\n")):
        answer = httpx.put(f"{url}api/contents/{name}", headers=auth(token),
                           json={"type": "file", "format": "text", "content": text})
        assert answer.status_code in (200, 201), answer.text
    sid = session_id(first.final)
    asyncio.run_coroutine_threadsafe(gateway.service.stop_session(sid, reason="idle"),
                                     gateway.loop).result(timeout=60)

    offers = httpx.get(f"{gateway.base}/api/restores", params={"session": sid},
                       headers=cookie).json()["restores"]
    assert [sorted(o["files"]) for o in offers] == [["README.md", "notes.txt"]], offers
    [offer] = offers
    keys = [o["Key"] for o in gateway.aws("s3").list_objects_v2(
        Bucket=BUCKET, Prefix="restores/")["Contents"]]
    assert f"restores/{offer['restore_id']}.tar" in keys
    assert not list((gateway.service.settings.state_dir / "restores").glob("*"))

    # Another browser (no visitor cookie, or another one) cannot start from them.
    other = read_stream(gateway.build_url(offer["link"].removeprefix("/v2/")), timeout=60)
    assert other.final["phase"] == "failed" and other.final["status_code"] == 403, other.text()

    again = read_stream(gateway.build_url(offer["link"].removeprefix("/v2/")),
                        headers=cookie, timeout=180)
    assert again.final["phase"] == "ready", again.text()
    for name, text in (("notes.txt", "written in the session\n"), ("README.md", "# mine\n")):
        found = httpx.get(f"{again.final['url']}api/contents/{name}",
                          headers=auth(again.final["token"])).json()
        assert found["content"] == text, found
