"""The Hair Try-On SPA's API: cookie sessions, emailed login codes, the account routes.

Each route keeps the original server's path, body and answer (read from the SPA's source) and calls the
native services: sign-up and sign-in by emailed 6-digit code (`login_codes`), the rotating refresh token
with its grace window (`auth`), the password reset link (`auth`), Google (`google_login`, with this
router's own callback). The session lives in the `access_token` / `refresh_token` cookies; every unsafe
call must name an allowed Origin instead of sending a CSRF token, which the SPA never does."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from app.container import Container
from app.dependencies import (
    SESSION_REFRESH_COOKIE,
    ClientIp,
    ContainerDep,
    OptionalPrincipalDep,
    SessionDep,
    clear_session_cookies,
    google_consent_redirect,
    set_session_cookies,
)
from app.errors import AppError, BadRequest, NotFound
from app.models import EmailCodePurpose
from app.routers.compat._hairtryon_session import (
    HAIRTRYON_PREFIX,
    HairTryOnUser,
    no_cookies,
    refusal_response,
    require_hairtryon_origin,
    session_ended,
)
from app.schemas.compat.hairtryon import (
    ChallengeOut,
    CodeIn,
    DetailOut,
    EmailIn,
    EmailStatusOut,
    LoginTokenIn,
    OkOut,
    ResetPasswordIn,
    SignupIn,
    SignupOut,
    TokenIn,
    UserMeOut,
    ValidityOut,
    VerifiedOut,
)
from app.schemas.errors import HairTryOnErrorOut, error_responses
from app.services import auth as auth_service
from app.services import credits as credits_service
from app.services import email as email_service
from app.services import google_login, login_codes, password_reset

router = APIRouter(
    prefix=HAIRTRYON_PREFIX,
    tags=["compat: Hair Try-On"],
    dependencies=[Depends(require_hairtryon_origin)],
)

# The token of the browser's latest sign-up code, so that "send the code again" (which the SPA asks
# with the address only) keeps the name and password the sign-up gave: login_codes' `resend_of`.
SIGNUP_CHALLENGE_COOKIE = "ht_signup_challenge"
GOOGLE_STATE_COOKIE = "ht_google_state"
_CHECK_INBOX = "If the email is registered, a password reset link has been sent."


class UserNotFound(NotFound):
    code = "user_not_found"
    default_detail = "No account uses this email address; sign up first."


class AlreadyVerified(BadRequest):
    code = "already_verified"
    default_detail = "This email address is already verified; sign in."


def _auth_path(request: Request) -> str:
    """This router's `.../auth` path as mounted (the cookies of the sign-in steps are scoped to it)."""
    path = request.url.path
    return path[: path.rindex("/auth/") + len("/auth")]


def _send_outbox(background: BackgroundTasks, container: Container) -> None:
    background.add_task(email_service.deliver_due, container.database, container.email)


def _remember_signup(response: Response, request: Request, container: Container, token: str) -> None:
    response.set_cookie(
        SIGNUP_CHALLENGE_COOKIE,
        token,
        max_age=container.settings.login_code_ttl_seconds,
        path=_auth_path(request),
        domain=container.settings.auth_cookie_domain,
        secure=container.settings.cookies_secure,
        httponly=True,
        samesite="lax",
    )


# --- #1 the signed-in user -------------------------------------------------------------------------


@router.get(
    "/user/me", response_model=UserMeOut, responses=error_responses(400, 401, model=HairTryOnErrorOut)
)
async def me(user: HairTryOnUser, session: SessionDep) -> UserMeOut:
    balance = await credits_service.balance_of(session, user.id)
    email = user.email or ""
    return UserMeOut(
        id=str(user.id),
        # The SPA greets by name, which the original required; an account without one shows its address.
        name=user.name or email.partition("@")[0],
        email=email,
        userpic=user.photo_url,
        credits=float(credits_service.to_credits(balance)),
    )


# --- #2-#8 sign-up and sign-in with an emailed code ------------------------------------------------


@router.post("/auth/signup", response_model=SignupOut, responses=error_responses(403, 429))
async def signup(
    body: SignupIn,
    request: Request,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
    background: BackgroundTasks,
) -> SignupOut:
    """Emails the sign-up code; the account is created, verified, when it is entered (verify-signup).
    An address that has an account gets a code that signs into it instead (the email says so)."""
    await auth_service.code_request_limits(container, ip, body.email)
    challenge = await login_codes.request_code(
        session,
        container,
        email=body.email,
        purpose=EmailCodePurpose.signup,
        name=body.name,
        password=body.password,
    )
    _send_outbox(background, container)
    _remember_signup(response, request, container, challenge.token)
    return SignupOut(email=body.email, name=body.name, verify_token=challenge.token)


