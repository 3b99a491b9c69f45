"""binderless's REST API on API Gateway and Lambda (the AWS mode), built with Chalice.

Routes stay thin: they parse the request and call the same functions the local
server uses. Imports are kept light (the cold start is measured by
``bench/cold_start.py``): providers and AWS clients load on first use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import cache, wraps
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from chalice import Chalice, Response

from binderless.api import health_document, repoproviders_document, versions_document
from binderless.aws.metrics import FUNCTIONS_SERVICE, NAMESPACE
from binderless.errors import BinderlessError
from binderless.settings import Settings, load_settings

app = Chalice(app_name="binderless")
logger = Logger(service="binderless")
# CloudWatch embedded metric format: printed with the logs, no API call from the function.
# Every name counted here is listed in binderless.aws.metrics.FUNCTION_METRICS (a test
# checks), which the dashboard and alarms of infra/ are checked against.
metrics = Metrics(namespace=NAMESPACE, service=FUNCTIONS_SERVICE)


@cache
def tracer() -> Any:
    """Powertools Tracer: X-Ray traces of the handlers and of their AWS calls (boto3 is
    patched); off outside Lambda (``POWERTOOLS_TRACE_DISABLED``, as in the tests). Made
    on first use: the X-Ray SDK would double the import time of this module."""
    from aws_lambda_powertools import Tracer

    return Tracer(service="binderless")


def traced(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``tracer().capture_method`` on ``handler``, applied at its first call."""
    captured: list[Callable[..., Any]] = []

    @wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not captured:
            captured.append(tracer().capture_method(handler))
        return captured[0](*args, **kwargs)

    return run


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
CORS = {"Access-Control-Allow-Origin": "*"}


@cache
def settings() -> Settings:
    from binderless.tokens import load_secrets

    loaded = load_settings(os.environ, mode=os.environ.get("BINDERLESS_MODE", "aws"))
    if loaded.mode != "aws":
        return load_secrets(loaded, None)

    def client(service: str) -> Any:
        import boto3

        return boto3.client(service)

    # Provider tokens may be stored as ssm:<name> or secretsmanager:<id> references.
    return load_secrets(loaded, client)


@cache
def registry() -> Any:
    from binderless.providers import ProviderRegistry
    from binderless.urlguard import UrlGuard, guarded_client

    current = settings()
    return ProviderRegistry(current, guarded_client(UrlGuard(enforce=current.mode == "aws")))


def error_response(error: BinderlessError) -> Response:
    """The one mapping from a domain error to an API answer."""
    return Response(body={"message": error.user_message(), "status_code": error.status_code},
                    status_code=error.status_code, headers=CORS)


@app.route("/versions", cors=True)
def versions() -> dict[str, Any]:
    return versions_document(settings())


@app.route("/health", cors=True)
def health() -> Response:
    checks = [{"service": "settings", "ok": True, "mode": settings().mode}]
    document, status = health_document(checks)
    return Response(body=document, status_code=status, headers=CORS)


@app.route("/api/repoproviders", cors=True)
def repoproviders() -> list[dict[str, Any]]:
    return repoproviders_document(registry().display_configs())


@app.route("/api/resolve", cors=True)
@traced
def resolve() -> Response:
    """What a link launches: ``?link=<Binder link, provider/spec or repository URL>``."""
    from binderless.resolve import resolve_link

    params = app.current_request.query_params or {}
    link = params.get("link", "")
    if not link:
        return Response(body={"message": "Pass the link to resolve as ?link=...",
                              "status_code": 400}, status_code=400, headers=CORS)
    server = params.get("server") or f"https://{app.current_request.headers.get('host', '')}"
    try:
        result = resolve_link(link, registry(), server=server,
                              offline=params.get("offline") == "true")
    except BinderlessError as exc:
        logger.info("resolve refused", extra={"link": link, "reason": exc.message})
        return error_response(exc)
    return Response(body=result, status_code=200, headers=CORS)


# ----- events and schedules: the repair path of the AWS mode ----------------------------
# The session gateway drives each launch and polls CodeBuild and ECS itself, so a lost
# event never stalls a launch; these handlers repair what a crashed gateway leaves behind.

def aws_clients(service_name: str) -> Any:
    import boto3

    return boto3.client(service_name)


