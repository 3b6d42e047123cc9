from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.dependencies import ContainerDep
from app.errors import NotFound
from app.services import files

router = APIRouter(tags=["files"])


@router.get("/files/{key:path}", include_in_schema=False)
async def signed_file(
    key: str,
    container: ContainerDep,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(max_length=128)],
) -> Response:
    """Local storage's downloads: the URL's HMAC and expiry are the only authorisation."""
    found = await files.read_signed(container, key, expires, signature)
    if found is None:
        raise NotFound("This link is invalid or has expired.")
    data, content_type = found
    return Response(
        data,
        media_type=content_type,
        headers={"Cache-Control": "private, max-age=300", "Content-Disposition": "inline"},
    )
