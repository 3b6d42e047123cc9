from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from app.container import Container
from app.dependencies import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    ClientIp,
    ContainerDep,
    OptionalPrincipalDep,
    SessionDep,
    clear_session_cookies,
    google_consent_redirect,
    require_csrf,
    session_refresh_token,
    set_session_cookies,
)
from app.errors import BadRequest
from app.models import EmailCodePurpose
from app.schemas.auth import (
    CodeChallengeOut,
    CodeCheckIn,
    CodeRequestIn,
    CodeVerifyIn,
    EmailIn,
    LoginIn,
    LogoutIn,
    MessageOut,
    PasswordResetIn,
    RefreshIn,
    RegisteredOut,
    RegisterIn,
    ResetTokenCheckIn,
    SessionCookiesOut,
    TokenIn,
    TokenOut,
    ValidityOut,
)
from app.schemas.errors import error_responses
from app.security import new_secret_token
from app.services import auth as auth_service
from app.services import email as email_service
from app.services import google_login, login_codes, password_reset
from app.services.auth import TokenPair

router = APIRouter(prefix="/auth", tags=["auth"])
GOOGLE_STATE_COOKIE = "pf_google_state"
_CHECK_INBOX = "If an account uses this address, a message is on its way."


def _send_outbox(background: BackgroundTasks, container: Container) -> None:
    background.add_task(email_service.deliver_due, container.database, container.email)


def _tokens(pair: TokenPair, response: Response, container: Container) -> TokenOut:
    if container.settings.auth_cookies_enabled:
        secure = container.settings.cookies_secure
        domain = container.settings.auth_cookie_domain
        response.set_cookie(
            ACCESS_COOKIE,
            pair.access_token,
            max_age=pair.access_expires_in,
            httponly=True,
            secure=secure,
            samesite="lax",
            domain=domain,
        )
        response.set_cookie(
            REFRESH_COOKIE,
            pair.refresh_token,
            max_age=pair.refresh_expires_in,
            httponly=True,
            secure=secure,
            samesite="strict",
            domain=domain,
            path="/api/v1/auth",
        )
        response.set_cookie(
            CSRF_COOKIE,
            new_secret_token(),
            max_age=pair.refresh_expires_in,
            httponly=False,
            secure=secure,
            samesite="strict",
            domain=domain,
        )
    return TokenOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.access_expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )


CookiesFlag = Annotated[
    bool,
    Query(
        description="Send the session as httpOnly `access_token`/`refresh_token` cookies (SameSite=Lax, "
        "Path=/) instead of in the body. Writes authenticated by them must come from an origin in "
        "CORS_ORIGINS."
    ),
]


def _session(
    pair: TokenPair, response: Response, container: Container, cookies: bool
) -> TokenOut | SessionCookiesOut:
    """The new session in the body, or, when the client asked for cookies, in cookies only."""
    if not cookies:
        return _tokens(pair, response, container)
    set_session_cookies(response, pair, container.settings)
    return SessionCookiesOut(expires_in=pair.access_expires_in, refresh_expires_in=pair.refresh_expires_in)


@router.post("/register", status_code=201, response_model=RegisteredOut, responses=error_responses(409, 429))
async def register(
    body: RegisterIn, session: SessionDep, container: ContainerDep, ip: ClientIp, background: BackgroundTasks
) -> RegisteredOut:
    await auth_service.rate_limit(
        container, container.settings.rate_limit_register_per_ip, "register", "ip", ip
    )
    user = await auth_service.register(
        session, container, email=body.email, password=body.password, name=body.name
    )
    _send_outbox(background, container)
    assert user.email is not None
    return RegisteredOut(id=str(user.id), email=user.email)


@router.post("/verify", response_model=MessageOut, responses=error_responses(400, 429))
async def verify(body: TokenIn, session: SessionDep, container: ContainerDep, ip: ClientIp) -> MessageOut:
    await auth_service.verification_limits(container, ip)
    await auth_service.verify_email(session, body.token)
    return MessageOut(message="Your email address is confirmed; you can sign in.")


@router.get("/verify", response_class=RedirectResponse, status_code=303, responses=error_responses(400, 429))
async def verify_link(
    session: SessionDep, container: ContainerDep, ip: ClientIp, token: Annotated[str, Query(max_length=512)]
) -> RedirectResponse:
    """The link in the email: confirms, then sends the browser to the frontend with the outcome."""
    await auth_service.verification_limits(container, ip)
    try:
        await auth_service.verify_email(session, token)
        outcome = "verified"
    except auth_service.InvalidOneTimeToken:
        outcome = "invalid"
    return RedirectResponse(
        f"{container.settings.frontend_url}/email-verified?{urlencode({'status': outcome})}", 303
    )


