"""Annotated dependency aliases shared by the routers."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import BackgroundTasks, Depends, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.base import SecurityBase
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database, get_db_session, release_connection
from app.errors import Forbidden
from app.integrations.llm import TextModel, build_text_model
from app.models import Job, User, UserRole
from app.schemas.base import Schema
from app.security import Caller
from app.services import credentials, google_login, idempotency, job_submission, jobs
from app.services.auth import CsrfFailed, InvalidToken, NotAuthenticated, Principal, TokenPair
from app.tasks import dispatch, waited

# scope="function": the commit happens before the response is sent and before BackgroundTasks run.
SessionDep = Annotated[AsyncSession, Depends(get_db_session, scope="function")]

ACCESS_COOKIE = "pf_access"
REFRESH_COOKIE = "pf_refresh"
CSRF_COOKIE = "pf_csrf"
CSRF_HEADER = "x-csrf-token"
# Session cookies the way the Hair Try-On SPA keeps them (POST /auth/login?cookies=true, the code
# sign-in, the compat routers): both on Path=/, SameSite=Lax, guarded by the Origin rule, not a token.
SESSION_ACCESS_COOKIE = "access_token"
SESSION_REFRESH_COOKIE = "refresh_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The request-scoped dependencies here are `async def` although they never await: FastAPI runs a plain
# `def` dependency in its thread pool, and those hand-offs (four per authenticated request) cost the hot
# path more than its own query did under load.


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


ContainerDep = Annotated[Container, Depends(get_container)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]

# OAuth2's password flow makes Swagger UI's "Authorize" form work; any bearer credential is accepted.
_bearer = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/login",
    auto_error=False,
    description="A local access token, a Clerk session token or an API key (pk_...).",
)


def require_csrf(request: Request) -> None:
    """Double-submit check for cookie-authenticated writes: a cross-site form can send our cookies but
    cannot read the CSRF cookie to echo it in the header."""
    if request.method in _SAFE_METHODS:
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise CsrfFailed()


class OriginRefused(CsrfFailed):
    default_detail = (
        "A cookie-authenticated write must come from an allowed origin (Origin, else Referer, in "
        "CORS_ORIGINS); send the token in the Authorization header otherwise."
    )


def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port is not None else "")


def trusted_origins(settings: Settings) -> frozenset[str]:
    """CORS_ORIGINS and the API's own origin (its docs page), lower-cased."""
    origins = {origin.lower() for origin in settings.cors_origins}
    if own := _origin_of(settings.public_base_url):
        origins.add(own.lower())
    return frozenset(origins)


def require_trusted_origin(request: Request, settings: Settings) -> None:
    """The CSRF guard of the session cookies: an unsafe method must name an allowed origin in `Origin`
    (or, when a browser leaves it out, in `Referer`). A cross-site page can make the browser send our
    cookies, but not lie about where it is; a request naming no origin at all is refused too."""
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        origin = _origin_of(referer) if referer else None
    if origin is None or origin.lower() not in trusted_origins(settings):
        raise OriginRefused()


def set_session_cookies(response: Response, pair: TokenPair, settings: Settings) -> None:
    """Both tokens as httpOnly cookies for every path (the refresh token must reach the compat
    routers' own `refresh`), SameSite=Lax, Secure over HTTPS."""
    for name, value, max_age in (
        (SESSION_ACCESS_COOKIE, pair.access_token, pair.access_expires_in),
        (SESSION_REFRESH_COOKIE, pair.refresh_token, pair.refresh_expires_in),
    ):
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            domain=settings.auth_cookie_domain,
            secure=settings.cookies_secure,
            httponly=True,
            samesite="lax",
        )


def clear_session_cookies(response: Response, settings: Settings) -> None:
    for name in (SESSION_ACCESS_COOKIE, SESSION_REFRESH_COOKIE):
        response.delete_cookie(
            name,
            path="/",
            domain=settings.auth_cookie_domain,
            secure=settings.cookies_secure,
            httponly=True,
            samesite="lax",
        )


