"""The FastAPI application: intake, health and metrics, with problem+json errors throughout."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from telecrm import __version__
from telecrm.api.access import AccessControl, build_token_service, install_access_handlers
from telecrm.api.problems import install_problem_handlers, problem_response
from telecrm.api.rate_limit import install_rate_limits
from telecrm.api.routes_admin import build_admin_router
from telecrm.api.routes_events import EVENTS_OPENAPI, build_router
from telecrm.api.routes_messaging import MESSAGING_OPENAPI, build_messaging_router
from telecrm.api.routes_oauth import build_oauth_router
from telecrm.api.routes_patients import build_patients_router
from telecrm.bootstrap import EmbeddedWorker, Runtime
from telecrm.ingest.group_commit import GroupCommitWriter
from telecrm.security.jwks import JwksFetcher
from telecrm.store.engine import read_only


def tune_interpreter() -> None:
    """The event loop and the intake writer thread hand the GIL back and forth on every request;
    Python's default 5 ms switch interval made each handoff a wait."""
    sys.setswitchinterval(0.0005)


def app_from_environment() -> FastAPI:
    """The app for one of several `telecrm serve --workers N` processes (uvicorn factory)."""
    from telecrm.bootstrap import bootstrap
    from telecrm.observability.logs import configure_logging
    from telecrm.settings import Settings

    runtime = bootstrap(Settings())
    configure_logging(runtime.settings.log_level)
    tune_interpreter()
    return create_app(runtime)


def create_app(
    runtime: Runtime,
    *,
    embedded_worker: bool | None = None,
    jwks_fetch: JwksFetcher | None = None,
) -> FastAPI:
    """The app; ``jwks_fetch`` replaces the HTTP fetch of an external issuer's keys (tests)."""
    run_worker = runtime.settings.embedded_worker if embedded_worker is None else embedded_worker

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.keyring  # fail at start, not on the first request, if the key is missing  # noqa: B018
        writer.start()
        worker = EmbeddedWorker(runtime) if run_worker else None
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            writer.stop()
            if worker is not None:
                worker.stop()
                worker.join(timeout=10)

    app = FastAPI(
        title="telecrm",
        version=__version__,
        description="HIPAA-aware CRM integration and patient-engagement engine: event intake, "
        "provider webhooks, and the OAuth 2.0-protected read API (docs/api.md).",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    install_rate_limits(app, runtime)  # per-client budgets; before any route runs
    writer = GroupCommitWriter(runtime.intake())
    app.include_router(build_router(runtime, writer))
    app.include_router(build_messaging_router(runtime))
    # The read API: OAuth 2.0 token endpoint + bearer-protected /v1/ reads (docs/api.md).
    install_access_handlers(app)
    tokens = build_token_service(runtime, jwks_fetch=jwks_fetch)
    access = AccessControl(runtime, tokens)
    app.state.access = access  # what a middleware needs to authenticate a request itself
    app.include_router(build_oauth_router(runtime, tokens))
    app.include_router(build_patients_router(runtime, access))
    app.include_router(build_admin_router(runtime, access))

    def openapi() -> dict[str, Any]:
        # /v1/events is a plain route (see routes_events.py), so describe it here by hand.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema["paths"]["/v1/events"] = {"post": EVENTS_OPENAPI}
            schema["paths"].update(MESSAGING_OPENAPI)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", summary="Liveness and database reachability")
    def healthz() -> Response:
        try:
            with read_only(runtime.engine).connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return problem_response(
                503, "database_unavailable", "Database unavailable", "the database does not answer"
            )
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