@router.post(
    "/resend-verification", status_code=202, response_model=MessageOut, responses=error_responses(429)
)
async def resend_verification(
    body: EmailIn, session: SessionDep, container: ContainerDep, ip: ClientIp, background: BackgroundTasks
) -> MessageOut:
    await auth_service.verification_limits(container, ip, body.email)
    await auth_service.resend_verification(session, container, body.email)
    _send_outbox(background, container)
    return MessageOut(message=_CHECK_INBOX)


def _login_form_schema() -> dict[str, Any]:
    """OAuth2's password form: `username` is the email; its other fields (grant_type, scope, client_id)
    are ignored."""
    fields = LoginIn.model_json_schema()["properties"]
    return {
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": {**fields["email"], "title": "Username", "description": "Your email address."},
            "password": fields["password"],
        },
    }


_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            # The schema itself joins the document's components in app.main.
            "application/json": {"schema": {"$ref": f"#/components/schemas/{LoginIn.__name__}"}},
            "application/x-www-form-urlencoded": {"schema": _login_form_schema()},
            "multipart/form-data": {"schema": _login_form_schema()},
        },
    }
}
_FORM_NAMES = {"email": "username"}


async def _read_login(request: Request) -> LoginIn:
    """JSON for apps; OAuth2's password form (username = email) for Swagger UI and OAuth2 clients."""
    content_type = request.headers.get("content-type", "").lower()
    is_form = content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
    try:
        if is_form:
            async with request.form() as form:
                fields = {"email": form.get("username"), "password": form.get("password")}
            return LoginIn.model_validate(fields)
        return LoginIn.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if is_form:  # the form's own field names
            errors = [
                {**error, "loc": tuple(_FORM_NAMES.get(str(part), part) for part in error["loc"])}
                for error in errors
            ]
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors]) from exc


@router.post(
    "/login",
    response_model=TokenOut | SessionCookiesOut,
    openapi_extra=_LOGIN_BODY,
    responses=error_responses(401, 403, 422, 429),
)
async def login(
    request: Request,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
    cookies: CookiesFlag = False,
) -> TokenOut | SessionCookiesOut:
    settings = container.settings
    await auth_service.rate_limit(container, settings.rate_limit_login_per_ip, "login", "ip", ip)
    body = await _read_login(request)
    await auth_service.rate_limit_account(
        container, settings.rate_limit_login_per_account, "login", body.email
    )
    pair = await auth_service.login(session, container, email=body.email, password=body.password)
    return _session(pair, response, container, cookies)


@router.post("/refresh", response_model=TokenOut | SessionCookiesOut, responses=error_responses(401))
async def refresh(
    request: Request,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    body: RefreshIn | None = None,
    cookies: CookiesFlag = False,
) -> TokenOut | SessionCookiesOut:
    """The refresh token from the body, else the `pf_refresh` cookie (with the CSRF header), else the
    `refresh_token` cookie (from an allowed origin; the new pair goes back in cookies)."""
    token = body.refresh_token if body else None
    if not token and (token := request.cookies.get(REFRESH_COOKIE)):
        require_csrf(request)
    if not token and (token := session_refresh_token(request, container.settings)):
        cookies = True
    if not token:
        raise auth_service.InvalidToken()
    return _session(await auth_service.refresh(session, container, token), response, container, cookies)


@router.post("/logout", status_code=204, responses=error_responses(400))
async def logout(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    principal: OptionalPrincipalDep,
    body: LogoutIn | None = None,
) -> Response:
    """Ends the session: the access token (if still valid) and the refresh token's whole family are
    revoked, and the auth cookies cleared. Works with an expired access token too."""
    refresh_token = body.refresh_token if body else None
    if not refresh_token and (refresh_token := request.cookies.get(REFRESH_COOKIE)):
        require_csrf(request)
    if not refresh_token:
        refresh_token = session_refresh_token(request, container.settings)
    if principal is None and not refresh_token:
        raise auth_service.NotAuthenticated()
    await auth_service.logout(session, container, principal, refresh_token)
    response = Response(status_code=204)
    for name, path in ((ACCESS_COOKIE, "/"), (REFRESH_COOKIE, "/api/v1/auth"), (CSRF_COOKIE, "/")):
        response.delete_cookie(name, path=path, domain=container.settings.auth_cookie_domain)
    clear_session_cookies(response, container.settings)
    return response