@cache
def launch_service() -> Any:
    from binderless.aws.wiring import aws_service

    return aws_service(settings(), aws_clients)


def run_with_service(work: Any) -> Any:
    import asyncio

    service = launch_service()

    async def run() -> Any:
        await service.open()
        try:
            return await work(service)
        finally:
            await service.close()

    return asyncio.run(run())


@app.schedule("rate(1 minute)", name="reconcile")
@traced
def reconcile(event: Any) -> dict[str, Any]:
    """End launches whose gateway died, stopping what they started. Culling is the
    gateways' job: they reach the sessions' servers, this function (outside the VPC) does not."""
    result = run_with_service(lambda service: service.reconcile(cull=False))
    logger.info("reconciled", extra=result)
    count("LaunchesAbandoned", len(result["abandoned"]))
    metrics.flush_metrics()
    return dict(result)


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
                  "detail": {"lastStatus": ["STOPPED"], "startedBy": ["binderless"]}},
                 name="task_stopped")
@traced
def task_stopped(event: Any) -> dict[str, Any]:
    detail = event.detail
    reason = f"task stopped: {detail.get('stoppedReason') or detail.get('stopCode', '')}"
    session = run_with_service(
        lambda service: service.stop_task_session(detail["taskArn"], reason))
    logger.info("task stopped", extra={"task": detail["taskArn"], "session": session})
    count("SessionsEndedByTask", 1 if session else 0)
    metrics.flush_metrics()
    return {"session": session}


@app.on_cw_event({"source": ["aws.codebuild"], "detail-type": ["CodeBuild Build State Change"],
                  "detail": {"build-status": ["SUCCEEDED", "FAILED", "STOPPED", "TIMED_OUT",
                                              "FAULT"]}},
                 name="build_finished")
@traced
def build_finished(event: Any) -> dict[str, Any]:
    """Close the build claim even when the gateway that started the build is gone."""
    detail = event.detail
    environment = detail.get("additional-information", {}).get("environment", {})
    variables = {v.get("name"): v.get("value", "")
                 for v in environment.get("environment-variables", [])}
    image = variables.get("IMAGE_URI", "")
    key = image.rpartition(":")[2] if ":" in image else ""
    if not key:
        return {"key": None}
    status = "built" if detail["build-status"] == "SUCCEEDED" else "failed"
    service = launch_service()
    claim = service.store.get_build(key)
    if claim is not None and claim.status == "building":
        service.store.finish_build(key, status, image if status == "built" else "",
                                   owner=claim.owner)
        # Launches following this build's stream are released at once.
        from binderless.errors import BuildFailed
        from binderless.events import Event, event_from_error
        from binderless.phases import Phase

        service.events.append(claim.stream, Event(Phase.BUILT, "Built image.\n", {"imageName": image})
                              if status == "built" else event_from_error(BuildFailed(
                                  f"The build ended: {detail['build-status']}.",
                                  hint="Launch the repository again.")))
    logger.info("build finished", extra={"key": key, "status": status})
    count("BuildsSucceeded" if status == "built" else "BuildsFailed")
    metrics.flush_metrics()
    return {"key": key, "status": status}


# ----- launches: status and events from the shared store --------------------------------

@cache
def state() -> Any:
    from binderless.aws.dynamodb import DynamoState

    return DynamoState(aws_clients("dynamodb"), settings().aws_table)


