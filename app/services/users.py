"""Accounts: creation (with the signup bonus, once), profile, export and erasure."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import SessionTransaction

from app.config import Settings
from app.container import Container
from app.db.base import utcnow
from app.errors import Conflict, NotFound
from app.models import AuditAction, CreditLedgerEntry, LedgerReason, User
from app.repositories.auth_tokens import (
    ApiKeyRepository,
    EmailCodeRepository,
    OneTimeTokenRepository,
    RefreshTokenRepository,
)
from app.repositories.credits import CreditRepository, SignupBonusClaimRepository
from app.repositories.design import DesignSystemRepository
from app.repositories.outbox import OutboxRepository
from app.repositories.tax_invoices import BillingProfileRepository
from app.repositories.users import UserRepository
from app.services import audit, credits
from app.services import images as images_service
from app.services.credits import to_millicredits

log = structlog.get_logger("app.users")


class EmailTaken(Conflict):
    code = "email_taken"
    default_detail = "An account with this email already exists."


class UsernameTaken(Conflict):
    code = "username_taken"
    default_detail = "This username is taken."


def normalize_email(email: str) -> str:
    """Trimmed and lower-cased: one address, one account, however it is typed."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


async def get_active(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    user = await UserRepository(session).get(user_id)
    return user if user is not None and is_open(user) else None


async def create_user(session: AsyncSession, settings: Settings, **fields: Any) -> User:
    """A new account with its credit account and the signup bonus. A concurrent creation of the same
    unique identity (email, Clerk id, Google sub) raises IntegrityError to the caller, with nothing left
    behind, because the inserts run in a savepoint."""
    async with session.begin_nested():
        user = await UserRepository(session).add(User(**fields))
    await grant_signup_bonus(session, settings, user)
    return user


async def grant_signup_bonus(session: AsyncSession, settings: Settings, user: User) -> None:
    """The bonus lands once per identity, not per account: an address, a Google subject or a Clerk user
    that had it before (an erased account, say) brings the new account none."""
    bonus = to_millicredits(settings.signup_bonus_credits)
    await CreditRepository(session).ensure_account(user.id)
    if bonus <= 0:
        return
    if not await SignupBonusClaimRepository(session).claim(user.id, _identity_hashes(settings, user)):
        log.info("signup_bonus.identity_already_claimed", user_id=str(user.id))
        return
    # Keyed by user: however many paths create this account, the bonus lands once.
    await credits.grant(session, user.id, bonus, LedgerReason.signup_bonus, key=f"signup_bonus:{user.id}")


def _identity_hashes(settings: Settings, user: User) -> list[str]:
    identities = [
        f"{kind}:{value}"
        for kind, value in (("email", user.email), ("google", user.google_sub), ("clerk", user.clerk_id))
        if value
    ]
    key = settings.secret_key.get_secret_value().encode()
    return [hmac.new(key, identity.encode(), hashlib.sha256).hexdigest() for identity in identities]


async def update_profile(session: AsyncSession, user: User, changes: dict[str, Any]) -> User:
    username = changes.get("username")
    if username is not None and await UserRepository(session).username_taken(username, by_other_than=user.id):
        raise UsernameTaken()
    for name, value in changes.items():
        setattr(user, name, value)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise UsernameTaken() from exc
    return user


@dataclass(frozen=True)
class AccountExport:
    user: User
    balance: int
    reserved: int
    ledger: list[CreditLedgerEntry]
    api_keys: list[Any]
    emails: list[Any] = field(default_factory=list)
    design_systems: list[Any] = field(default_factory=list)


async def export(session: AsyncSession, user: User) -> AccountExport:
    repository = CreditRepository(session)
    account = await repository.ensure_account(user.id)
    ledger = await repository.list_entries(account.id, limit=1_000_000)
    await audit.record(session, action=AuditAction.account_exported, actor_id=user.id, subject_id=user.id)
    return AccountExport(
        user=user,
        balance=account.balance,
        reserved=account.reserved,
        ledger=ledger,
        api_keys=await ApiKeyRepository(session).list_for_user(user.id),
        emails=await OutboxRepository(session).list_for_user(user.id),
        design_systems=await DesignSystemRepository(session).list_for_user(user.id),
    )


async def lock_open(session: AsyncSession, user_id: uuid.UUID) -> User:
    """The account's row locked until the transaction ends, or NotFound if it was erased or closed.

    Erasure and everything that creates data for an account (an upload, a job and its reservation)
    take this lock first, so they never interleave: what was created before an erasure is erased with
    the rest, and nothing can be created after it."""
    held: tuple[SessionTransaction, dict[uuid.UUID, User]] | None = session.info.get(_LOCKED_IN)
    transaction = _innermost_transaction(session)
    user = None
    if held is not None and held[0] is transaction:
        # Locked already in this very transaction (an upload stored, then its job submitted): the row
        # cannot have changed under our lock, so the copy locked is current and no query is needed. It
        # is kept here because the session's identity map holds it weakly: a caller that dropped it
        # would make `session.get` read the row again.
        user = held[1].get(user_id)
        if user is not None and inspect(user).expired_attributes:
            user = None  # expired by the session meanwhile: read under the lock again
    if user is None:
        user = await UserRepository(session).lock(user_id)
        transaction = _innermost_transaction(session)  # begun by that query if none was running
        if user is not None and transaction is not None:
            if held is None or held[0] is not transaction:
                held = (transaction, {})
                session.info[_LOCKED_IN] = held
            held[1][user_id] = user
    if user is None or not is_open(user):
        raise NotFound("No such user.")
    return user


# session.info's entry: the transaction `lock_open` locked users in, and the users by id. Keyed by the
# innermost transaction (a savepoint's rollback gives up the locks taken inside it) and kept only while it
# is the one running, so a lock is never assumed in a transaction that did not take it.
_LOCKED_IN = "users_locked_in"


def _innermost_transaction(session: AsyncSession) -> SessionTransaction | None:
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    return transaction if transaction is not None and transaction.is_active else None


async def erase(session: AsyncSession, ctx: Container, user: User) -> None:
    """Right to erasure: every personal field is wiped, every credential revoked, every stored image
    deleted. The row itself, its credit account, ledger and payments stay, detached from any person,
    for the accounts. Serialised with uploads and job submissions by the row's lock (`lock_open`)."""
    locked = await UserRepository(session).lock(user.id)
    if locked is None or locked.erased_at is not None:
        return  # erased by a concurrent request meanwhile: nothing is left to do
    now = utcnow()
    await images_service.delete_user_files(session, ctx, user.id)
    await RefreshTokenRepository(session).revoke_all_for_user(user.id, now)
    await OneTimeTokenRepository(session).delete_for_user(user.id)
    await EmailCodeRepository(session).delete_for_user(user.id, user.email)
    await ApiKeyRepository(session).delete_for_user(user.id)
    await OutboxRepository(session).delete_for_user(user.id)
    await DesignSystemRepository(session).delete_for_user(user.id)
    # Issued tax invoices stay as they were (the law keeps them for years); the details for new ones go.
    await BillingProfileRepository(session).delete_for_user(user.id)
    user.email = None
    user.name = None
    user.username = None
    user.photo_url = None
    user.password_hash = None
    # A tombstone instead of the Clerk id: it identifies no one, yet stops a late Clerk webhook or an old
    # session from bringing the account back.
    if user.clerk_id and not user.clerk_id.startswith("deleted:"):
        user.clerk_id = clerk_tombstone(user.clerk_id)
    user.google_sub = None
    user.email_verified_at = None
    user.is_active = False
    user.erased_at = now
    user.sessions_revoked_at = now
    await audit.record(session, action=AuditAction.account_deleted, subject_id=user.id)
    await session.flush()


async def find_or_create_external(
    session: AsyncSession,
    settings: Settings,
    *,
    provider: Literal["clerk", "google"],
    external_id: str,
    email: str | None,
    email_verified: bool,
    name: str | None,
    photo_url: str | None,
) -> User:
    """The account behind an identity another service vouches for (a Clerk user, a Google subject).

    A verified address that already has an account links to it (the same person proved it); an
    unverified address is never stored, so nobody can squat or take over an address they don't own.
    Concurrent first sign-ins of one identity end on one row."""
    repository = UserRepository(session)
    find = repository.get_by_clerk_id if provider == "clerk" else repository.get_by_google_sub
    id_field = "clerk_id" if provider == "clerk" else "google_sub"
    user = await find(external_id)
    if user is not None:
        return user
    owner = await repository.get_by_email(email) if email else None
    if owner is not None and email_verified and is_open(owner) and getattr(owner, id_field) is None:
        link_verified_owner(owner)
        setattr(owner, id_field, external_id)
        await session.flush()
        return owner
    keep_email = email if email_verified and owner is None else None
    try:
        return await create_user(
            session,
            settings,
            **{id_field: external_id},
            email=keep_email,
            email_verified_at=utcnow() if keep_email else None,
            name=name,
            photo_url=photo_url,
        )
    except IntegrityError:
        # Another request or delivery created this identity first; use its row.
        user = await find(external_id)
        if user is None:
            raise
        return user


def is_open(user: User) -> bool:
    """Active and not erased: an account that may sign in and be linked to."""
    return user.is_active and user.erased_at is None


def link_verified_owner(user: User) -> None:
    """Someone proved (through Clerk or Google) that they own this account's address. If the account
    never proved it, whoever registered it may not be that owner (pre-account takeover): the password
    they chose and any session they hold stop working."""
    now = utcnow()
    if user.email_verified_at is None:
        user.password_hash = None
        user.sessions_revoked_at = now
        user.email_verified_at = now


def clerk_tombstone(clerk_id: str) -> str:
    return "deleted:" + hashlib.sha256(clerk_id.encode()).hexdigest()[:32]


async def require_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await get_active(session, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user