def google_consent_redirect(
    started: google_login.GoogleStart, cookie: str, path: str, settings: Settings
) -> RedirectResponse:
    """To Google's consent screen, with the state cookie its callback (under `path`) checks."""
    response = RedirectResponse(started.authorization_url, status_code=302)
    response.set_cookie(
        cookie,
        started.state_cookie,
        max_age=int(google_login.STATE_TTL.total_seconds()),
        path=path,
        httponly=True,
        secure=settings.cookies_secure,
        samesite="lax",  # sent on Google's top-level redirect back to us
    )
    return response


def session_refresh_token(request: Request, settings: Settings) -> str | None:
    """The refresh token of a cookie session, once the request passed the Origin rule."""
    token = request.cookies.get(SESSION_REFRESH_COOKIE)
    if token:
        require_trusted_origin(request, settings)
    return token


async def caller_of(request: Request) -> Caller:
    """One resolver, two transports: the Authorization header, else an httpOnly access cookie (the
    `pf_access` one guarded by the CSRF token, the `access_token` one by the Origin rule). A bearer
    request never looks at cookies. A credential verified in the last AUTH_CACHE_SECONDS costs no query;
    any other is verified in a unit of work of its own, whose connection is back in the pool before the
    route takes one (so a request never holds two, and a route that only reads needs no transaction)."""
    container: Container = request.app.state.container
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise InvalidToken()
    elif cookie := request.cookies.get(ACCESS_COOKIE):
        require_csrf(request)
        credential = cookie
    elif cookie := request.cookies.get(SESSION_ACCESS_COOKIE):
        require_trusted_origin(request, container.settings)
        credential = cookie
    else:
        raise NotAuthenticated()
    return await credentials.identify(container, credential)


class _CallerScheme(SecurityBase):
    """The bearer scheme of the OpenAPI document (`_bearer`'s, which makes Swagger UI's "Authorize" form
    work) that resolves the caller itself: one dependency per request where a scheme plus a resolver
    would be two, and each costs every authenticated request its solving."""

    def __init__(self) -> None:
        self.model = _bearer.model
        self.scheme_name = _bearer.scheme_name

    async def __call__(self, request: Request) -> Caller:
        return await caller_of(request)


# Who is calling, without its account row: for routes that need no more than the id.
CallerDep = Annotated[Caller, Depends(_CallerScheme())]


async def get_principal(caller: CallerDep, session: SessionDep) -> Principal:
    return await credentials.principal_of(session, caller)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_optional_principal(
    request: Request, session: SessionDep, _credential: Annotated[str | None, Depends(_bearer)]
) -> Principal | None:
    """The caller if its credential is still good, else None (logout must work with an expired one)."""
    try:
        caller = await caller_of(request)
        return await credentials.principal_of(session, caller)
    except (InvalidToken, NotAuthenticated):
        return None


OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]


async def get_current_user(principal: PrincipalDep) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> User:
    if user.role != UserRole.admin.value:
        raise Forbidden("Administrators only.")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


async def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


ClientIp = Annotated[str, Depends(client_ip)]


# --- POSTs that spend credits or create payments --------------------------------------------------------

REPLAYED = {"Idempotent-Replayed": "true"}


