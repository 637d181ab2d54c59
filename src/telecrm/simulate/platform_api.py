"""The simulated telehealth platform's REST API: what telecrm will pull from.

`create_platform_app(data, jwt_secret=..., now=...)` serves a `PlatformData` behind HS256 JWT
bearer auth (claims `sub`, `exp`, `role` in {admin, patient}; a patient's `sub` is their patient
id). Errors are RFC 9457 problem+json (`telecrm.api.problems`); a 401 carries
`WWW-Authenticate: Bearer`. List endpoints take `limit`, an opaque `cursor` and `updated_since`
(ISO-8601 with a timezone) and return `{"data": [...], "next_cursor": ...}` in `(updated_at, id)`
order. Bad parameters are named in the problem, never echoed.
"""

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import jwt
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from telecrm.api.problems import Problem, install_problem_handlers, problem_response
from telecrm.simulate.platform_data import (
    Conflict,
    InvalidCursor,
    NotFound,
    Page,
    PlatformData,
)

ALGORITHM = "HS256"
ROLES = ("admin", "patient")
Role = Literal["admin", "patient"]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"


def mint_token(
    secret: str, *, sub: str, role: Role, ttl_seconds: int, now: datetime | None = None
) -> str:
    """An HS256 bearer token for `sub` with `role`, valid for `ttl_seconds` from `now`."""
    issued = now if now is not None else datetime.now(UTC)
    claims = {
        "sub": sub,
        "role": role,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_seconds)).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# -- wire models -------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Patient(_Out):
    id: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    state: str | None
    created_at: datetime
    updated_at: datetime


class Consultation(_Out):
    id: str
    patient_id: str
    status: Literal["submitted", "assigned", "accepted"]
    provider_id: str | None
    condition_area: str | None
    created_at: datetime
    updated_at: datetime


class Order(_Out):
    id: str
    patient_id: str
    amount: float
    currency: str
    recurring: bool
    created_at: datetime
    updated_at: datetime


class PatientPage(_Out):
    data: list[Patient]
    next_cursor: str | None


class ConsultationPage(_Out):
    data: list[Consultation]
    next_cursor: str | None


class OrderPage(_Out):
    data: list[Order]
    next_cursor: str | None


class CurrencyStats(_Out):
    count: int
    total_amount: float
    average_amount: float


class OrderStats(CurrencyStats):
    by_currency: dict[str, CurrencyStats]


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider_id: Annotated[str, Field(pattern=ID_PATTERN)]


# -- errors ------------------------------------------------------------------------------------


class _Unauthorized(Problem):
    """A 401 whose challenge is Bearer (the shared handler's default is telecrm's Signature)."""

    def __init__(self, detail: str, *, invalid: bool) -> None:
        super().__init__(401, "unauthorized", "Unauthorized", detail)
        self.challenge = 'Bearer realm="platform"' + (', error="invalid_token"' if invalid else "")


def _bad_parameter(name: str, rule: str) -> Problem:
    return Problem(400, "invalid_parameter", "Invalid parameter", f"{name}: {rule}", parameter=name)


def _not_found(what: str) -> Problem:
    return Problem(404, "not_found", "Not found", f"no such {what}")


# -- the app -----------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="HS256 JWT with claims sub, exp, role")