@cache
def idempotent_create() -> Any:
    """``create`` made idempotent by Powertools: a repeated ``Idempotency-Key`` gets the
    first answer back for an hour. Its records live in the state table, under their own
    partition key, and expire through the table's TTL attribute."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from binderless.aws.dynamodb import TTL_ATTRIBUTE

    persistence = DynamoDBPersistenceLayer(
        table_name=settings().aws_table, key_attr="pk", sort_key_attr="sk",
        static_pk_value="IDEMPOTENCY#launches", expiry_attr=TTL_ATTRIBUTE,
        status_attr="idempotency_status", boto3_client=aws_clients("dynamodb"))
    config = IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=3600)
    config.register_lambda_context(app.lambda_context)
    return idempotent_function(create, data_keyword_argument="payload",
                               persistence_store=persistence, config=config)


def create(payload: dict[str, Any]) -> dict[str, str]:
    """Record a launch for a gateway to drive (see ``binderless.launches``)."""
    from binderless.launches import launch_document
    from binderless.service import LaunchRequest, record_launch

    request = LaunchRequest(**payload["request"])
    launch_id = record_launch(state(), request, now=time.time())
    count("LaunchesRequested")
    metrics.flush_metrics()
    return launch_document(launch_id, request)


@app.route("/api/launches", methods=["POST"], cors=True)
@traced
def create_launch() -> Response:
    """Start a launch: ``{"link": ...}`` or ``{"provider": ..., "spec": ...}``; the answer
    says where to follow it. The same ``Idempotency-Key`` header gives the same launch."""
    from dataclasses import asdict

    from binderless.launches import idempotency_key, launch_request

    current = app.current_request
    try:
        body = current.json_body
    except Exception:  # chalice raises BadRequestError for unparseable JSON
        body = None
    try:
        key = idempotency_key(current.headers)
        request = launch_request(body, registry=registry(), launch_host=public_host(),
                                 client_ip=current.context.get("identity", {}).get("sourceIp", ""))
    except BinderlessError as exc:
        return error_response(exc)
    payload = {"key": key, "request": asdict(request)}
    answer = idempotent_create()(payload=payload) if key else create(payload)
    return Response(body=answer, status_code=202, headers=CORS)


def public_host() -> str:
    """Where people reach this service (``BINDERLESS_PUBLIC_URL``, else the Host header)."""
    configured = settings().public_url
    if configured:
        return configured.rstrip("/") + "/"
    return f"https://{app.current_request.headers.get('host', '')}/"


@app.route("/api/launches/{launch_id}", cors=True)
@traced
def launch_status(launch_id: str) -> Response:
    from binderless.launches import status_document

    try:
        return Response(body=status_document(state(), launch_id), status_code=200,
                        headers=CORS)
    except BinderlessError as exc:
        return error_response(exc)


@app.route("/api/launches/{launch_id}/events", cors=True)
@traced
def launch_events(launch_id: str) -> Response:
    """The launch's events after ``?after=N`` (the same events the /build stream sends)."""
    from binderless.launches import events_document

    params = app.current_request.query_params or {}
    try:
        document = events_document(state(), state(), launch_id, params.get("after", "0"))
    except BinderlessError as exc:
        return error_response(exc)
    return Response(body=document, status_code=200, headers=CORS)


# ----- prebuilds: push webhooks and CI calls (binderless.prebuild) -----------------------

@app.route("/api/prebuild", methods=["POST"],
           content_types=["application/json", "application/x-www-form-urlencoded",
                          "text/plain"])
@traced
def prebuild() -> Response:
    """Build a pushed repository's environment on CodeBuild before anyone launches it:
    GitHub and GitLab push webhooks and ``Authorization: Bearer`` calls, checked against
    ``webhook_secret`` (see ``binderless.prebuild``)."""
    from binderless.aws.prebuild import start_prebuild
    from binderless.prebuild import (
        NothingToBuild,
        accepted_document,
        authenticate,
        check_request,
        ignored_document,
        too_large,
    )

    current = app.current_request
    try:
        if not settings().webhook_secret:
            authenticate(current.headers, b"", "")  # off: says so
        body: bytes = current.raw_body or b""
        refusal = too_large(len(body), settings())  # API Gateway has read it already
        if refusal is not None:
            raise refusal
        request = check_request(
            current.headers, body, settings=settings(), registry=launch_service().providers,
            deliveries=state(), launch_host=public_host(),
            client_ip=current.context.get("identity", {}).get("sourceIp", ""),
            now=time.time())
        started = run_with_service(lambda service: start_prebuild(service, request))
    except NothingToBuild as reason:
        return Response(body=ignored_document(reason), status_code=200)
    except BinderlessError as exc:
        logger.info("prebuild refused", extra={"status": exc.status_code,
                                               "reason": exc.message})
        return Response(body={"message": exc.user_message(), "status_code": exc.status_code},
                        status_code=exc.status_code)
    document = accepted_document(started.get("launch_id", ""), request,
                                 started["resolved_ref"], status=started["status"])
    document.update({k: v for k, v in started.items() if k in ("key", "build_id", "image")})
    logger.info("prebuild", extra=document)
    return Response(body=document, status_code=202)
