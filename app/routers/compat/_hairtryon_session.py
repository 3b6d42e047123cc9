"""What every Hair Try-On route shares: its prefix, its error shape and the cookie session gate.

The SPA reads `detail.code` of an error (NO_COOKIES_FOUND sends it to the login page, NOT_AUTHENTICATED
makes it refresh and retry), so its refusals carry an object `detail` next to Pixforge's `error` and
`request_id`; every other error keeps the native body, whose string `detail` the SPA shows as is."""

from __future__ import annotations

from typing import Annotated
from xml.etree import ElementTree

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.dependencies import (
    SESSION_ACCESS_COOKIE,
    SESSION_REFRESH_COOKIE,
    ContainerDep,
    SessionDep,
    clear_session_cookies,
    require_trusted_origin,
)
from app.errors import AppError, request_id_of
from app.models import User
from app.services import credentials

HAIRTRYON_PREFIX = "/hairtryon/api/v1"


class HairTryOnRefusal(Exception):
    """A refusal the SPA branches on by `detail.code`."""

    def __init__(self, status_code: int, code: str, message: str, *, clear_session: bool = False) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        # A session that can never work again: its cookies go too, so the next visit is anonymous (400
        # NO_COOKIES_FOUND, no "Session expired" toast) instead of failing the same way each time.
        self.clear_session = clear_session
        super().__init__(message)


def no_cookies() -> HairTryOnRefusal:
    return HairTryOnRefusal(400, "NO_COOKIES_FOUND", "You are not signed in.")


def not_authenticated() -> HairTryOnRefusal:
    return HairTryOnRefusal(401, "NOT_AUTHENTICATED", "Your session has expired; refresh it or sign in.")


async def _render_refusal(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HairTryOnRefusal)
    return refusal_response(request, exc)


def refusal_response(request: Request, exc: HairTryOnRefusal) -> JSONResponse:
    """The refusal as an answer, for a route that must return it rather than raise it (raising rolls
    the request's unit of work back, and some refusals have changes to keep)."""
    request_id = request_id_of(request)
    body = {
        "error": exc.code.lower(),
        "detail": {"code": exc.code, "message": exc.message},
        "request_id": request_id,
    }
    response = JSONResponse(
        body, status_code=exc.status_code, headers={"X-Request-ID": request_id} if request_id else None
    )
    if exc.clear_session:
        clear_session_cookies(response, request.app.state.settings)
    return response


class S3UploadRefusal(Exception):
    """A refused upload to the SPA's presigned POST, told the way S3 tells it (the SPA parses the XML's
    `Code` and `Message`, and `ProposedSize`/`MaxSizeAllowed` of an EntityTooLarge)."""

    def __init__(self, status_code: int, code: str, message: str, **extra: int) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.extra = extra
        super().__init__(message)


async def _render_s3_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, S3UploadRefusal)
    request_id = request_id_of(request)
    error = ElementTree.Element("Error")
    for name, value in (("Code", exc.code), ("Message", exc.message), *exc.extra.items()):
        ElementTree.SubElement(error, name).text = str(value)
    ElementTree.SubElement(error, "RequestId").text = request_id or ""
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(error)
    return Response(
        body,
        status_code=exc.status_code,
        media_type="application/xml",
        headers={"X-Request-ID": request_id} if request_id else None,
    )


def install_hairtryon_errors(app: FastAPI) -> None:
    app.add_exception_handler(HairTryOnRefusal, _render_refusal)
    app.add_exception_handler(S3UploadRefusal, _render_s3_refusal)


def session_ended() -> HairTryOnRefusal:
    return HairTryOnRefusal(
        401, "NOT_AUTHENTICATED", "Your session has ended; sign in again.", clear_session=True
    )


async def require_hairtryon_origin(request: Request, container: ContainerDep) -> None:
    """Every unsafe Hair Try-On call names an allowed Origin (the SPA's fetches always do): the cookie
    writes because a cross-site page can make the browser send the cookies, the sign-in calls because
    one could otherwise slip its own session into the browser (login CSRF)."""
    require_trusted_origin(request, container.settings)


async def get_hairtryon_user(request: Request, session: SessionDep, container: ContainerDep) -> User:
    """The signed-in user of a cookie session: no cookies at all is 400 NO_COOKIES_FOUND (the SPA's
    "anonymous visitor", no toast), a missing or dead access cookie is 401 NOT_AUTHENTICATED (the SPA
    refreshes and retries). Unsafe methods must come from an allowed Origin instead of a CSRF token."""
    access = request.cookies.get(SESSION_ACCESS_COOKIE)
    if not access and not request.cookies.get(SESSION_REFRESH_COOKIE):
        raise no_cookies()
    if not access:
        raise not_authenticated()
    require_trusted_origin(request, container.settings)
    try:
        principal = await credentials.authenticate(session, container, access)
    except AppError as exc:
        if exc.status_code == 401:
            raise not_authenticated() from exc
        raise
    if principal.via != "local":  # an API key or a Clerk token has no business in this cookie
        raise not_authenticated()
    return principal.user


HairTryOnUser = Annotated[User, Depends(get_hairtryon_user)]
