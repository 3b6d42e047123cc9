from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.db.base import utcnow
from app.db.session import release_connection
from app.dependencies import (
    CallerDep,
    ContainerDep,
    CurrentUser,
    DatabaseDep,
    PrincipalDep,
    SessionDep,
)
from app.errors import Forbidden
from app.models import CreditLedgerEntry, User
from app.schemas.admin import AuditLogOut, AuditLogPageOut
from app.schemas.errors import error_responses
from app.schemas.users import AccountExportOut, ApiKeyOut, CreditsOut, LedgerEntryOut, UserOut, UserUpdateIn
from app.services import audit as audit_service
from app.services import credits as credits_service
from app.services import erasure
from app.services import users as users_service
from app.services.auth import InvalidToken

router = APIRouter(prefix="/users", tags=["users"])


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        username=user.username,
        photo_url=user.photo_url,
        email_verified=user.email_verified_at is not None,
        plan=user.plan,
        role=user.role,
        created_at=user.created_at,
    )


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> UserOut:
    return user_out(user)


@router.patch("/me", response_model=UserOut, responses=error_responses(409))
async def update_me(body: UserUpdateIn, user: CurrentUser, session: SessionDep) -> UserOut:
    changes = body.model_dump(exclude_unset=True, mode="json")
    return user_out(await users_service.update_profile(session, user, changes))


@router.delete("/me", status_code=204)
async def erase_me(user: CurrentUser, session: SessionDep, container: ContainerDep) -> Response:
    """Erase the account: running trainings are cancelled (credits released); personal data, credentials
    and stored images go; ledger and payments stay, anonymous."""
    await release_connection(session)  # the erasure is a unit of work of its own, retried on a deadlock
    await erasure.erase_account_alone(container, user.id)
    return Response(status_code=204)


@router.get("/me/export", response_model=AccountExportOut)
async def export_me(user: CurrentUser, session: SessionDep) -> AccountExportOut:
    exported = await users_service.export(session, user)
    return AccountExportOut(
        user=user_out(user).model_dump(mode="json")
        | {"clerk_id": user.clerk_id, "google_sub": user.google_sub, "last_login_at": user.last_login_at},
        credits={
            "balance": float(credits_service.to_credits(exported.balance)),
            "reserved": float(credits_service.to_credits(exported.reserved)),
        },
        ledger=[ledger_entry_out(entry) for entry in exported.ledger],
        api_keys=[ApiKeyOut.model_validate(key) for key in exported.api_keys],
        emails=[
            {
                "to": email.recipient,
                "subject": email.subject,
                "status": email.status,
                "created_at": email.created_at,
            }
            for email in exported.emails
        ],
        design_systems=[
            {
                "id": str(system.id),
                "name": system.name,
                "description": system.description,
                "colors": system.colors,
                "typography": system.typography,
                "spacing": system.spacing,
                "radii": system.radii,
                "shadows": system.shadows,
                "version": system.version,
                "is_public": system.is_public,
                "created_at": system.created_at,
            }
            for system in exported.design_systems
        ],
        exported_at=utcnow(),
    )


@router.get("/credits", response_model=CreditsOut)
async def my_credits(caller: CallerDep, database: DatabaseDep) -> CreditsOut:
    standing = await credits_service.plan_and_balance(database, caller.user_id)
    if standing is None:  # erased by another process since this credential was last verified here
        raise InvalidToken()
    plan, balance = standing
    return CreditsOut(credits=credits_service.to_credits(balance), plan=plan)


@router.post("/createupdateuser", response_model=UserOut, responses=error_responses(403))
async def create_update_clerk_user(principal: PrincipalDep) -> UserOut:
    """For Clerk frontends: make sure the signed-in Clerk user exists here. Verifying the Clerk token
    already created it on first use, so this answers the account."""
    if principal.via != "clerk":
        raise Forbidden("This endpoint takes a Clerk session token.")
    return user_out(principal.user)


def ledger_entry_out(entry: CreditLedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(
        id=entry.id,
        amount=credits_service.to_credits(entry.amount),
        reason=entry.reason,
        reference=entry.reference,
        balance_after=credits_service.to_credits(entry.balance_after),
        created_at=entry.created_at,
    )


@router.get("/me/activity", response_model=AuditLogPageOut, responses=error_responses(400))
async def my_activity(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditLogPageOut:
    """Your account's security events (sign-ins, failed sign-ins, password resets, API keys, role and
    ban changes, credit adjustments, exports), newest first."""
    page = await audit_service.activity(session, user.id, limit, cursor)
    return AuditLogPageOut(
        items=[AuditLogOut.model_validate(row) for row in page.entries], next_cursor=page.next_cursor
    )
