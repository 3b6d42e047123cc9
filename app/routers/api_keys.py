from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from app.dependencies import PrincipalDep, SessionDep
from app.errors import Forbidden
from app.schemas.errors import error_responses
from app.schemas.users import ApiKeyCreatedOut, ApiKeyIn, ApiKeyOut
from app.services import api_keys as api_keys_service

router = APIRouter(prefix="/api-keys", tags=["api keys"])


@router.post("", status_code=201, response_model=ApiKeyCreatedOut, responses=error_responses(403))
async def create_api_key(body: ApiKeyIn, principal: PrincipalDep, session: SessionDep) -> ApiKeyCreatedOut:
    # A leaked key must not be able to mint more keys.
    if principal.via == "api_key":
        raise Forbidden("API keys are created from a signed-in session, not with another API key.")
    created = await api_keys_service.create(session, principal.user, body.name)
    return ApiKeyCreatedOut(**ApiKeyOut.model_validate(created.key).model_dump(), key=created.secret)


@router.get("", response_model=list[ApiKeyOut])
async def list_api_keys(principal: PrincipalDep, session: SessionDep) -> list[ApiKeyOut]:
    return [
        ApiKeyOut.model_validate(key) for key in await api_keys_service.list_keys(session, principal.user)
    ]


@router.delete("/{key_id}", status_code=204, responses=error_responses(404))
async def revoke_api_key(key_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> Response:
    await api_keys_service.revoke(session, principal.user, key_id)
    return Response(status_code=204)
