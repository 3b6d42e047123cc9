"""Upload policies (app/services/upload_policy.py): what a signed, expiring policy lets through, without a
database. The HTTP side (the S3-style POST and its XML refusals) is in tests/routers/compat/."""

from __future__ import annotations

import base64
import json
import time
import uuid
from types import SimpleNamespace
from typing import cast

import pytest

from app.container import Container
from app.services import upload_policy
from tests.conftest import make_settings


def _ctx(secret: str = "s" * 40) -> Container:
    settings = make_settings(secret_key=secret, upload_max_bytes=50_000)
    return cast(Container, SimpleNamespace(settings=settings))


def test_a_policy_names_its_user_upload_and_limit_and_verifies_until_it_expires() -> None:
    ctx, user_id, now = _ctx(), uuid.uuid4(), time.time()
    signed = upload_policy.issue(ctx, user_id, now=now)

    policy = upload_policy.verify(ctx, signed.encoded, signed.signature, now=now + 60)

    assert policy == signed.policy
    assert (policy.user_id, policy.max_bytes, policy.key) == (user_id, 50_000, f"uploads/{policy.upload_id}")
    with pytest.raises(upload_policy.PolicyExpired):
        upload_policy.verify(
            ctx, signed.encoded, signed.signature, now=now + upload_policy.POLICY_TTL_SECONDS + 1
        )


def test_a_changed_document_or_another_servers_signature_is_refused() -> None:
    ctx = _ctx()
    signed = upload_policy.issue(ctx, uuid.uuid4())
    document = json.loads(base64.urlsafe_b64decode(signed.encoded))
    bigger = {**document, "max_bytes": 10**9}
    forged = base64.urlsafe_b64encode(json.dumps(bigger, separators=(",", ":")).encode()).decode()
    elsewhere = upload_policy.issue(_ctx("t" * 40), uuid.uuid4())

    for encoded, signature in [
        (forged, signed.signature),
        (elsewhere.encoded, elsewhere.signature),
        (signed.encoded, "é" + signed.signature[1:]),  # not even ASCII
    ]:
        with pytest.raises(upload_policy.PolicyRefused):
            upload_policy.verify(ctx, encoded, signature)


def test_a_file_link_signature_belongs_to_one_upload_and_is_no_policy_signature() -> None:
    ctx = _ctx()
    signed = upload_policy.issue(ctx, uuid.uuid4())
    upload_id = signed.policy.upload_id
    signature = upload_policy.file_signature(ctx, upload_id)

    assert upload_policy.file_signature_holds(ctx, upload_id, signature)
    assert not upload_policy.file_signature_holds(ctx, uuid.uuid4(), signature)
    assert not upload_policy.file_signature_holds(_ctx("t" * 40), upload_id, signature)
    assert not upload_policy.file_signature_holds(ctx, upload_id, signed.signature)