def create_platform_app(
    data: PlatformData, *, jwt_secret: str, now: Callable[[], datetime]
) -> FastAPI:
    app = FastAPI(
        title="Simulated telehealth platform",
        version="1",
        description="The synthetic platform's own API, backed by a simulator event stream.",
    )
    install_problem_handlers(app)

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc: _Unauthorized) -> Response:
        response = problem_response(
            exc.status, exc.code, exc.title, exc.detail, instance=request.url.path
        )
        response.headers["WWW-Authenticate"] = exc.challenge
        return response

    def claims(
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> dict[str, Any]:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _Unauthorized("send Authorization: Bearer <token>", invalid=False)
        try:
            body = jwt.decode(
                credentials.credentials,
                jwt_secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "role"], "verify_exp": False},
            )
        except jwt.InvalidTokenError:
            raise _Unauthorized("the token is not valid", invalid=True) from None
        exp = body.get("exp")
        if not isinstance(exp, int | float) or exp <= now().timestamp():
            raise _Unauthorized("the token has expired", invalid=True)
        if body.get("role") not in ROLES or not isinstance(body.get("sub"), str):
            raise _Unauthorized("the token's claims are not valid", invalid=True)
        return body

    def admin(token: dict[str, Any] = Depends(claims)) -> dict[str, Any]:
        if token["role"] != "admin":
            raise Problem(403, "forbidden", "Forbidden", "this endpoint needs the admin role")
        return token

    def patient(token: dict[str, Any] = Depends(claims)) -> str:
        if token["role"] != "patient":
            raise Problem(403, "forbidden", "Forbidden", "this endpoint needs the patient role")
        if not data.has_patient(token["sub"]):
            raise _not_found("patient")
        return str(token["sub"])

    class Paging:
        def __init__(
            self,
            limit: int = Query(100, ge=1, le=500, description="Rows per page"),
            cursor: str | None = Query(None, description="next_cursor from the previous page"),
            updated_since: str | None = Query(
                None,
                description="Only rows updated at or after this ISO-8601 instant (with timezone)",
                examples=["2025-01-01T00:00:00Z"],
            ),
        ) -> None:
            self.limit, self.cursor = limit, cursor
            self.updated_since: datetime | None = None
            if updated_since is not None:
                if len(updated_since) > 64:
                    raise _bad_parameter("updated_since", "too long for an ISO-8601 datetime")
                try:
                    at = datetime.fromisoformat(updated_since)
                except ValueError:
                    raise _bad_parameter("updated_since", "not an ISO-8601 datetime") from None
                if at.tzinfo is None:
                    raise _bad_parameter("updated_since", "needs a timezone, e.g. Z")
                self.updated_since = at

        def kwargs(self) -> dict[str, Any]:
            return {"limit": self.limit, "cursor": self.cursor, "updated_since": self.updated_since}

    def paged(fetch: Callable[[], Page[Any]]) -> dict[str, Any]:
        try:
            page = fetch()
        except InvalidCursor:
            raise _bad_parameter("cursor", "not a cursor this endpoint handed out") from None
        return {"data": [asdict(row) for row in page.data], "next_cursor": page.next_cursor}

    AdminDep = Annotated[dict[str, Any], Depends(admin)]
    PatientDep = Annotated[str, Depends(patient)]
    PagingDep = Annotated[Paging, Depends()]
    ConsultationId = Annotated[str, Path(pattern=ID_PATTERN)]

    @app.get("/patients", response_model=PatientPage, tags=["patients"])
    def list_patients(_: AdminDep, p: PagingDep) -> dict[str, Any]:
        """Every patient, oldest change first."""
        return paged(lambda: data.page_patients(**p.kwargs()))

    @app.get(
        "/patients/{patient_id}/consultations", response_model=ConsultationPage, tags=["patients"]
    )
    def patient_consultations(
        _: AdminDep, p: PagingDep, patient_id: Annotated[str, Path(pattern=ID_PATTERN)]
    ) -> dict[str, Any]:
        """One patient's consultations."""
        if not data.has_patient(patient_id):
            raise _not_found("patient")
        return paged(lambda: data.page_consultations(patient_id=patient_id, **p.kwargs()))

    @app.get("/consultations", response_model=ConsultationPage, tags=["consultations"])
    def list_consultations(_: AdminDep, p: PagingDep) -> dict[str, Any]:
        """Every consultation, oldest change first."""
        return paged(lambda: data.page_consultations(**p.kwargs()))

    @app.get("/consultations/pending", response_model=ConsultationPage, tags=["consultations"])
    def pending_consultations(_: AdminDep, p: PagingDep) -> dict[str, Any]:
        """Consultations submitted and not yet assigned to a provider."""
        return paged(lambda: data.page_consultations(status="submitted", **p.kwargs()))

    def _change(action: Callable[[], Any]) -> dict[str, Any]:
        try:
            return asdict(action())
        except NotFound:
            raise _not_found("consultation") from None
        except Conflict as exc:
            raise Problem(
                409,
                "conflict",
                "Conflict",
                f"the consultation is {exc.args[0]}; "
                + (
                    "it can no longer be reassigned"
                    if exc.args[0] == "accepted"
                    else "assign it first"
                ),
                status_now=exc.args[0],
            ) from None

    @app.post(
        "/consultations/{consultation_id}/assign",
        response_model=Consultation,
        tags=["consultations"],
        responses={404: {"description": "No such consultation"}, 409: {"description": "Accepted"}},
    )
    def assign(_: AdminDep, consultation_id: ConsultationId, body: AssignBody) -> dict[str, Any]:
        """Assign (or reassign) a consultation to a provider."""
        return _change(
            lambda: data.assign_consultation(consultation_id, body.provider_id, now=now())
        )

    @app.post(
        "/consultations/{consultation_id}/accept",
        response_model=Consultation,
        tags=["consultations"],
        responses={
            404: {"description": "No such consultation"},
            409: {"description": "Not assigned"},
        },
    )
    def accept(_: AdminDep, consultation_id: ConsultationId) -> dict[str, Any]:
        """The assigned provider accepts the consultation."""
        return _change(lambda: data.accept_consultation(consultation_id, now=now()))

    @app.get("/orders/stats", response_model=OrderStats, tags=["orders"])
    def order_stats(_: AdminDep) -> dict[str, Any]:
        """Count, total and average amount of paid orders, overall and per currency."""
        return data.order_stats()

    @app.get("/me/orders", response_model=OrderPage, tags=["me"])
    def my_orders(patient_id: PatientDep, p: PagingDep) -> dict[str, Any]:
        """The calling patient's orders."""
        return paged(lambda: data.page_orders(patient_id=patient_id, **p.kwargs()))

    @app.get("/me/consultations", response_model=ConsultationPage, tags=["me"])
    def my_consultations(patient_id: PatientDep, p: PagingDep) -> dict[str, Any]:
        """The calling patient's consultations."""
        return paged(lambda: data.page_consultations(patient_id=patient_id, **p.kwargs()))

    return app