@router.post("/password/forgot", status_code=202, response_model=MessageOut, responses=error_responses(429))
async def forgot_password(
    body: EmailIn, container: ContainerDep, ip: ClientIp, background: BackgroundTasks
) -> MessageOut:
    """The same answer, as fast, whether or not the address has an account: the reset is prepared and
    sent after the answer."""
    await auth_service.password_forgot_limits(container, ip, body.email)
    background.add_task(password_reset.send_password_reset, container, body.email)
    return MessageOut(message=_CHECK_INBOX)


@router.post("/password/reset", response_model=MessageOut, responses=error_responses(400))
async def reset_password(
    body: PasswordResetIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> MessageOut:
    await auth_service.verification_limits(container, ip)
    await password_reset.reset_password(session, container, body.token, body.password)
    return MessageOut(message="Your password is changed and every session is signed out; sign in again.")


@router.post("/password/reset/check", response_model=ValidityOut)
async def check_reset_token(
    body: ResetTokenCheckIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> ValidityOut:
    """Whether the reset link still works, without spending it (a form asks before it shows). Limited
    per caller address like the reset itself; the 256-bit token cannot be guessed."""
    await auth_service.verification_limits(container, ip)
    return ValidityOut(valid=await password_reset.reset_token_is_valid(session, body.token))


# --- emailed 6-digit codes -------------------------------------------------------------------------


@router.post(
    "/code/request",
    status_code=202,
    response_model=CodeChallengeOut,
    responses=error_responses(401, 403, 429),
)
async def request_code(
    body: CodeRequestIn,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
    background: BackgroundTasks,
) -> CodeChallengeOut:
    """Emails a 6-digit code and answers with the challenge token to verify it with. The answer is the
    same whether or not the address has an account (without `password`): it never says who does."""
    await auth_service.code_request_limits(container, ip, body.email)
    challenge = await login_codes.request_code(
        session,
        container,
        email=body.email,
        purpose=EmailCodePurpose(body.purpose),
        name=body.name,
        password=body.password,
        resend_of=body.resend_of,
    )
    _send_outbox(background, container)
    return CodeChallengeOut(token=challenge.token, expires_in=challenge.expires_in)


@router.post("/code/verify", response_model=TokenOut | SessionCookiesOut, responses=error_responses(400, 429))
async def verify_code(
    body: CodeVerifyIn,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
    cookies: CookiesFlag = False,
) -> TokenOut | SessionCookiesOut:
    """The code from the email opens a session (a sign-up's account is created, its address verified).
    Each try counts: after LOGIN_CODE_MAX_ATTEMPTS wrong ones the challenge is dead."""
    await auth_service.code_verify_limits(container, ip)
    pair = await login_codes.verify_code(session, container, token=body.token, code=body.code)
    return _session(pair, response, container, cookies)


@router.post("/code/check", response_model=ValidityOut, responses=error_responses(429))
async def check_code(
    body: CodeCheckIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> ValidityOut:
    """Whether a code may still be entered for this challenge, without trying one: it takes no code,
    so it counts no attempt (and a decoy challenge is as valid as any, so it reveals no account)."""
    await auth_service.code_verify_limits(container, ip)
    return ValidityOut(valid=await login_codes.challenge_is_live(session, container, body.token))


@router.get("/google", response_class=RedirectResponse, status_code=302, responses=error_responses(503))
async def google_start(container: ContainerDep) -> RedirectResponse:
    started = google_login.start(container)
    return google_consent_redirect(started, GOOGLE_STATE_COOKIE, "/api/v1/auth/google", container.settings)


@router.get(
    "/google/callback", response_class=RedirectResponse, status_code=302, responses=error_responses(400, 503)
)
async def google_callback(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Google sends the browser here; we send it on to the frontend with the session in the fragment
    (never in the query, so it stays out of server logs and Referer headers)."""
    target = container.settings.resolved_google_login_success_url
    try:
        pair = await google_login.complete(
            session,
            container,
            code=code,
            state=state,
            error=error,
            state_cookie=request.cookies.get(GOOGLE_STATE_COOKIE),
        )
    except BadRequest as exc:
        response = RedirectResponse(f"{target}#{urlencode({'error': exc.code})}", status_code=302)
    else:
        fragment = urlencode(
            {
                "access_token": pair.access_token,
                "refresh_token": pair.refresh_token,
                "token_type": "bearer",
                "expires_in": pair.access_expires_in,
            }
        )
        response = RedirectResponse(f"{target}#{fragment}", status_code=302)
        _tokens(pair, response, container)
    response.delete_cookie(GOOGLE_STATE_COOKIE, path="/api/v1/auth/google")
    return response
