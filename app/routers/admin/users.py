"""GET /admin/users (search, with balances), POST /admin/users/{id}/ban and /unban."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.dependencies import AdminUser, SessionDep
from app.schemas.admin import AdminUserOut, AdminUserPageOut, BanIn
from app.schemas.errors import error_responses
from app.services import admin as admin_service
from app.services import credits

router = APIRouter()


def admin_user_out(row: admin_service.UserRow) -> AdminUserOut:
    user = row.user
    return AdminUserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        plan=user.plan,
        role=user.role,
        banned=not user.is_active,
        email_verified=user.email_verified_at is not None,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        credits=credits.to_credits(row.balance),
        reserved=credits.to_credits(row.reserved),
    )


@router.get("/users", response_model=AdminUserPageOut, responses=error_responses(400))
async def list_users(
    session: SessionDep,
    email: Annotated[str | None, Query(max_length=320, description="part of the address")] = None,
    plan: Annotated[str | None, Query(max_length=32)] = None,
    created_from: Annotated[AwareDatetime | None, Query(description="inclusive, ISO 8601")] = None,
    created_to: Annotated[AwareDatetime | None, Query(description="exclusive, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AdminUserPageOut:
    """Accounts, newest first, with their balances. Pass `next_cursor` back as `cursor`."""
    page = await admin_service.list_users(
        session, limit=limit, cursor=cursor, email=email, plan=plan, since=created_from, until=created_to
    )
    return AdminUserPageOut(items=[admin_user_out(row) for row in page.rows], next_cursor=page.next_cursor)


@router.post("/users/{user_id}/ban", response_model=AdminUserOut, responses=error_responses(400, 404))
async def ban_user(
    user_id: uuid.UUID, admin: AdminUser, session: SessionDep, body: BanIn | None = None
) -> AdminUserOut:
    """The account's tokens, cookies and API keys stop working at once; it cannot sign in (409 for
    your own account)."""
    user = await admin_service.ban(session, admin, user_id, body.reason if body else None)
    return admin_user_out(await admin_service.user_row(session, user))


@router.post("/users/{user_id}/unban", response_model=AdminUserOut, responses=error_responses(404))
async def unban_user(user_id: uuid.UUID, admin: AdminUser, session: SessionDep) -> AdminUserOut:
    """The account may sign in again; sessions ended by the ban stay ended."""
    user = await admin_service.unban(session, admin, user_id)
    return admin_user_out(await admin_service.user_row(session, user))