class Idempotent:
    """The request's work, made at most once per `Idempotency-Key` header: a retry with the same key and
    request gets the first answer (with `Idempotent-Replayed: true`) and spends nothing more; the same
    key with another request is a 409. Without the header each request runs.

    `fields`: the parsed request, for bodies whose bytes vary between retries (multipart); otherwise the
    request is known by its body's bytes."""

    def __init__(
        self,
        request: Request,
        session: AsyncSession,
        container: Container,
        caller: Caller,
        background: BackgroundTasks,
    ) -> None:
        self.request = request
        self.session = session
        self.container = container
        # Who is calling, not their row: what these requests write locks and checks the account itself
        # (`users.lock_open`), so reading the row first would cost a round trip (with its BEGIN and
        # COMMIT) for nothing.
        self.user_id = caller.user_id
        self.background = background

    @property
    def key(self) -> str | None:
        """The request's Idempotency-Key, if it sent one (for a provider's own idempotency key)."""
        return self.request.headers.get("idempotency-key")

    async def answered(self) -> bool:
        """Whether this is a retry of a request that answered already (its answer will be replayed)."""
        key = self.key
        return key is not None and await idempotency.answered(self.session, self.user_id, key)

    async def respond(
        self,
        status_code: int,
        produce: Callable[[], Awaitable[Schema]],
        fields: Mapping[str, Any] | None = None,
    ) -> JSONResponse:
        """`produce`'s answer, stored under the key in the request's transaction."""
        ttl = self.container.settings.idempotency_key_ttl_seconds
        return await respond_once(self.request, self.session, self.user_id, ttl, status_code, produce, fields)

    async def start_job(
        self,
        submit: Callable[[], Awaitable[Job]],
        shape: Callable[[Job], Schema],
        fields: Mapping[str, Any] | None = None,
    ) -> JSONResponse:
        """202: the job `submit` made, handed to its runner (here, or a queue worker) once the request
        has committed; 503 with nothing reserved when the job queue cannot take it."""
        dispatcher = dispatch.dispatcher_for(self.container)

        async def accept() -> Schema:
            await dispatcher.ensure_open()
            job = await submit()
            dispatcher.after_commit(self.background, job.id)
            return shape(job)

        return await self.respond(202, accept, fields)

    async def finish_job(self, job: job_submission.JobRequest, fields: Mapping[str, Any]) -> waited.Answer:
        """The job, run while the client waits (see app/tasks/waited.py): for answers that are not
        JSON (a compat client's bare Base64); JSON answers use `wait_for_job`.

        The request's unit of work ends first (what authentication wrote is committed) and gives its
        connection back: the job runs in units of work of its own, and clients queued for an engine
        must not hold connections the jobs need."""
        await release_connection(self.session)
        key = self.key
        fingerprint = (
            idempotency.fingerprint_fields(self.request.method, self.request.url.path, fields) if key else ""
        )
        return await waited.wait_for(self.container, self.user_id, job, key, fingerprint)

    async def wait_for_job(
        self,
        job: job_submission.JobRequest,
        shape: Callable[[jobs.FinishedJob], Awaitable[Schema]],
        fields: Mapping[str, Any],
    ) -> Response:
        """The job, run while the client waits (`finish_job`), answered as `shape` makes it."""
        answer = await self.finish_job(job, fields)
        body = await shape(answer.finished)
        # Serialised by pydantic-core in one pass: these answers carry a whole image (megabytes of base64
        # or SVG), which the json module would take twice as long to encode.
        return Response(
            body.model_dump_json(),
            media_type="application/json",
            headers=REPLAYED if answer.replayed else None,
        )


async def respond_once(
    request: Request,
    session: AsyncSession,
    user_id: uuid.UUID,
    ttl_seconds: int,
    status_code: int,
    produce: Callable[[], Awaitable[Schema]],
    fields: Mapping[str, Any] | None = None,
) -> JSONResponse:
    key = request.headers.get("idempotency-key")
    if key is None:
        return JSONResponse((await produce()).model_dump(mode="json"), status_code=status_code)
    fingerprint = (
        idempotency.fingerprint_fields(request.method, request.url.path, fields)
        if fields is not None
        else idempotency.fingerprint(request.method, request.url.path, await request.body())
    )

    async def body() -> Any:
        return (await produce()).model_dump(mode="json")

    answer = await idempotency.once(session, user_id, key, fingerprint, ttl_seconds, status_code, body)
    return JSONResponse(
        answer.body, status_code=answer.status_code, headers=REPLAYED if answer.replayed else None
    )


async def get_idempotent(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    caller: CallerDep,
    background: BackgroundTasks,
) -> Idempotent:
    return Idempotent(request, session, container, caller, background)


IdempotentDep = Annotated[Idempotent, Depends(get_idempotent)]


# --- the configured LLM (design systems from a description, prompt enhancement) ----------------------


async def get_text_model(request: Request) -> TextModel | None:
    """The model LLM_PROVIDER names, built on first use and kept on the app (None without its API key:
    the endpoint answers 503 provider_not_configured). Close it at shutdown: `aclose()`."""
    state = request.app.state
    if not hasattr(state, "text_model"):
        state.text_model = build_text_model(request.app.state.settings)
    model: TextModel | None = state.text_model
    return model


TextModelDep = Annotated[TextModel | None, Depends(get_text_model)]
