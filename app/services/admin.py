"""Administrators' actions on accounts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.base import utcnow
from app.errors import Conflict, NotFound
from app.models import AuditAction, LedgerReason, Style, User, UserRole
from app.repositories.admin import AdminStyleRepository, AdminUserRepository
from app.repositories.auth_tokens import RefreshTokenRepository
from app.repositories.credits import CreditRepository
from app.repositories.users import UserRepository
from app.security import PasswordHasher
from app.services import audit, credits
from app.services import users as users_service
from app.services.pagination import decode_cursor, encode_cursor

log = structlog.get_logger("app.admin")

MIN_PASSWORD_LENGTH = 8


async def adjust_credits(
    session: AsyncSession, admin: User, user_id: uuid.UUID, amount: int, note: str, key: str
) -> credits.Movement:
    """Add (amount > 0) or take (amount < 0) credits, recorded as an admin adjustment with who and why.
    Taking more than the balance is refused (402): the balance never goes negative."""
    target = await users_service.require_user(session, user_id)
    reference = f"admin:{admin.id}: {note}"[:255]
    if amount > 0:
        movement = await credits.grant(
            session, target.id, amount, LedgerReason.admin_adjustment, key, reference
        )
    else:
        movement = await credits.debit(
            session, target.id, -amount, LedgerReason.admin_adjustment, key, reference
        )
    await audit.record(
        session,
        action=AuditAction.credits_adjusted,
        actor_id=admin.id,
        subject_id=target.id,
        details={"amount": amount, "note": note, "ledger_entry_id": movement.entry.id},
    )
    log.info("admin.credits_adjusted", admin_id=str(admin.id), user_id=str(target.id), amount=amount)
    return movement


class UnknownRole(ValueError):
    pass


async def set_role(
    session: AsyncSession, email: str, role: str, *, actor_id: uuid.UUID | None = None, via: str = "cli"
) -> User:
    """Give an existing account a role (user or admin); the change is audited. LookupError: no account."""
    if role not in {member.value for member in UserRole}:
        raise UnknownRole(f"role must be one of: {', '.join(member.value for member in UserRole)}")
    user = await UserRepository(session).get_by_email(users_service.normalize_email(email))
    if user is None or user.erased_at is not None:
        raise LookupError(f"no account with the email {email}")
    if user.role != role:
        previous, user.role = user.role, role
        await audit.record(
            session,
            action=AuditAction.role_changed,
            actor_id=actor_id,
            subject_id=user.id,
            details={"from": previous, "to": role, "via": via},
        )
    return user


async def create_admin(
    session: AsyncSession, settings: Settings, passwords: PasswordHasher, email: str, password: str | None
) -> tuple[User, bool]:
    """Make the account of `email` an administrator: promote it if it exists, else create it, verified,
    with `password` (ValueError when none is given). Returns the user and whether it was created."""
    normalized = users_service.normalize_email(email)
    existing = await UserRepository(session).get_by_email(normalized)
    if existing is not None:
        return await set_role(session, normalized, UserRole.admin.value), False
    if not password:
        raise ValueError("a new account needs a password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = await users_service.create_user(
        session,
        settings,
        email=normalized,
        password_hash=await passwords.hash(password),
        email_verified_at=utcnow(),
        role=UserRole.admin.value,
    )
    await audit.record(
        session,
        action=AuditAction.role_changed,
        subject_id=user.id,
        details={"from": None, "to": UserRole.admin.value, "via": "cli", "created": True},
    )
    return user, True


# --- accounts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    user: User
    balance: int
    reserved: int


@dataclass(frozen=True)
class UserPage:
    rows: list[UserRow]
    next_cursor: str | None


async def list_users(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    email: str | None = None,
    plan: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> UserPage:
    found = await AdminUserRepository(session).page(
        limit=limit + 1,
        after=decode_cursor(cursor) if cursor else None,
        email=email,
        plan=plan,
        since=since,
        until=until,
    )
    more = len(found) > limit
    rows = [UserRow(user, balance or 0, reserved or 0) for user, balance, reserved in found[:limit]]
    last = rows[-1].user if more else None
    return UserPage(rows, encode_cursor(last.created_at, last.id) if last else None)


async def user_row(session: AsyncSession, user: User) -> UserRow:
    account = await CreditRepository(session).get_by_user(user.id)
    return UserRow(user, account.balance if account else 0, account.reserved if account else 0)


class CannotBanYourself(Conflict):
    code = "cannot_ban_yourself"
    default_detail = "An administrator cannot ban their own account."


async def _lock_account(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await UserRepository(session).lock(user_id)
    if user is None or user.erased_at is not None:
        raise NotFound("No such user.")
    return user


async def ban(session: AsyncSession, admin: User, user_id: uuid.UUID, reason: str | None) -> User:
    """The account stops working at once: every access token (header or cookie) issued until now is
    refused, its refresh tokens are revoked, its API keys are refused while it is banned (they resolve
    to an inactive account), and it cannot sign in. Banning a banned account changes nothing."""
    if user_id == admin.id:
        raise CannotBanYourself()
    user = await _lock_account(session, user_id)
    if not user.is_active:
        return user
    now = utcnow()
    user.is_active = False
    user.sessions_revoked_at = now
    await RefreshTokenRepository(session).revoke_all_for_user(user.id, now)
    await audit.record(
        session,
        action=AuditAction.user_banned,
        actor_id=admin.id,
        subject_id=user.id,
        details={"reason": reason} if reason else {},
    )
    log.info("admin.user_banned", admin_id=str(admin.id), user_id=str(user.id))
    return user


async def unban(session: AsyncSession, admin: User, user_id: uuid.UUID) -> User:
    """The account may sign in again (its old sessions stay ended)."""
    user = await _lock_account(session, user_id)
    if user.is_active:
        return user
    user.is_active = True
    await audit.record(session, action=AuditAction.user_unbanned, actor_id=admin.id, subject_id=user.id)
    log.info("admin.user_unbanned", admin_id=str(admin.id), user_id=str(user.id))
    return user


# --- the hairstyle catalogue ---------------------------------------------------------------------


class StyleNameTaken(Conflict):
    code = "style_name_taken"
    default_detail = "Another style already has this name."


async def list_styles(session: AsyncSession) -> list[Style]:
    return await AdminStyleRepository(session).list_all()


async def _style(session: AsyncSession, style_id: uuid.UUID) -> Style:
    style = await AdminStyleRepository(session).get(style_id)
    if style is None:
        raise NotFound("No such style.")
    return style


async def create_style(session: AsyncSession, admin: User, fields: dict[str, Any]) -> Style:
    repository = AdminStyleRepository(session)
    if await repository.name_taken(fields["name"]):
        raise StyleNameTaken()
    try:
        async with session.begin_nested():
            style = await repository.add(Style(**fields))
    except IntegrityError as exc:  # created concurrently under the same name
        raise StyleNameTaken() from exc
    await audit.record(
        session, action=AuditAction.style_created, actor_id=admin.id, details={"style_id": style.id}
    )
    return style


async def update_style(
    session: AsyncSession, admin: User, style_id: uuid.UUID, changes: dict[str, Any]
) -> Style:
    style = await _style(session, style_id)
    repository = AdminStyleRepository(session)
    if "name" in changes and await repository.name_taken(changes["name"], by_other_than=style.id):
        raise StyleNameTaken()
    for name, value in changes.items():
        setattr(style, name, value)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise StyleNameTaken() from exc
    await audit.record(
        session,
        action=AuditAction.style_updated,
        actor_id=admin.id,
        details={"style_id": style.id, "fields": ",".join(sorted(changes))},
    )
    return style


async def delete_style(session: AsyncSession, admin: User, style_id: uuid.UUID) -> None:
    """Jobs keep the prompt they ran with, so a style can go; to hide it only, set is_active false."""
    style = await _style(session, style_id)
    await AdminStyleRepository(session).remove(style)
    await audit.record(
        session,
        action=AuditAction.style_deleted,
        actor_id=admin.id,
        details={"style_id": style_id, "name": style.name},
    )
