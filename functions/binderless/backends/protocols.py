"""The small interfaces every backend implements.

The launch service talks only to these. The local mode plugs in SQLite, a uv
builder and local Jupyter processes; the AWS mode plugs in DynamoDB, CodeBuild
with ECR, and ECS Fargate. Log sinks are plain callables taking one line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..envplan import EnvironmentPlan
from ..events import Event
from ..providers.base import ResolvedRepo

__all__ = [
    "NO_OBSERVER",
    "BuildClaim",
    "BuildClaims",
    "Builder",
    "Deliveries",
    "EnvironmentRecord",
    "EnvironmentUsage",
    "EventLog",
    "Fetcher",
    "ImageRef",
    "LogSink",
    "Observer",
    "ProjectMount",
    "RepoUse",
    "Reservation",
    "Route",
    "RouteTable",
    "SessionHandle",
    "SessionRecord",
    "SessionSpec",
    "Spawner",
    "Store",
]

LogSink = Callable[[str], None]


@dataclass(frozen=True)
class ImageRef:
    """A built environment: ``name`` is what clients see as ``imageName``."""

    key: str
    name: str
    location: str


@dataclass(frozen=True)
class ProjectMount:
    """A signed-in user's persistent project folder (see ``workspaces.py``).

    The server opens in it instead of the checkout: locally it is ``path``; in a
    container the owner's home is mounted at ``/home/jovyan/persistent`` (on AWS through
    the owner's EFS access point) and the project is ``persistent/<name>`` there.
    """

    owner: str
    name: str
    path: Path


@dataclass(frozen=True)
class SessionSpec:
    """Everything a spawner needs to start one session's Jupyter server.

    ``home`` is the session's own checkout (its HOME); ``project``, for a signed-in
    user, is the persistent folder the server opens in (``None``: it opens in ``home``).
    """

    session_id: str
    image: ImageRef
    home: Path
    base_url: str
    token: str
    environment: Mapping[str, str] = field(default_factory=dict)
    start_script: str | None = None
    project: ProjectMount | None = None
    #: A launch taken over after its driver crashed: the server may already exist.
    resume: bool = False


@dataclass(frozen=True)
class SessionHandle:
    """A started session: ``target`` is the base address the proxy forwards to."""

    session_id: str
    target: str
    backend_id: str


@dataclass(frozen=True)
class Route:
    session_id: str
    target: str
    token: str
    owner: str = ""


@dataclass(frozen=True)
class SessionRecord:
    """A session as the store keeps it (``target``/``backend_id`` are empty until started)."""

    session_id: str
    launch_id: str
    owner: str
    repo_url: str
    resolved_ref: str
    image_key: str
    home: str
    target: str
    token: str
    backend_id: str
    status: str  # starting | running | stopped
    created_at: float
    last_activity: float
    stopped_at: float | None = None
    stop_reason: str = ""


@dataclass(frozen=True)
class Reservation:
    """The answer of ``Store.reserve_session``.

    ``refused`` is ``""`` when the session was recorded, else the limit that was reached:
    ``"server"`` (``max_total``) or ``"repo"`` (``max_of_repo``); ``active`` is then how
    many sessions count against that limit.
    """

    refused: str = ""
    active: int = 0

    @property
    def reserved(self) -> bool:
        return not self.refused


class Store(Protocol):
    """Launch and session records: SQLite locally, DynamoDB on AWS.

    Launch records hold ``provider``, ``spec``, ``resolved_ref``, ``image_key``,
    ``phase``, ``session_id``, ``built`` (0/1), ``created_at`` and ``finished_at``; and,
    so that another process can take over a launch whose process died, ``request`` (the
    launch request as JSON), ``driver`` (the process driving it) and ``lease_until`` (when
    others may take it over unless the driver renews the lease).
    """

    def create_launch(self, launch_id: str, provider: str, spec: str, now: float,
                      **fields: Any) -> None:
        """Store a new launch; ``fields`` (as ``update_launch`` takes them) in the same write."""
        ...

    def update_launch(self, launch_id: str, **fields: Any) -> None: ...

    def get_launch(self, launch_id: str) -> dict[str, Any] | None: ...

    def take_launch(self, launch_id: str, driver: str, *, was_driver: str,
                    was_lease: float | None, lease_until: float) -> bool:
        """Become the driver of an unfinished launch whose driver and lease are still
        ``was_driver`` and ``was_lease``; ``False`` when another process got there first
        or the launch has finished."""
        ...

    def unfinished_launches(self) -> list[str]:
        """Launches not yet ``ready`` or ``failed``."""
        ...

    def launch_durations(self, image_key: str, built: bool, limit: int = 10) -> list[float]:
        """Seconds from request to ``ready`` of recent launches of this environment."""
        ...

    def add_session(self, record: SessionRecord) -> None:
        """Record a session as it is, outside the quotas (``reserve_session`` counts)."""
        ...

    def reserve_session(self, record: SessionRecord, *, max_total: int,
                        max_of_repo: int) -> Reservation:
        """Record ``record`` (``starting``) only if fewer than ``max_total`` sessions are
        starting or running, and fewer than ``max_of_repo`` of its ``repo_url``: the check
        and the write are one step, so that simultaneous launches cannot all pass the
        check. The slot is released when the session's status leaves starting/running
        (``update_session(status=...)``). Nothing is written when refused."""
        ...

    def update_session(self, session_id: str, **fields: Any) -> None: ...

    def get_session(self, session_id: str) -> SessionRecord:
        """Raises ``SessionNotFound``."""
        ...

    def sessions(self, *statuses: str) -> list[SessionRecord]: ...

    def count_active(self, repo_url: str | None = None) -> int:
        """Sessions ``starting`` or ``running``, overall or of one repository."""
        ...

    def active_counts(self, repo_url: str) -> tuple[int, int]:
        """Sessions ``starting`` or ``running``: in all, and of ``repo_url`` (one read)."""
        ...

    def flush(self, launch_id: str) -> None:
        """Make every write of this launch so far durable and visible to other processes.

        A store may hold a launch's writes and send them together (DynamoDB in the
        gateway does); the service calls this before it starts anything that outlives it
        (a build, a session's server), so that a crash leaves records to clean up after."""
        ...

    # Build claims (see ``BuildClaims``): at most one build per environment key.
    def claim_build(self, key: str, owner: str, stream: str, now: float,
                    stale_after: float = 3600.0) -> BuildClaim: ...

    def finish_build(self, key: str, status: str, image_name: str = "", *,
                     owner: str | None = None) -> None: ...

    def get_build(self, key: str) -> BuildClaim | None: ...


class Fetcher(Protocol):
    async def fetch(self, repo: ResolvedRepo, dest: Path, log: LogSink) -> None:
        """Place ``repo`` at its resolved revision in the empty directory ``dest``."""
        ...


class Builder(Protocol):
    """Turns a checkout into a runnable environment, keyed by its environment files."""

    name: str

    def plan(self, checkout: Path) -> EnvironmentPlan:
        """Read the checkout's environment files; the plan's key names the environment."""
        ...

    async def find(self, plan: EnvironmentPlan) -> ImageRef | None:
        """The already-built environment for ``plan``, or ``None`` when it must be built."""
        ...

    async def build(self, plan: EnvironmentPlan, checkout: Path, log: LogSink) -> ImageRef:
        """Build it, sending output lines to ``log``.

        Raises ``UnsupportedRepository`` (naming the builder that can) or
        ``BuildFailed``; a failed build leaves nothing half-built behind.
        """
        ...


class Spawner(Protocol):
    """Starts and stops the Jupyter server of a session."""

    async def prepare(self, image: ImageRef) -> None:
        """``image`` was just built: do once now what every start of it would need (on
        AWS, register its task definition). Nothing to do is fine."""
        ...

    async def start(self, spec: SessionSpec, log: LogSink) -> SessionHandle: ...

    async def stop(self, handle: SessionHandle) -> None:
        """Stop the server; stopping one that is already gone is not an error."""
        ...

    async def alive(self, handle: SessionHandle) -> bool: ...

    async def running(self) -> dict[str, str]:
        """Sessions whose servers this backend runs, shared with other processes:
        session id -> ``backend_id``. The reconciler stops those without a live record.
        A backend whose servers belong to one process (local) returns ``{}``: that process
        adopts or stops them itself when it starts."""
        ...

    async def tail(self, handle: SessionHandle, lines: int = 20) -> list[str]:
        """The last lines the server printed, for the message when it fails to start."""
        ...


class RouteTable(Protocol):
    """Session id -> where its server answers and the token it requires."""

    def add(self, route: Route) -> None: ...

    def lookup(self, session_id: str) -> Route:
        """Raises ``SessionNotFound`` when the session is unknown or stopped."""
        ...

    def remove(self, session_id: str) -> None: ...


class EventLog(Protocol):
    """Append-only, per-launch event streams that late or returning clients can replay."""

    def append(self, stream: str, event: Event) -> int:
        """Store ``event``; returns its sequence number (1, 2, ...)."""
        ...

    def read(self, stream: str, after: int = 0) -> list[tuple[int, Event]]: ...

    def last_seq(self, stream: str) -> int:
        """The sequence number of the newest stored event of ``stream`` (0: none)."""
        ...

    def last_event_at(self, stream: str) -> float | None:
        """When the newest event of ``stream`` was written (``None``: no event yet)."""
        ...

    def follow(
        self, stream: str, after: int = 0, *, tick: float = 20.0
    ) -> AsyncIterator[tuple[int, Event] | None]:
        """Yield stored events after ``after``, then new ones as they come; ``None``
        every ``tick`` seconds without news (time for a keepalive). Ends after a final event."""
        ...


@dataclass(frozen=True)
class BuildClaim:
    """Who builds an environment and the event stream the build writes to.

    ``claimed`` is true only in the answer to the ``claim_build`` call that won the claim;
    ``status`` is ``building``, ``built`` or ``failed``; ``image_name`` is set once built.
    """

    claimed: bool
    owner: str
    stream: str
    status: str
    image_name: str = ""


class BuildClaims(Protocol):
    """At most one build per environment key, across processes."""

    def claim_build(
        self, key: str, owner: str, stream: str, now: float, stale_after: float = 3600.0
    ) -> BuildClaim:
        """Win the claim when there is none, the last build ended (``failed``, or ``built``
        while the caller found no image: it was deleted), or a ``building`` claim is older
        than ``stale_after`` seconds; else return the current one (``claimed=False``) so
        that the caller follows its ``stream``."""
        ...

    def finish_build(self, key: str, status: str, image_name: str = "", *,
                     owner: str | None = None) -> None:
        """Record the end of the build: ``built`` (with ``image_name``) or ``failed``; with
        ``owner``, only while the claim is still that owner's."""
        ...

    def get_build(self, key: str) -> BuildClaim | None: ...


@dataclass(frozen=True)
class RepoUse:
    """A repository and resolved ref whose launches used an environment."""

    repo_url: str
    ref: str
    launches: int
    last_launched_at: float


@dataclass(frozen=True)
class EnvironmentRecord:
    """What the store remembers of a built environment (``catalogue.py`` adds what the
    builder's storage knows: its size, whether it still exists)."""

    key: str
    image_name: str = ""
    #: The environment files it was built from (``EnvironmentPlan.files``' names).
    files: tuple[str, ...] = ()
    built_at: float | None = None
    last_launched_at: float | None = None
    launches: int = 0
    repos: tuple[RepoUse, ...] = ()


@runtime_checkable
class EnvironmentUsage(Protocol):
    """Which environments launches use, and a guard so that pruning never removes one a
    launch is about to use (see ``catalogue.py`` for the rule).

    A launch ``hold``s its environment before it looks for it; a prune ``begin``s by
    marking the environment in one atomic step that fails while anything uses it, and
    ``end``s once its files are gone (or kept). A hold refused because of a prune mark
    waits for the prune to end, then finds nothing and builds again.
    """

    def hold_environment(self, key: str, now: float, *, stale_after: float = 300.0) -> bool:
        """Note that a launch is about to use ``key``; ``False`` (nothing written) while a
        prune marked it less than ``stale_after`` seconds ago."""
        ...

    def note_environment(self, key: str, now: float, *, image_name: str = "",
                         built: bool = False, files: tuple[str, ...] = (),
                         repo_url: str = "", ref: str = "") -> None:
        """Record a build (``built``: ``built_at``, ``files``) or, with ``repo_url``, a launch
        that used the environment (``launches`` + 1, ``last_launched_at``, the repo+ref)."""
        ...

    def environment_records(self) -> list[EnvironmentRecord]: ...

    def begin_prune(self, key: str, now: float, *, grace: float,
                    stale_after: float = 300.0) -> str:
        """Mark ``key`` as being pruned, in one step with the check that nothing uses it:
        no session starting or running with this ``image_key``, no build of it running, no
        hold in the last ``grace`` seconds, no other prune's mark younger than
        ``stale_after``. Returns ``""`` when marked, else why not (for people)."""
        ...

    def end_prune(self, key: str, *, removed: bool) -> None:
        """Clear the mark; with ``removed``, forget the environment's record too."""
        ...


@runtime_checkable
class Deliveries(Protocol):
    """Webhook deliveries already received, so that a replayed one is refused
    (``prebuild.py``). SQLite locally, DynamoDB on AWS."""

    def remember_delivery(self, key: str, now: float, ttl: float) -> bool:
        """Record ``key`` for ``ttl`` seconds, in one atomic step with the check that it is
        not recorded yet (or its record has expired); ``False``, nothing written, when it
        is: two copies of one delivery arriving at once cannot both pass."""
        ...


class Observer(Protocol):
    """Told how launches and builds end, for metrics (the gateway's go to CloudWatch)."""

    def launch_finished(self, phase: str, seconds: float, built: bool) -> None:
        """A launch reached ``phase`` (``ready`` or ``failed``) ``seconds`` after it began;
        ``built``: it waited for a build."""
        ...

    def build_finished(self, ok: bool, seconds: float) -> None: ...

    def sessions_active(self, count: int) -> None:
        """Sessions starting or running, counted by a reconciler pass."""
        ...


class _NoObserver:
    def launch_finished(self, phase: str, seconds: float, built: bool) -> None:
        pass

    def build_finished(self, ok: bool, seconds: float) -> None:
        pass

    def sessions_active(self, count: int) -> None:
        pass


#: An observer that ignores everything (the default).
NO_OBSERVER: Observer = _NoObserver()
