"""The Pure Pic React client's API (Clerk bearer tokens, `{success, data, statusCode}` envelopes)."""

from fastapi import APIRouter

router = APIRouter(prefix="/purepic/api/v1", tags=["compat: Pure Pic"])
