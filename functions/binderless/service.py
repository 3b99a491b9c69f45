"""The launch service: one launch from link to running server, and the sessions after it.

Hosts (the local server, the AWS session gateway, the CLI) call this module and
nothing below it. Every step reports to the launch's event stream; every error
ends the stream with one ``failed`` event and leaves no half-started session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from .backends.protocols import (
    NO_OBSERVER,
    Builder,
    EnvironmentUsage,
    EventLog,
    Fetcher,
    ImageRef,
    Observer,
    ProjectMount,
    Reservation,
    Route,
    RouteTable,
    SessionHandle,
    SessionRecord,
    SessionSpec,
    Spawner,
    Store,
)
from .envplan import EnvironmentPlan
from .errors import BinderlessError, BuildFailed, LaunchFailed, QuotaExceeded, SessionNotFound
from .events import Event, event_from_error
from .phases import Phase, advance
from .policy import quota_for
from .providers import ProviderRegistry, ResolvedRepo
from .restore import RestoreShelf
from .settings import Settings
from .slots import Slots
from .workspaces import Workspaces

__all__ = ["LaunchRequest", "LaunchService", "queue_message", "record_launch"]

log = logging.getLogger("binderless.service")

PROBE_INTERVAL = 0.05
#: What the ``built`` events say (see ``LaunchService._words``).
BUILT_WORDS = {
    "found": {"image": "Found built image, launching...\n",
              "environment": "Found the built environment, launching...\n"},
    "built": {"image": "Built image, launching...\n",
              "environment": "Built the environment, launching...\n"},
    "finished": {"image": "Built image.\n", "environment": "Built the environment.\n"},
}
#: When the readiness probe first asks the spawner whether the server still runs, and the
#: longest wait between two questions (on AWS each is an API call; the HTTP probe itself
#: runs every PROBE_INTERVAL). The waits double in between.
ALIVE_INTERVAL = 2.0
ALIVE_MAX_INTERVAL = 5.0
ACTIVITY_FLUSH_SECONDS = 60.0
#: A launch created through the REST API is driven by the gateway its stream is asked of;
#: when no stream is asked for this long, a gateway's reconciler drives it.
UNSTREAMED_GRACE_SECONDS = 10.0
#: How long a launch waits for a prune removing its environment before it goes on.
PRUNE_WAIT_SECONDS = 60.0
#: A session record still ``starting`` although its launch ended is stopped by the
#: reconciler once it is this old (index listings lag behind writes).
LEFTOVER_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class LaunchRequest:
    provider: str
    spec: str
    launch_host: str
    client_ip: str = ""
    build_only: bool = False
    owner: str = ""
    #: The path inside the session the launch page opens (its urlpath); a signed-in
    #: person's project remembers it for its Open button.
    open_path: str = ""
    #: An anonymous browser's id (its signed visitor cookie, ``restore.Visitors``): whose
    #: changes are saved when the session ends; and the saved changes to put back.
    visitor: str = ""
    restore: str = ""


def record_launch(store: Store, request: LaunchRequest, *, now: float, driver: str = "",
                  lease_until: float | None = None) -> str:
    """Store a new launch with what another process needs to drive it; returns its id."""
    launch_id = uuid.uuid4().hex
    store.create_launch(launch_id, request.provider, request.spec, now,
                        request=json.dumps(dataclasses.asdict(request)), driver=driver,
                        lease_until=lease_until)
    return launch_id


class LaunchService:
    def __init__(
        self,
        settings: Settings,
        *,
        providers: ProviderRegistry,
        store: Store,
        routes: RouteTable,
        events: EventLog,
        fetcher: Fetcher,
        builder: Builder,
        spawner: Spawner,
        clock: Callable[[], float] = time.time,
        workspaces: Workspaces | None = None,
    ) -> None:
        self.settings = settings
        #: Signed-in users' persistent homes; ``None``: every session is ephemeral.
        self.workspaces = workspaces
        self.providers = providers
        self.store = store
        self.routes = routes
        self.events = events
        self.fetcher = fetcher
        self.builder = builder
        self.spawner = spawner
        self.clock = clock
        self.sessions_dir = settings.state_dir / "sessions"
        self._phases: dict[str, Phase | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled: set[str] = set()  # launches their reader cancelled
        self._builds: dict[str, asyncio.Task[ImageRef]] = {}
        #: Who owns build claims made here (several gateways may share one store).
        self.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._activity: dict[str, float] = {}
        self._launch_sessions: dict[str, str] = {}
        self._activity_written: dict[str, float] = {}
        self._http: aiohttp.ClientSession | None = None
        #: Told how launches and builds end (metrics); see ``Observer``.
        self.observer: Observer = NO_OBSERVER
        self._began: dict[str, tuple[float, bool]] = {}  # launch -> (start, waited for a build)
        # Builds and server starts run on this machine in the local mode: past the caps,
        # launches queue. On AWS they run in CodeBuild and Fargate, bounded by the quotas.
        self._build_slots = Slots(settings.max_concurrent_builds) if self.owns_state else None
        self._start_slots = Slots(settings.max_concurrent_starts) if self.owns_state else None
        self._queued_builds: set[str] = set()  # environment keys whose build awaits a slot
        self._build_followers: dict[str, int] = {}  # key -> launches here following it
        #: Anonymous sessions' changes, kept after they end (``restore.py``); the AWS
        #: mode's wiring sets its own (``aws/restores.py``).
        self.restores: RestoreShelf | None = RestoreShelf(
            settings.state_dir / "restores", days=settings.restore_days,
            max_bytes=settings.restore_max_bytes, clock=lambda: self.clock(),
        ) if settings.mode == "local" else None
        #: Run (in a thread) after each successful build: the catalogue's size budget
        #: (``catalogue.budget_pruner``); ``None``: nothing.
        self.after_build: Callable[[], object] | None = None
        self._housekeeping: set[asyncio.Task[None]] = set()

    # ----- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        if self.owns_state:
            await self.adopt()

    @property
    def owns_state(self) -> bool:
        """A local server owns its state dir: it adopts sessions after a restart and stops
        them on exit. On AWS the state is shared by every gateway copy and Lambda; there the
        reconciler, not a process's start or exit, decides what runs."""
        return self.settings.mode == "local"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for build in list(self._builds.values()):
            build.cancel()
        await asyncio.gather(*self._builds.values(), return_exceptions=True)
        if self.owns_state and not self.settings.keep_sessions_on_exit:
            for record in self.store.sessions("starting", "running"):
                await self.stop_session(record.session_id, reason="server stopped")
        if self._http is not None:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("LaunchService.open() was not awaited")
        return self._http

    # ----- launching -------------------------------------------------------------------

    def start(self, request: LaunchRequest) -> str:
        """Begin a launch in the background; returns the id of its event stream."""
        launch_id = self.create(request, driver=self.instance_id)
        self._drive(launch_id, request)
        return launch_id

    def prebuild(self, request: LaunchRequest) -> str:
        """Build ``request``'s environment if it is missing, launching nothing (``POST
        /api/prebuild``, ``prebuild.py``): a ``build_only`` launch, so its build is claimed
        like any other and later launches attach to it or find it finished. Returns the
        id of its event stream."""
        return self.start(dataclasses.replace(request, build_only=True, owner=""))

    def create(self, request: LaunchRequest, *, driver: str = "") -> str:
        """Record a launch; with ``driver``, that process drives it from now on (under a
        lease it renews), else the first gateway its stream is asked of (``resume``)."""
        return record_launch(self.store, request, now=self.clock(), driver=driver,
                             lease_until=self._lease_end() if driver else None)

    def _drive(self, launch_id: str, request: LaunchRequest, *, resumed: bool = False) -> None:
        task = asyncio.create_task(self._run(launch_id, request, resumed=resumed),
                                   name=f"launch-{launch_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def driving(self, launch_id: str) -> bool:
        return any(t.get_name() == f"launch-{launch_id}" and not t.done() for t in self._tasks)

    async def resume(self, launch_id: str) -> bool:
        """Drive an unfinished launch here if nobody does: created through the REST API
        and not yet started, or left behind by a gateway that died (its lease ran out).

        What the dead gateway did is not done twice: the launch keeps its session id and
        token, and a session task already started for it is found and used. ``True``
        when this process drives the launch (already did, or took it over now)."""
        if self.driving(launch_id):
            return True
        launch = self.store.get_launch(launch_id)
        if launch is None or launch["phase"] in ("ready", "failed") or not launch["request"]:
            return False
        lease = launch["lease_until"]
        if launch["driver"] and lease is not None and lease > self.clock():
            return False  # its driver is alive: follow the stream
        try:
            request = LaunchRequest(**json.loads(launch["request"]))
        except (ValueError, TypeError):
            log.warning("launch %s has an unreadable request; not resumed", launch_id)
            return False
        if not self.store.take_launch(launch_id, self.instance_id, was_driver=launch["driver"],
                                      was_lease=lease,
                                      lease_until=self._lease_end()):
            return self.driving(launch_id)
        if launch["driver"]:
            log.info("taking over launch %s from %s", launch_id, launch["driver"])
        self._drive(launch_id, request, resumed=bool(launch["driver"]))
        return True

    def _lease_end(self) -> float:
        return self.clock() + self.settings.launch_lease_seconds

    async def _keep_lease(self, launch_id: str) -> None:
        """Renew the lease on a launch while this process drives it, every third of
        ``launch_lease_seconds``: once it runs out, another process (a gateway the client
        reconnects to, or a gateway's reconciler) takes the launch over."""
        while True:
            await asyncio.sleep(self.settings.launch_lease_seconds / 3)
            try:
                self.store.update_launch(launch_id, lease_until=self._lease_end())
                await asyncio.to_thread(self.store.flush, launch_id)
            except BinderlessError as exc:
                log.warning("could not renew the lease on launch %s: %s", launch_id, exc)

    def cancel(self, launch_id: str) -> bool:
        """Stop a launch running in this process (its reader pressed Cancel); ``False``
        when none runs here. A build it started goes on: other launches may be following
        it, and the next launch of the repository finds it built; unless the build still
        waits for a slot and no other launch here follows it (it leaves the queue)."""
        for task in self._tasks:
            if task.get_name() == f"launch-{launch_id}" and not task.done():
                self._cancelled.add(launch_id)
                task.cancel()
                return True
        return False

    def emit(self, launch_id: str, phase: Phase | None, message: str, **fields: Any) -> None:
        if phase is not None:
            current = self._phases.get(launch_id)
            new = advance(current, phase)
            if new != current:
                self._phases[launch_id] = new
                done = {"finished_at": self.clock()} if new in (Phase.READY, Phase.FAILED) else {}
                self.store.update_launch(launch_id, phase=str(new), **done)
                if done:
                    self._observe_end(launch_id, new)
        self.events.append(launch_id, Event(phase, message, fields))

    def _fail(self, launch_id: str, error: BaseException) -> None:
        event = event_from_error(error)
        if self._phases.get(launch_id) in (Phase.READY, Phase.FAILED):
            return
        self._phases[launch_id] = Phase.FAILED
        self.store.update_launch(launch_id, phase="failed", finished_at=self.clock())
        self._observe_end(launch_id, Phase.FAILED)
        self.events.append(launch_id, event)

    def _observe_end(self, launch_id: str, phase: Phase) -> None:
        began = self._began.pop(launch_id, None)
        if began is not None:
            self.observer.launch_finished(str(phase), self.clock() - began[0], began[1])

    async def _run(self, launch_id: str, request: LaunchRequest, *,
                   resumed: bool = False) -> None:
        keeper = asyncio.create_task(self._keep_lease(launch_id))
        self._began[launch_id] = (self.clock(), False)
        try:
            await self._launch(launch_id, request, resumed=resumed)
        except asyncio.CancelledError:
            by_reader = launch_id in self._cancelled
            await self._abort(launch_id, LaunchFailed(
                "The launch was cancelled." if by_reader
                else "binderless stopped while this launch was in progress.",
                hint="Launch the repository again."),
                "launch cancelled" if by_reader else "launch interrupted")
            raise
        except BinderlessError as exc:
            log.info("launch %s failed: %s", launch_id, exc.message)
            await self._abort(launch_id, exc, "launch failed")
        except Exception as exc:
            log.exception("launch %s crashed", launch_id)
            await self._abort(launch_id, exc, "launch failed")
        finally:
            keeper.cancel()
            self._began.pop(launch_id, None)
            self._phases.pop(launch_id, None)
            self._launch_sessions.pop(launch_id, None)
            self._cancelled.discard(launch_id)

    async def _launch(self, launch_id: str, request: LaunchRequest, *,
                      resumed: bool = False) -> None:
        started = self.clock()
        # A launch taken over keeps its session: the same id (a task started for it is
        # found, not started again) and the same token (that task checks it).
        earlier = self._session_of(launch_id) if resumed else None
        if resumed:
            self.emit(launch_id, None, "Picking up this launch where another server left "
                                       "it...\n")
        self.emit(launch_id, Phase.WAITING, f"Resolving {request.provider}/{request.spec}...\n")
        if request.restore and not request.owner:
            if self.restores is None:
                raise LaunchFailed("This server keeps no changes of ended sessions.")
            await asyncio.to_thread(self.restores.check, request.restore, request.visitor,
                                    request.provider)
        repo = await asyncio.to_thread(self.providers.resolve, request.provider, request.spec)
        self.store.update_launch(launch_id, resolved_ref=repo.resolved_ref)
        for note in repo.notes:
            self.emit(launch_id, Phase.WAITING, note)
        session_id = earlier.session_id if earlier is not None else secrets.token_hex(8)
        token = earlier.token if earlier is not None else secrets.token_hex(32)
        home = self.sessions_dir / session_id / "home"
        # Before the reservation, so that its write carries it (see ``_session_of``).
        self.store.update_launch(launch_id, session_id=session_id)
        if not request.build_only:
            if request.owner and self.workspaces is not None:
                self.workspaces.check_room(request.owner, repo.repo_url)
            if earlier is None:  # a launch taken over keeps the slot its session holds
                await asyncio.to_thread(self._reserve, SessionRecord(
                    session_id=session_id, launch_id=launch_id, owner=request.owner,
                    repo_url=repo.repo_url, resolved_ref=repo.resolved_ref, image_key="",
                    home=str(home), target="", token=token, backend_id="", status="starting",
                    created_at=self.clock(), last_activity=self.clock(),
                ), quota_for(self.settings, request.provider, request.spec))
        self._launch_sessions[launch_id] = session_id
        self.emit(launch_id, Phase.FETCHING,
                  f"Fetching {repo.repo_url} at {repo.resolved_ref[:12]}...\n")
        await self.fetcher.fetch(repo, home, lambda line: self.emit(launch_id, Phase.FETCHING, line))

        plan = await asyncio.to_thread(self.builder.plan, home)
        self.store.update_launch(launch_id, image_key=plan.key)
        if not request.build_only:
            # From now on the session counts as using the environment: a prune leaves it.
            self.store.update_session(session_id, image_key=plan.key)
        await self._hold_environment(launch_id, plan.key)
        image = await self._ensure_image(launch_id, plan, home)
        if not request.build_only:
            self._note_environment(image.key, image_name=image.name, repo_url=repo.repo_url,
                                   ref=repo.resolved_ref)
        if request.build_only:
            self.emit(launch_id, Phase.READY, "Image is built.\n", imageName=image.name)
            shutil.rmtree(home.parent, ignore_errors=True)
            return

        project = await self._open_project(launch_id, request, repo, home)
        if self.restores is not None and not request.owner:
            # The manifest of the checkout as built, then the visitor's files put back
            # (after the build: they never change which environment the commit gets).
            for line in await asyncio.to_thread(
                    self.restores.prepare, home, restore_id=request.restore,
                    visitor=request.visitor, repo_url=repo.repo_url,
                    resolved_ref=repo.resolved_ref, provider=request.provider,
                    persistent_request=repo.persistent_request, session_id=session_id,
                    spec=request.spec):
                self.emit(launch_id, Phase.LAUNCHING, line)
        self.emit(launch_id, Phase.LAUNCHING, "Launching server...\n")
        base_url = f"/user/{session_id}/"
        self.store.update_session(session_id, image_key=image.key)
        spec = SessionSpec(
            session_id=session_id, image=image, home=home, base_url=base_url, token=token,
            environment=self._binder_env(request, repo),
            start_script=plan.start, project=project, resume=earlier is not None,
        )
        async with self._slot(self._start_slots, launch_id, "start"):
            # No flush is needed first: the session's record (and its launch's, with the
            # session id) went to the store with the reservation, so a crash from now on
            # leaves records to clean up after (a launch taken over finds its server, the
            # reconciler stops an orphan). The rest follows with the next flush.
            handle = await self.spawner.start(
                spec, lambda line: self.emit(launch_id, Phase.LAUNCHING, line))
            self.store.update_session(session_id, backend_id=handle.backend_id,
                                      target=handle.target)
            await self._wait_ready(handle, base_url, token)
        self.routes.add(Route(session_id=session_id, target=handle.target, token=token,
                              owner=request.owner))
        self._activity[session_id] = self.clock()
        # A session origin of its own (settings.session_url) never sees the sign-in cookie.
        host = (self.settings.session_url.rstrip("/") + "/") if self.settings.session_url \
            else request.launch_host
        url = f"{host}user/{session_id}/"
        log.info("launch %s ready in %.2fs", launch_id, self.clock() - started)
        self.emit(
            launch_id, Phase.READY, f"server running at {url}\n",
            url=url, token=token, image=image.name, repo_url=repo.repo_url,
            binder_ref_url=repo.ref_url, binder_launch_host=request.launch_host,
            binder_request=f"v2/{request.provider}/{request.spec}",
            binder_persistent_request=repo.persistent_request,
            binder_client_ip=request.client_ip,
        )

    async def _open_project(self, launch_id: str, request: LaunchRequest, repo: ResolvedRepo,
                            checkout: Path) -> ProjectMount | None:
        """A signed-in user's project folder for this repository: seeded from ``checkout``
        the first time, never overwritten after (see ``workspaces.py``)."""
        if not request.owner or self.workspaces is None:
            return None
        opened = await asyncio.to_thread(
            self.workspaces.open, request.owner, repo_url=repo.repo_url,
            resolved_ref=repo.resolved_ref, launch_path=f"v2/{request.provider}/{request.spec}",
            open_path=request.open_path,
            checkout=checkout)
        for line in opened.messages():
            self.emit(launch_id, Phase.LAUNCHING, line)
        return ProjectMount(owner=request.owner, name=opened.project.name,
                            path=opened.project.path)

    def _session_of(self, launch_id: str) -> SessionRecord | None:
        """The session record a launch made before its driver died, if any."""
        launch = self.store.get_launch(launch_id) or {}
        if not launch.get("session_id"):
            return None
        try:
            record = self.store.get_session(str(launch["session_id"]))
        except BinderlessError:
            return None
        return record if record.status in ("starting", "running") else None

    def _binder_env(self, request: LaunchRequest, repo: ResolvedRepo) -> dict[str, str]:
        return {
            "BINDER_REPO_URL": repo.repo_url,
            "BINDER_REF_URL": repo.ref_url,
            "BINDER_LAUNCH_HOST": request.launch_host,
            "BINDER_REQUEST": f"v2/{request.provider}/{request.spec}",
            "BINDER_PERSISTENT_REQUEST": repo.persistent_request,
            "BINDER_CLIENT_IP": request.client_ip,
        }

    def _reserve(self, record: SessionRecord, per_repo: int) -> None:
        """Record the launch's session as ``starting`` if the quotas allow, in one step with
        the check (the store's ``reserve_session``): the slot counts from now on, while the
        launch fetches and builds, until the session stops (``stop_session``; a launch that
        fails stops it in ``_discard_session``)."""
        answer: Reservation = self.store.reserve_session(
            record, max_total=self.settings.max_sessions, max_of_repo=per_repo)
        if answer.refused == "server":
            raise QuotaExceeded(
                f"This server is full: {answer.active} sessions are running, the most it "
                "allows.",
                hint="Try again in a few minutes, when idle sessions have been stopped.",
            )
        if answer.refused:
            raise QuotaExceeded(
                f"Too many users running {record.repo_url}! Try again soon.",
                hint=f"At most {per_repo} sessions of this repository run at once on this server.",
            )

    # ----- queues for builds and starts ------------------------------------------------

    @contextlib.asynccontextmanager
    async def _slot(self, slots: Slots | None, stream: str, kind: str) -> AsyncIterator[None]:
        """Hold one of ``slots`` (none: no cap), telling ``stream`` its place in the queue
        while it waits (``waiting`` events that leave the launch's phase as it is)."""
        if slots is None:
            yield
            return

        def tell(ahead: int) -> None:
            self.events.append(stream, Event(Phase.WAITING, queue_message(kind, ahead),
                                             {"queue": kind, "ahead": ahead}))

        async with slots.hold(tell):
            yield

    def _stop_following(self, key: str, *, cancelled: bool) -> None:
        """A launch here stopped following the build of ``key``. When the last one was
        cancelled while the build still waits for a slot, nobody wants it: drop it."""
        left = self._build_followers.get(key, 1) - 1
        if left > 0:
            self._build_followers[key] = left
            return
        self._build_followers.pop(key, None)
        build = self._builds.get(key)
        if cancelled and build is not None and key in self._queued_builds:
            build.cancel()

    # ----- builds ----------------------------------------------------------------------

    async def _hold_environment(self, launch_id: str, key: str) -> None:
        """Tell the catalogue this launch is about to use ``key`` (``EnvironmentUsage``);
        while a prune is removing it, wait until it is gone, then build it again."""
        if not isinstance(self.store, EnvironmentUsage):
            return
        told = False
        deadline = time.monotonic() + PRUNE_WAIT_SECONDS
        while not await asyncio.to_thread(self.store.hold_environment, key, self.clock()):
            if time.monotonic() > deadline:
                break  # a prune that died: its mark goes stale and the next hold wins
            if not told:
                self.emit(launch_id, None, "This environment is being removed; it will be "
                                           "built again...\n")
                told = True
            await asyncio.sleep(0.2)

    def _note_environment(self, key: str, **fields: Any) -> None:
        """Record a build or a launch of ``key`` for the catalogue; never fails a launch."""
        if not isinstance(self.store, EnvironmentUsage):
            return
        try:
            self.store.note_environment(key, self.clock(), **fields)
        except BinderlessError as exc:
            log.warning("could not record the use of environment %s: %s", key, exc.message)

    async def _ensure_image(self, launch_id: str, plan: EnvironmentPlan, checkout: Path) -> ImageRef:
        """The built environment for ``plan``: found, built here, or built by another launch
        (possibly in another process) whose build log this launch follows."""
        image = await self.builder.find(plan)
        if image is not None:
            self.emit(launch_id, Phase.BUILT, self._words("found"),
                      imageName=image.name)
            return image
        self.store.update_launch(launch_id, built=1)
        if launch_id in self._began:
            self._began[launch_id] = (self._began[launch_id][0], True)
        await asyncio.to_thread(self.store.flush, launch_id)
        claim = await asyncio.to_thread(
            self.store.claim_build, plan.key, self.instance_id,
            f"build-{plan.key}-{uuid.uuid4().hex[:8]}", self.clock(),
            stale_after=self.settings.build_timeout_seconds + 300)
        task: asyncio.Task[ImageRef] | None = None
        if claim.claimed:
            image = await self.builder.find(plan)  # finished elsewhere just before the claim?
            if image is not None:
                self.store.finish_build(plan.key, "built", image.name, owner=self.instance_id)
                self.emit(launch_id, Phase.BUILT, self._words("found"),
                          imageName=image.name)
                return image
            task = asyncio.create_task(self._build(plan, checkout, claim.stream))
            self._builds[plan.key] = task
            task.add_done_callback(self._forget_build(plan.key))
        else:
            self.emit(launch_id, Phase.BUILDING,
                      "This environment is already being built; following that build.\n")
        self._build_followers[plan.key] = self._build_followers.get(plan.key, 0) + 1
        cancelled = False
        try:
            failure = await self._follow_build(launch_id, claim.stream, task)
            built = await asyncio.shield(task) if task is not None else None
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._stop_following(plan.key, cancelled=cancelled)
        if built is None:
            if failure is not None:
                raise BuildFailed(failure.message.strip(),  # whose fault: as its builder said
                                  fault=str(failure.fields.get("fault", "")),
                                  file=str(failure.fields.get("file", "")),
                                  line=int(failure.fields.get("line", 0) or 0))
            built = await self.builder.find(plan)
            if built is None:
                raise BuildFailed("The build this launch was following did not finish.",
                                  hint="Launch the repository again.")
        image = built
        self.emit(launch_id, Phase.BUILT, self._words("built"),
                  imageName=image.name)
        return image

    async def _follow_build(self, launch_id: str, stream: str,
                            task: asyncio.Task[ImageRef] | None) -> Event | None:
        """Relay a build's log to the launch until it ends; its ``failed`` event, if any."""
        deadline = time.monotonic() + self.settings.build_timeout_seconds + 60
        async for item in self.events.follow(stream, 0, tick=1.0):
            if item is None:
                if (task is not None and task.done()) or time.monotonic() > deadline:
                    break
                continue
            _seq, event = item
            if event.phase is Phase.FAILED:
                return event
            if event.phase is Phase.BUILT:
                break
            if event.phase is Phase.WAITING:  # its place in the queue: no phase change
                self.events.append(launch_id, event)
                # The build has not begun: its time counts from when it does.
                deadline = time.monotonic() + self.settings.build_timeout_seconds + 60
                continue
            self.emit(launch_id, event.phase or Phase.BUILDING, event.message)
        return None

    def _words(self, moment: str) -> str:
        """The ``built`` message, in words true for what the builder makes: BinderHub's own
        where it makes images, "environment" where it makes a virtual environment (the uv
        builder's ``artifact``). The phase stays the protocol's."""
        artifact = getattr(self.builder, "artifact", "image")
        return BUILT_WORDS[moment]["environment" if artifact == "environment" else "image"]

    def _forget_build(self, key: str) -> Callable[[asyncio.Task[ImageRef]], None]:
        def forget(_task: asyncio.Task[ImageRef]) -> None:
            self._builds.pop(key, None)

        return forget

    async def _build(self, plan: EnvironmentPlan, checkout: Path, stream: str) -> ImageRef:
        def line(text: str) -> None:
            self.events.append(stream, Event(Phase.BUILDING, text))

        began = self.clock()
        try:
            self._queued_builds.add(plan.key)
            try:
                async with self._slot(self._build_slots, stream, "build"):
                    self._queued_builds.discard(plan.key)
                    began = self.clock()
                    image = await self.builder.build(plan, checkout, line)
            finally:
                self._queued_builds.discard(plan.key)
        except BaseException as exc:
            self.observer.build_finished(False, self.clock() - began)
            error = exc if isinstance(exc, BinderlessError) else BuildFailed(
                f"The build stopped unexpectedly ({describe_exception(exc)}).",
                hint="Launch again to retry the build.")
            if not isinstance(exc, BinderlessError):
                # What went wrong, in one line (never a traceback: it reaches the page).
                log.warning("build of %s stopped unexpectedly: %s", plan.key,
                            describe_exception(exc))
            self.store.finish_build(plan.key, "failed", owner=self.instance_id)
            self.events.append(stream, event_from_error(error))
            if isinstance(exc, BinderlessError) or not isinstance(exc, Exception):
                raise
            raise error from exc
        self.observer.build_finished(True, self.clock() - began)
        try:
            await self.spawner.prepare(image)
        except BinderlessError as exc:  # the first start does it again
            log.warning("could not prepare %s for starts: %s", image.name, exc.message)
        self._note_environment(image.key, image_name=image.name, built=True,
                               files=tuple(sorted(plan.files)))
        self.store.finish_build(plan.key, "built", image.name, owner=self.instance_id)
        self.events.append(stream, Event(Phase.BUILT, self._words("finished"),
                                         {"imageName": image.name}))
        if self.after_build is not None:
            # The catalogue's size budget; it never removes what a launch uses (the one
            # just built is held by the launch that built it).
            self._spawn_housekeeping(self.after_build)
        return image

    def _spawn_housekeeping(self, job: Callable[[], object]) -> None:
        async def run() -> None:
            try:
                await asyncio.to_thread(job)
            except Exception:
                log.exception("housekeeping after a build failed")

        task = asyncio.create_task(run(), name="housekeeping")
        self._housekeeping.add(task)
        task.add_done_callback(self._housekeeping.discard)

    # ----- readiness, sessions ---------------------------------------------------------

    async def _wait_ready(self, handle: SessionHandle, base_url: str, token: str) -> None:
        url = f"{handle.target}{base_url}api/status"
        headers = {"Authorization": f"token {token}"}
        deadline = time.monotonic() + self.settings.ready_timeout_seconds
        alive_interval = ALIVE_INTERVAL
        next_alive_check = time.monotonic() + alive_interval
        while time.monotonic() < deadline:
            try:
                async with self.http.get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() < next_alive_check:
                await asyncio.sleep(PROBE_INTERVAL)
                continue
            alive_interval = min(alive_interval * 2, ALIVE_MAX_INTERVAL)
            next_alive_check = time.monotonic() + alive_interval
            if not await self.spawner.alive(handle):
                tail = await self.spawner.tail(handle)
                raise LaunchFailed(
                    "The Jupyter server stopped before it was ready.",
                    hint=("Its last output was:\n" + "\n".join(tail)) if tail else
                    "Check the repository's start script, if it has one.",
                )
            await asyncio.sleep(PROBE_INTERVAL)
        raise LaunchFailed(
            f"The Jupyter server did not answer within {self.settings.ready_timeout_seconds:.0f}"
            " seconds.", hint="Launch again; if it keeps happening, check the start script.")

    async def _abort(self, launch_id: str, error: BaseException, reason: str) -> None:
        """End a launch that did not reach ``ready``: undo what it started, then send its
        ``failed`` event, so that a client reading that event finds no server left, no
        files and no quota slot held."""
        try:
            await self._discard_session(launch_id, reason)
        finally:
            self._fail(launch_id, error)

    async def _discard_session(self, launch_id: str, reason: str) -> None:
        """Undo a launch that did not reach ``ready``: stop its server, remove its files
        (nobody was ever given access to them)."""
        session_id = self._launch_sessions.get(launch_id)
        if not session_id:
            return
        # With no record yet, it failed before the server was started.
        with contextlib.suppress(BinderlessError):
            await self.stop_session(session_id, reason=reason)
        shutil.rmtree(self.sessions_dir / session_id, ignore_errors=True)

    def record_activity(self, session_id: str) -> None:
        """Traffic through the proxy. Written to the store at most once a minute per session,
        so that every process sharing the store (several gateways) sees the same activity."""
        now = self.clock()
        self._activity[session_id] = now
        if now - self._activity_written.get(session_id, 0.0) >= ACTIVITY_FLUSH_SECONDS:
            self._activity_written[session_id] = now
            with contextlib.suppress(BinderlessError):
                self.store.update_session(session_id, last_activity=now)

    def last_activity(self, record: SessionRecord) -> float:
        """When the session was last used, as far as this process and the store know."""
        return max(self._activity.get(record.session_id, 0.0), record.last_activity)

    def keep_alive(self, session_id: str) -> None:
        """The user asked to keep the session running: count it as used now, and tell the
        store at once (the countdown of every gateway reads it)."""
        now = self.clock()
        self._activity[session_id] = self._activity_written[session_id] = now
        self.store.update_session(session_id, last_activity=now)

    async def stop_session(self, session_id: str, *, reason: str,
                           already_stopped: bool = False) -> None:
        """Stop a session's server, mark it stopped (which frees its quota slot) and remove
        its files unless ``keeps_files`` says they stay."""
        record = self.store.get_session(session_id)
        handle = SessionHandle(record.session_id, record.target, record.backend_id)
        if record.backend_id and not already_stopped:
            await self.spawner.stop(handle)
        self.routes.remove(session_id)
        self.store.update_session(session_id, status="stopped", stopped_at=self.clock(),
                                  stop_reason=reason)
        self._activity.pop(session_id, None)
        self._activity_written.pop(session_id, None)
        if self.restores is not None and not record.owner and record.status == "running":
            await asyncio.to_thread(self._save_work, record)
        if not self.keeps_files(record, reason):
            await asyncio.to_thread(self._remove_files, session_id)
        log.info("session %s stopped: %s", session_id, reason)

    def keeps_files(self, record: SessionRecord, reason: str) -> bool:
        """The one place that decides whether a session's folder (``sessions/<id>``: its
        checkout and HOME) outlives the session.

        An anonymous session's folder goes, whatever ended the session: nobody can reach
        it afterwards. A signed-in user's session keeps it, as before: their work is in
        their project folder (``workspaces.py``, never removed here), and whether the rest
        (the checkout that seeded the project, what the session wrote to HOME) should go
        too is the workspaces' decision. Restoring an expired anonymous session (a later
        feature) would keep its folder here, on purpose, for the reasons it covers."""
        del reason  # every reason ends an anonymous session's files alike, for now
        return bool(record.owner)

    def _save_work(self, record: SessionRecord) -> None:
        """Keep what the visitor of an anonymous session that ran changed (``restore.py``);
        a failure is logged, never in the way of stopping."""
        assert self.restores is not None
        try:
            self.restores.save(record, self.store.get_launch(record.launch_id))
        except (OSError, BinderlessError) as exc:
            log.warning("could not save the changes of session %s: %s", record.session_id, exc)

    def _remove_files(self, session_id: str) -> None:
        folder = self.sessions_dir / session_id
        if not folder.exists():
            return
        try:
            # Run as root when sessions have uids of their own: it removes their files too.
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("could not remove the files of session %s (%s): %s", session_id,
                        folder, exc)

    async def _jupyter_activity(self, record: SessionRecord) -> float:
        url = f"{record.target}/user/{record.session_id}/api/status"
        try:
            async with self.http.get(url, headers={"Authorization": f"token {record.token}"},
                                     timeout=aiohttp.ClientTimeout(total=2)) as response:
                data = await response.json()
            stamp = datetime.fromisoformat(str(data["last_activity"]).replace("Z", "+00:00"))
            return stamp.timestamp()
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            return 0.0

    async def cull(self) -> list[str]:
        """Stop sessions that died, sat idle too long, or reached their maximum age."""
        now = self.clock()
        stopped = []
        for record in self.store.sessions("running"):
            handle = SessionHandle(record.session_id, record.target, record.backend_id)
            reason = ""
            if not await self.spawner.alive(handle):
                reason = "server process ended"
            elif now - record.created_at > self.settings.max_age_seconds:
                reason = "maximum age reached"
            else:
                last = max(self._activity.get(record.session_id, 0.0), record.last_activity,
                           await self._jupyter_activity(record))
                if last > record.last_activity:
                    self.store.update_session(record.session_id, last_activity=last)
                if now - last > self.settings.cull_idle_seconds:
                    reason = "idle"
            if reason:
                await self.stop_session(record.session_id, reason=reason)
                stopped.append(record.session_id)
        return stopped

    async def adopt(self) -> None:
        """After a restart: keep sessions whose server still answers, close out the rest."""
        release = getattr(self.store, "release_builds", None)
        if release is not None:
            # A single-process store (SQLite): builds claimed before the restart died with it.
            release()
        for record in self.store.sessions("starting", "running"):
            handle = SessionHandle(record.session_id, record.target, record.backend_id)
            alive = record.status == "running" and await self.spawner.alive(handle)
            if alive:
                try:
                    await self._wait_ready_once(handle, record)
                    log.info("adopted running session %s", record.session_id)
                    continue
                except LaunchFailed:
                    pass
            await self.stop_session(record.session_id,
                                    reason="found stopped after a restart" if not alive
                                    else "not answering after a restart")
        for launch_id in self.store.unfinished_launches():
            self._fail(launch_id, LaunchFailed(
                "binderless restarted while this launch was in progress.",
                hint="Launch the repository again."))

    async def _wait_ready_once(self, handle: SessionHandle, record: SessionRecord) -> None:
        url = f"{handle.target}/user/{record.session_id}/api/status"
        try:
            async with self.http.get(url, headers={"Authorization": f"token {record.token}"},
                                     timeout=aiohttp.ClientTimeout(total=3)) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        raise LaunchFailed("not answering")

    async def reconcile(self, *, cull: bool = True, resume: bool | None = None,
                        abandon_after: float | None = None) -> dict[str, list[str]]:
        """Repair what a crash or a lost event left behind; safe to run at any time, from
        any process sharing the store (each gateway, and the AWS mode's schedule).

        - with ``cull``, sessions whose server ended, sat idle, or grew too old are stopped
          (a process that cannot reach the sessions' servers, like the Lambda, passes False);
        - with ``resume`` (default: as ``cull``; a process that can drive launches),
          launches nobody drives (their driver's lease ran out, or created through the
          REST API and never streamed) are taken over and finished here;
        - launches with no event for ``abandon_after`` seconds end with a ``failed`` event,
          and whatever they started is stopped. The default outlasts the quietest live
          launch: a build it follows, then the start;
        - servers the spawner runs for sessions with no live record are stopped (orphans);
        - sessions left ``starting`` by a launch that ended are stopped, which gives their
          quota slots back (released).
        """
        if abandon_after is None:
            abandon_after = (self.settings.build_timeout_seconds
                             + self.settings.ready_timeout_seconds + 900.0)
        if resume is None:
            resume = cull
        culled = await self.cull() if cull else []
        if self.restores is not None:
            await asyncio.to_thread(self.restores.sweep)  # saved changes past their time
        if cull:
            self.observer.sessions_active(self.store.active_counts("")[0])
        abandoned: list[str] = []
        resumed: list[str] = []
        now = self.clock()
        for launch_id in self.store.unfinished_launches():
            if self.driving(launch_id):
                continue
            launch = self.store.get_launch(launch_id) or {}
            lease = launch.get("lease_until")
            undriven = not launch.get("driver") and now - float(
                launch.get("created_at") or 0.0) >= UNSTREAMED_GRACE_SECONDS
            if resume and launch.get("request") and (
                    undriven or (lease is not None and lease < now)):
                if await self.resume(launch_id):
                    resumed.append(launch_id)
                continue
            last = max(float(launch.get("created_at") or 0.0),
                       self.events.last_event_at(launch_id) or 0.0)
            if now - last < abandon_after:
                continue
            self._fail(launch_id, LaunchFailed(
                "The server handling this launch stopped before it finished.",
                hint="Launch the repository again."))
            for record in self.store.sessions("starting", "running"):
                if record.launch_id == launch_id:
                    await self.stop_session(record.session_id, reason="launch abandoned")
            abandoned.append(launch_id)
        orphans = await self._stop_orphans()
        released = await self._release_leftovers(now)
        return {"culled": culled, "abandoned": abandoned, "resumed": resumed,
                "orphans": orphans, "released": released}

    async def _release_leftovers(self, now: float) -> list[str]:
        """Stop sessions still ``starting`` whose launch has ended (or is gone): a launch
        that failed while the store was unreachable could not give its quota slot back,
        and nothing else would. Listings lag behind writes, so each is read again first,
        and only reservations older than a minute are considered."""
        mine = set(self._launch_sessions.values())
        released: list[str] = []
        for record in self.store.sessions("starting"):
            if record.session_id in mine or now - record.created_at < LEFTOVER_GRACE_SECONDS:
                continue
            launch = self.store.get_launch(record.launch_id)
            if launch is not None and launch["phase"] not in ("ready", "failed"):
                continue  # its launch runs (or will be resumed or abandoned)
            try:
                if self.store.get_session(record.session_id).status != "starting":
                    continue
            except SessionNotFound:
                continue
            log.warning("session %s of launch %s was left starting; stopping it",
                        record.session_id, record.launch_id)
            await self.stop_session(record.session_id, reason="launch ended")
            released.append(record.session_id)
        return released

    async def _stop_orphans(self) -> list[str]:
        """Stop servers whose session has no live record (a crash between starting a
        server and recording it, or a record lost). Sessions this process is launching
        are left alone."""
        mine = set(self._launch_sessions.values())
        stopped: list[str] = []
        try:
            running = await self.spawner.running()
        except BinderlessError as exc:
            log.warning("cannot list the running sessions for orphans: %s", exc.message)
            return stopped
        for session_id, backend_id in running.items():
            if session_id in mine:
                continue
            try:
                live = self.store.get_session(session_id).status in ("starting", "running")
            except SessionNotFound:
                live = False
            if live:
                continue
            log.warning("stopping orphaned server %s of session %s", backend_id, session_id)
            await self.spawner.stop(SessionHandle(session_id, "", backend_id))
            stopped.append(session_id)
        return stopped

    async def stop_task_session(self, backend_id: str, reason: str) -> str | None:
        """An ``ECS Task State Change`` (STOPPED) or a dead process: close its session."""
        for record in self.store.sessions("starting", "running"):
            if record.backend_id == backend_id:
                await self.stop_session(record.session_id, reason=reason, already_stopped=True)
                return record.session_id
        return None

    async def run_culler(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cull_interval_seconds)
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconciling failed; trying again later")


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one line for people and logs: its type and message (whitespace folded,
    at most ``limit`` characters), never a traceback."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def queue_message(kind: str, ahead: int) -> str:
    """What a launch waiting for a ``kind`` slot (build, start) is told."""
    if ahead == 0:
        place = "this launch is next"
    else:
        place = f"{ahead} launch{'es' if ahead != 1 else ''} ahead of this one"
    return f"Waiting for a free {kind} slot: {place}...\n"
