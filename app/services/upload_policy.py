"""Uploads promised before their bytes arrive: a signed, expiring upload policy (the shape of an S3
presigned POST) names the user, the upload id it will create and the largest file it takes; whoever
holds it may send the file once, without any other credential, before it expires. The bytes then go
through the same validation as every other upload (uploads.store), on local disk or S3 alike.

A stored upload is reachable through a stable file link, signed per upload id, that never expires: the
Hair Try-On SPA keeps it as "the photo" and sends it back as its input later."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.container import Container
from app.errors import Forbidden, NotFound
from app.models import Upload
from app.repositories.images import UploadRepository
from app.services import images as images_service
from app.services import uploads as uploads_service
from app.services import users as users_service

# How long a policy may be used: the SPA asks for one right before it uploads.
POLICY_TTL_SECONDS = 15 * 60


class PolicyRefused(Forbidden):
    code = "upload_policy_refused"
    default_detail = "Invalid according to Policy: the upload policy or its signature does not hold."


class PolicyExpired(PolicyRefused):
    default_detail = "Invalid according to Policy: Policy expired."


@dataclass(frozen=True)
class UploadPolicy:
    upload_id: uuid.UUID
    user_id: uuid.UUID
    max_bytes: int
    expires: int  # Unix seconds

    @property
    def key(self) -> str:
        """The object name the policy promises (what an S3 policy calls the key)."""
        return f"uploads/{self.upload_id}"


@dataclass(frozen=True)
class SignedPolicy:
    policy: UploadPolicy
    encoded: str  # the policy document, base64url JSON
    signature: str  # HMAC-SHA256 of `encoded`, hex


def _derived_key(ctx: Container, purpose: bytes) -> bytes:
    # A key of its own per purpose, derived from SECRET_KEY: a file link's signature can never pass for
    # a policy's, nor either for a token's or a download URL's.
    return hmac.new(ctx.settings.secret_key.get_secret_value().encode(), purpose, hashlib.sha256).digest()


def _sign(ctx: Container, purpose: bytes, message: bytes) -> str:
    return hmac.new(_derived_key(ctx, purpose), message, hashlib.sha256).hexdigest()


def issue(ctx: Container, user_id: uuid.UUID, now: float | None = None) -> SignedPolicy:
    """A policy for one new upload of this user, of at most UPLOAD_MAX_BYTES."""
    moment = int(now if now is not None else time.time())
    policy = UploadPolicy(uuid.uuid4(), user_id, ctx.settings.upload_max_bytes, moment + POLICY_TTL_SECONDS)
    document = {
        "upload_id": str(policy.upload_id),
        "user_id": str(policy.user_id),
        "max_bytes": policy.max_bytes,
        "expires": policy.expires,
    }
    encoded = base64.urlsafe_b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    return SignedPolicy(policy, encoded, _sign(ctx, b"pixforge-upload-policy", encoded.encode()))


def verify(ctx: Container, encoded: str, signature: str, now: float | None = None) -> UploadPolicy:
    """The policy, if its signature holds and it has not expired; PolicyRefused (403) otherwise."""
    expected = _sign(ctx, b"pixforge-upload-policy", encoded.encode())
    # Compared as bytes: compare_digest refuses non-ASCII str, which a client controls here.
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise PolicyRefused()
    try:
        document = json.loads(base64.urlsafe_b64decode(encoded.encode()))
        policy = UploadPolicy(
            uuid.UUID(document["upload_id"]),
            uuid.UUID(document["user_id"]),
            int(document["max_bytes"]),
            int(document["expires"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:  # signed by us, so never in practice
        raise PolicyRefused() from exc
    if policy.expires < (now if now is not None else time.time()):
        raise PolicyExpired()
    return policy


async def store(session: AsyncSession, ctx: Container, policy: UploadPolicy, data: bytes) -> Upload:
    """The file sent under a verified policy, validated and stored as the upload it promised: larger than
    the policy allows is 413, an account closed since is 403, a second file under the same policy 409."""
    if len(data) > policy.max_bytes:
        raise uploads_service.ImageTooLarge(f"The file is larger than {policy.max_bytes} bytes.")
    user = await users_service.get_active(session, policy.user_id)
    if user is None:
        raise PolicyRefused("Invalid according to Policy: the account it was issued to is closed.")
    stored = await uploads_service.store(session, ctx, user.id, data, upload_id=policy.upload_id)
    return stored.upload


def file_signature(ctx: Container, upload_id: uuid.UUID) -> str:
    """The signature of an upload's stable file link."""
    return _sign(ctx, b"pixforge-upload-file", upload_id.bytes)


def file_signature_holds(ctx: Container, upload_id: uuid.UUID, signature: str) -> bool:
    return hmac.compare_digest(file_signature(ctx, upload_id).encode(), signature.encode())


async def file_location(session: AsyncSession, ctx: Container, upload_id: uuid.UUID, signature: str) -> str:
    """Where the upload a file link names can be read now (an expiring storage URL); 404 for a bad
    signature or an upload that does not exist (yet, or any more)."""
    if not file_signature_holds(ctx, upload_id, signature):
        raise NotFound("This link is invalid.")
    upload = await UploadRepository(session).get(upload_id)
    if upload is None:
        raise NotFound("This file has not been uploaded, or was deleted.")
    return await images_service.url_for(ctx, upload.storage_key)
