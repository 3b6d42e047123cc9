"""Annotated dependency aliases shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.container import Container
from app.db.session import Database, get_db_session
from app.errors import Forbidden
from app.models import User, UserRole
from app.services import auth as auth_service
from app.services.auth import CsrfFailed, InvalidToken, NotAuthenticated, Principal

# scope="function": the commit happens before the response is sent and before BackgroundTasks run.
SessionDep = Annotated[AsyncSession, Depends(get_db_session, scope="function")]

ACCESS_COOKIE = "pf_access"
REFRESH_COOKIE = "pf_refresh"
CSRF_COOKIE = "pf_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
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


async def get_principal(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    bearer: Annotated[str | None, Depends(_bearer)],
) -> Principal:
    """One resolver, two transports: the Authorization header, else the httpOnly access cookie."""
    if bearer:
        credential = bearer
    elif request.headers.get("authorization"):
        raise InvalidToken()
    elif cookie := request.cookies.get(ACCESS_COOKIE):
        require_csrf(request)
        credential = cookie
    else:
        raise NotAuthenticated()
    return await auth_service.authenticate(session, container, credential)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_optional_principal(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    bearer: Annotated[str | None, Depends(_bearer)],
) -> Principal | None:
    """The caller if its credential is still good, else None (logout must work with an expired one)."""
    try:
        return await get_principal(request, session, container, bearer)
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


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


ClientIp = Annotated[str, Depends(client_ip)]
