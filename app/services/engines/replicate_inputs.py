"""Input images for Replicate: a model fetches its inputs itself, so it needs a URL it can reach. Our
storage's URL does when it is public https (S3, or a server behind a public https PUBLIC_BASE_URL);
otherwise (the default local storage on 127.0.0.1) the bytes go up through Replicate's Files API and the
model gets that file's URL, which Replicate resolves on its side."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from app.container import Container
from app.integrations.images.base import IMAGE_EXTENSIONS, FileClient, sniff_image_type
from app.services.engines.base import JobWork

# How long a storage URL handed to Replicate stays valid.
URL_TTL_SECONDS = 3600
_PRIVATE_SUFFIXES = (".local", ".localhost", ".internal", ".lan", ".home.arpa")


def is_public_https(url: str) -> bool:
    """Whether a URL is https on a host the internet can reach (not loopback, private or link-local)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host or host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host  # a dotted DNS name; a bare name resolves only inside a network
    return address.is_global


async def input_url(ctx: Container, client: FileClient, work: JobWork) -> str:
    """A URL Replicate can read the job's input image from."""
    if work.input_key is None:
        data = await work.input(ctx)  # raises input_missing
    else:
        url = await ctx.storage.url(work.input_key, URL_TTL_SECONDS)
        if is_public_https(url):
            return url
        data = await work.input(ctx)
    content_type = sniff_image_type(data) or "application/octet-stream"
    uploaded = await client.upload_file(
        data,
        filename=f"input-{work.job_id.hex}.{IMAGE_EXTENSIONS.get(content_type, 'bin')}",
        content_type=content_type,
        metadata={"job_id": str(work.job_id)},
    )
    return uploaded.url
