"""Emailed 6-digit codes for signing in and signing up.

A request answers with a challenge token (opaque, 256 bits; only its SHA-256 is stored) and emails a
6-digit code (only its HMAC under SECRET_KEY is stored). Verifying token + code spends the challenge and
issues the usual session. Each challenge takes at most LOGIN_CODE_MAX_ATTEMPTS wrong codes, lives
LOGIN_CODE_TTL_SECONDS, works once, and is superseded by a newer code for the same address and purpose.

No account enumeration: a request for an address that gets no code (no account to sign into, a closed
one) still stores a challenge, a decoy no code matches, and answers exactly like any other. The code
itself leaves the server only in the email: never in an answer, a log line or the audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.db.base import utcnow
from app.errors import BadRequest
from app.models import EmailCode, EmailCodePurpose, User
from app.repositories.auth_tokens import EmailCodeRepository
from app.repositories.users import UserRepository
from app.security import new_secret_token, sha256_hex
from app.services import auth as auth_service
from app.services import email as email_service
from app.services import users as users_service
from app.services.auth import TokenPair
from app.services.users import normalize_email

log = structlog.get_logger("app.auth.codes")

CODE_DIGITS = 6
DECOY = ""  # the code_hash of a challenge no code matches (an HMAC is 64 hex digits)


class InvalidCode(BadRequest):
    code = "invalid_or_expired_code"
    default_detail = "This code is wrong, expired, used up or already used; ask for a new one."


@dataclass(frozen=True)
class CodeChallenge:
    """What the client holds while the code is in the mail: the token names the challenge."""

    token: str
    expires_in: int


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(ctx: Container, challenge_id: uuid.UUID, code: str) -> str:
    """Keyed and bound to its challenge: a million possible codes are no match for an offline search
    over a leaked table without the key, nor can one challenge's hash be replayed on another's."""
    key = ctx.settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"{challenge_id.hex}:{code}".encode(), hashlib.sha256).hexdigest()


# --- asking for a code -----------------------------------------------------------------------------


async def request_code(
    session: AsyncSession,
    ctx: Container,
    *,
    email: str,
    purpose: EmailCodePurpose,
    name: str | None = None,
    password: str | None = None,
    resend_of: str | None = None,
) -> CodeChallenge:
    """A challenge for `email`, its code on the way when there is someone to send it to.

    - login: the address's verified, open account gets a code. With `password`, it must be the
      account's password first (401/403 exactly as `POST /auth/login`); without, it is a passwordless
      sign-in (as strong as the password reset link, which the same inbox can already get).
    - signup: an address without an account gets a code; verifying it creates the account (verified,
      with `name` and `password` if given, or those of the challenge whose token is `resend_of`: a
      resent code keeps what the same client asked for first). An address whose account exists gets
      a code that signs into it (the mail says so; a given password, or the `resend_of` one, is
      ignored unless the account never proved its address, see `_account_for`).
    Anything else (a closed account, an unverified one asking to log in) gets a decoy and no mail."""
    if purpose is EmailCodePurpose.login and password is not None:
        user = await auth_service.check_password(session, ctx, email=email, password=password)
        return await _issue(session, ctx, user.email or email, purpose, user, send=True)
    try:
        address = normalize_email(email)
    except ValueError:
        address = email.strip().lower()[:320]
        return await _issue(session, ctx, address, purpose, None, send=False)
    # Hashed whether or not it will be kept, so the answer takes as long for every address.
    password_hash = await ctx.passwords.hash(password) if password is not None else None
    account = await UserRepository(session).get_by_email(address)
    if purpose is EmailCodePurpose.login:
        can_sign_in = (
            account is not None and users_service.is_open(account) and account.email_verified_at is not None
        )
        return await _issue(session, ctx, address, purpose, account, send=can_sign_in)
    # Only the holder of the earlier challenge's token made that request: anyone else's pending
    # sign-up for this address (with a password of their choosing) never carries over.
    earlier = await _resent(session, resend_of, address, purpose)
    if earlier is not None:
        name = name if name is not None else earlier.name
        password_hash = password_hash if password_hash is not None else earlier.password_hash
    if account is not None:
        # A password only matters to an account that never proved its address (see `_account_for`):
        # there a resent code keeps the one its first request gave, or verifying it would drop it.
        unproven = account.email_verified_at is None
        return await _issue(
            session,
            ctx,
            address,
            purpose,
            account,
            send=users_service.is_open(account),
            password_hash=password_hash if unproven else None,
        )
    return await _issue(
        session, ctx, address, purpose, None, send=True, name=name, password_hash=password_hash
    )


async def _resent(
    session: AsyncSession, resend_of: str | None, address: str, purpose: EmailCodePurpose
) -> EmailCode | None:
    """The sign-up challenge a "send it again" names, if it was for the same address."""
    if resend_of is None or purpose is not EmailCodePurpose.signup:
        return None
    earlier = await EmailCodeRepository(session).get_by_token(sha256_hex(resend_of))
    if earlier is None or earlier.email != address or earlier.purpose != purpose.value:
        return None
    return earlier


async def address_status(session: AsyncSession, email: str) -> bool | None:
    """Whether the address's open account proved it (True/False); False too while a sign-up code for
    it is out and no account exists yet; None when there is neither. This tells who has an account:
    only a client built around asking (the Hair Try-On login form) uses it."""
    try:
        address = normalize_email(email)
    except ValueError:
        return None
    account = await UserRepository(session).get_by_email(address)
    if account is not None:
        return account.email_verified_at is not None if users_service.is_open(account) else None
    pending = await EmailCodeRepository(session).has_pending_signup(address, utcnow())
    return False if pending else None


async def _issue(
    session: AsyncSession,
    ctx: Container,
    address: str,
    purpose: EmailCodePurpose,
    user: User | None,
    *,
    send: bool,
    name: str | None = None,
    password_hash: str | None = None,
) -> CodeChallenge:
    now = utcnow()
    repository = EmailCodeRepository(session)
    ttl = ctx.settings.login_code_ttl_seconds
    token = new_secret_token()
    challenge = EmailCode(
        id=uuid.uuid4(),
        purpose=purpose.value,
        email=address,
        user_id=user.id if user is not None and send else None,
        token_hash=sha256_hex(token),
        code_hash=DECOY,
        name=name,
        password_hash=password_hash,
        attempts=0,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    if send:
        await repository.expire_unused(address, purpose.value, now)
        code = new_code()
        challenge.code_hash = code_hash(ctx, challenge.id, code)
        await _send_code(session, ctx, address, purpose, user, code)
    await repository.add(challenge)
    log.info("auth.code_requested", purpose=purpose.value, user_id=str(user.id) if user else None)
    return CodeChallenge(token=token, expires_in=ttl)


async def _send_code(
    session: AsyncSession,
    ctx: Container,
    address: str,
    purpose: EmailCodePurpose,
    user: User | None,
    code: str,
) -> None:
    app_name = ctx.settings.app_name
    minutes = ctx.settings.login_code_ttl_seconds // 60
    hello = f"Hello{auth_service.greeting(user) if user is not None else ''},"
    if purpose is EmailCodePurpose.signup and user is None:
        subject, why = f"Your {app_name} sign-up code", f"Enter this code to create your {app_name} account:"
    elif purpose is EmailCodePurpose.signup:
        subject = f"Your {app_name} sign-in code"
        why = f"You already have a {app_name} account with this address; this code signs you in:"
    else:
        subject, why = f"Your {app_name} sign-in code", f"Enter this code to sign in to {app_name}:"
    # The subject never carries the code: console and provider logs show subjects.
    await email_service.enqueue(
        session,
        to=address,
        subject=subject,
        text=f"{hello}\n\n{why}\n\n{code}\n\nIt works once and expires in {minutes} minutes. "
        "If you did not ask for it, ignore this email.",
        html=f"<p>{escape(hello)}</p><p>{escape(why)}</p><p><strong>{code}</strong></p>"
        f"<p>It works once and expires in {minutes} minutes.</p>",
        tag=f"{purpose.value}_code",
        user_id=user.id if user is not None else None,
    )


# --- checking and verifying ------------------------------------------------------------------------


async def challenge_is_live(session: AsyncSession, ctx: Container, token: str) -> bool:
    """Whether a code may still be entered for this challenge (unexpired, unspent, attempts left),
    without trying one. It takes no code, so it counts no attempt: it cannot help guess one. A decoy is
    live like any other challenge, so this cannot tell which addresses have accounts."""
    challenge = await EmailCodeRepository(session).get_live(
        sha256_hex(token), utcnow(), ctx.settings.login_code_max_attempts
    )
    return challenge is not None


async def verify_code(
    session: AsyncSession,
    ctx: Container,
    *,
    token: str,
    code: str,
    purpose: EmailCodePurpose | None = None,
) -> TokenPair:
    """The session the challenge's code opens. Every try counts against the challenge's attempts, a
    wrong one is on record (and committed with the 400); the right one spends the challenge. With
    `purpose` (a client whose login and sign-up forms verify separately), another purpose's challenge
    is refused like an unknown one."""
    repository = EmailCodeRepository(session)
    now = utcnow()
    max_attempts = ctx.settings.login_code_max_attempts
    challenge = await repository.get_live(sha256_hex(token), now, max_attempts)
    if challenge is None or (purpose is not None and challenge.purpose != purpose.value):
        raise InvalidCode()
    if not await repository.count_attempt(challenge.id, now, max_attempts):
        raise InvalidCode()
    if not hmac.compare_digest(challenge.code_hash, code_hash(ctx, challenge.id, code)):
        await auth_service.login_failed(session, challenge.user_id, "wrong_code", "code")
        raise InvalidCode(keep_changes=True)
    if not await repository.spend(challenge.id, now):
        raise InvalidCode()  # a concurrent request with the same code won
    user = await _account_for(session, ctx, challenge, now)
    if user is None:
        await auth_service.login_failed(session, challenge.user_id, "account_closed", "code")
        raise InvalidCode(keep_changes=True)
    return await auth_service.signed_in(session, ctx, user, "code")


async def _account_for(
    session: AsyncSession, ctx: Container, challenge: EmailCode, now: datetime
) -> User | None:
    """The account a spent challenge opens; a sign-up's is created now.

    The code proved the address. An existing account that never proved it may have been registered by
    someone else (pre-account takeover): as with Google or Clerk, its old password and sessions end
    (`link_verified_owner`), and the sign-up's own password, if any, takes over."""
    if challenge.purpose == EmailCodePurpose.login.value:
        user = await users_service.get_active(session, challenge.user_id) if challenge.user_id else None
        return user if user is not None and user.email_verified_at is not None else None
    if challenge.user_id is not None:
        user = await users_service.get_active(session, challenge.user_id)
    else:
        user = await UserRepository(session).get_by_email(challenge.email)
        if user is None:
            try:
                return await users_service.create_user(
                    session,
                    ctx.settings,
                    email=challenge.email,
                    password_hash=challenge.password_hash,
                    name=challenge.name,
                    email_verified_at=now,
                )
            except IntegrityError:  # the address was registered at this very moment
                user = await UserRepository(session).get_by_email(challenge.email)
        if user is not None and not users_service.is_open(user):
            return None
    if user is not None and user.email_verified_at is None:
        users_service.link_verified_owner(user)
        user.password_hash = challenge.password_hash
    return user