@router.post(
    "/auth/request-login-token", response_model=ChallengeOut, responses=error_responses(401, 403, 429)
)
async def request_login_token(
    body: LoginTokenIn,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
    background: BackgroundTasks,
) -> ChallengeOut:
    """The password first (401 wrong, 403 address not verified: the SPA then asks check-email-status),
    then a code by email."""
    settings = container.settings
    await auth_service.rate_limit(container, settings.rate_limit_login_per_ip, "login", "ip", ip)
    await auth_service.rate_limit_account(
        container, settings.rate_limit_login_per_account, "login", body.email
    )
    challenge = await login_codes.request_code(
        session, container, email=body.email, purpose=EmailCodePurpose.login, password=body.password
    )
    _send_outbox(background, container)
    return ChallengeOut(token=challenge.token)


@router.post(
    "/auth/check-email-status", response_model=EmailStatusOut, responses=error_responses(403, 404, 429)
)
async def check_email_status(
    body: EmailIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> EmailStatusOut:
    """Whether the address is verified: false while its sign-up code is unused, 404 without an
    account. This tells who has an account, as the original server did; the SPA's login form needs it
    to offer a new sign-up code."""
    await auth_service.verification_limits(container, ip)
    verified = await login_codes.address_status(session, body.email)
    if verified is None:
        raise UserNotFound()
    return EmailStatusOut(verified=verified)


@router.post(
    "/auth/request-signup-token", response_model=ChallengeOut, responses=error_responses(400, 403, 429)
)
async def request_signup_token(
    body: EmailIn,
    request: Request,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
    background: BackgroundTasks,
) -> ChallengeOut:
    """A new sign-up code for an address not verified yet. The name and password of this browser's
    sign-up carry over (its challenge cookie); anyone else's never do."""
    await auth_service.code_request_limits(container, ip, body.email)
    if await login_codes.address_status(session, body.email):
        raise AlreadyVerified()
    challenge = await login_codes.request_code(
        session,
        container,
        email=body.email,
        purpose=EmailCodePurpose.signup,
        resend_of=request.cookies.get(SIGNUP_CHALLENGE_COOKIE),
    )
    _send_outbox(background, container)
    _remember_signup(response, request, container, challenge.token)
    return ChallengeOut(token=challenge.token)


@router.post("/auth/verify-code-token", response_model=ValidityOut, responses=error_responses(403, 429))
async def verify_code_token(
    body: TokenIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> ValidityOut:
    """Whether a code may still be entered for this token; counts no attempt."""
    await auth_service.code_verify_limits(container, ip)
    return ValidityOut(valid=await login_codes.challenge_is_live(session, container, body.token))


async def _verify(
    body: CodeIn,
    purpose: EmailCodePurpose,
    request: Request,
    response: Response,
    session: SessionDep,
    container: Container,
    ip: str,
) -> VerifiedOut:
    await auth_service.code_verify_limits(container, ip)
    pair = await login_codes.verify_code(
        session, container, token=body.token, code=body.code, purpose=purpose
    )
    set_session_cookies(response, pair, container.settings)
    response.delete_cookie(SIGNUP_CHALLENGE_COOKIE, path=_auth_path(request))
    return VerifiedOut()


@router.post("/auth/verify-login", response_model=VerifiedOut, responses=error_responses(400, 403, 429))
async def verify_login(
    body: CodeIn,
    request: Request,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
) -> VerifiedOut:
    """The emailed code opens the session (both cookies). Every wrong code counts; past
    LOGIN_CODE_MAX_ATTEMPTS the token is dead, even for the right code."""
    return await _verify(body, EmailCodePurpose.login, request, response, session, container, ip)


@router.post("/auth/verify-signup", response_model=VerifiedOut, responses=error_responses(400, 403, 429))
async def verify_signup(
    body: CodeIn,
    request: Request,
    response: Response,
    session: SessionDep,
    container: ContainerDep,
    ip: ClientIp,
) -> VerifiedOut:
    """The emailed code creates the account (its address verified) and opens its session."""
    return await _verify(body, EmailCodePurpose.signup, request, response, session, container, ip)


# --- #9, #10 the cookie session --------------------------------------------------------------------


@router.post(
    "/auth/refresh", response_model=OkOut, responses=error_responses(400, 401, 403, model=HairTryOnErrorOut)
)
async def refresh(request: Request, session: SessionDep, container: ContainerDep) -> Response:
    """A new pair in the cookies for the refresh cookie. Two tabs refreshing with the same one at once
    both get one (REFRESH_REUSE_GRACE_SECONDS); a rotated one presented later kills the whole family.
    A dead refresh token clears the cookies: the next visit is anonymous, not "Session expired"."""
    token = request.cookies.get(SESSION_REFRESH_COOKIE)
    if not token:
        raise no_cookies()
    try:
        pair = await auth_service.refresh(session, container, token)
    except auth_service.InvalidToken:
        # Answered, not raised: a reused token's family revocation must be committed with the 401.
        return refusal_response(request, session_ended())
    response = JSONResponse(OkOut().model_dump())
    set_session_cookies(response, pair, container.settings)
    return response


@router.post("/auth/logout", response_model=OkOut, responses=error_responses(403))
async def logout(
    request: Request, session: SessionDep, container: ContainerDep, principal: OptionalPrincipalDep
) -> Response:
    """Revokes the access token and the refresh token's family, clears the cookies. Answers the same
    without a (valid) session: the browser ends up signed out either way."""
    refresh_token = request.cookies.get(SESSION_REFRESH_COOKIE)
    if principal is not None or refresh_token:
        await auth_service.logout(session, container, principal, refresh_token)
    response = JSONResponse(OkOut().model_dump())
    clear_session_cookies(response, container.settings)
    return response


# --- #11-#13 the password reset link ---------------------------------------------------------------


@router.post("/auth/forgot-password", response_model=DetailOut, responses=error_responses(403, 429))
async def forgot_password(
    body: EmailIn, container: ContainerDep, ip: ClientIp, background: BackgroundTasks
) -> DetailOut:
    """The same answer whether or not the address has an account; the link, to
    `${FRONTEND_URL}/reset-password?token=` (the SPA's page), is prepared and sent after the answer."""
    await auth_service.password_forgot_limits(container, ip, body.email)
    background.add_task(password_reset.send_password_reset, container, body.email)
    return DetailOut(detail=_CHECK_INBOX)


@router.post("/auth/verify-reset-token", response_model=ValidityOut, responses=error_responses(403, 429))
async def verify_reset_token(
    body: TokenIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> ValidityOut:
    """Whether the reset link still works, without spending it."""
    await auth_service.verification_limits(container, ip)
    return ValidityOut(valid=await password_reset.reset_token_is_valid(session, body.token))


@router.post("/auth/reset-password", response_model=DetailOut, responses=error_responses(400, 403, 429))
async def reset_password(
    body: ResetPasswordIn, session: SessionDep, container: ContainerDep, ip: ClientIp
) -> DetailOut:
    """`new_password` and `confirm_password` must match (422 otherwise); the link works once, and every
    session of the account ends."""
    await auth_service.verification_limits(container, ip)
    await password_reset.reset_password(session, container, body.token, body.new_password)
    return DetailOut(detail="Your password has been reset; sign in with the new one.")


# --- #14 Google, in a popup ------------------------------------------------------------------------


def _google_callback_uri(request: Request, container: Container) -> str:
    return f"{container.settings.public_base_url}{_auth_path(request)}/google/callback"


@router.get("/auth/google", response_class=RedirectResponse, status_code=302, responses=error_responses(503))
async def google_start(request: Request, container: ContainerDep) -> RedirectResponse:
    """To Google's consent screen, which comes back to this router's own callback."""
    started = google_login.start(container, redirect_uri=_google_callback_uri(request, container))
    path = f"{_auth_path(request)}/google"
    return google_consent_redirect(started, GOOGLE_STATE_COOKIE, path, container.settings)


@router.get(
    "/auth/google/callback",
    response_class=RedirectResponse,
    status_code=302,
    responses=error_responses(400, 503),
)
async def google_callback(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Sets the session cookies and sends the popup to the SPA's `/auth/callback?success=true` (or
    `?error=<code>`), which tells the opener window and closes."""
    target = f"{container.settings.frontend_url}/auth/callback"
    try:
        pair = await google_login.complete(
            session,
            container,
            code=code,
            state=state,
            error=error,
            state_cookie=request.cookies.get(GOOGLE_STATE_COOKIE),
            redirect_uri=_google_callback_uri(request, container),
        )
    except AppError as exc:
        response = RedirectResponse(f"{target}?{urlencode({'error': exc.code})}", status_code=302)
    else:
        response = RedirectResponse(f"{target}?success=true", status_code=302)
        set_session_cookies(response, pair, container.settings)
    response.delete_cookie(GOOGLE_STATE_COOKIE, path=f"{_auth_path(request)}/google")
    return response
