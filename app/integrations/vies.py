"""The EU's VIES service, asked whether a VAT number is registered (its REST API:
`GET {base}/ms/{country}/vat/{number}` answers `{"isValid": bool, "userError": "VALID" | "INVALID" |
"MS_UNAVAILABLE" | ..., ...}`).

We speak REST with our shared HTTP client rather than python-stdnum's `check_vies`, which needs a SOAP
library and a fixed WSDL address: here the base URL is a setting (a proxy, a fake in tests) and the call
is async with its own timeout. VIES queries each member state's register live and often says it cannot
answer (`MS_UNAVAILABLE`, `TIMEOUT`, concurrency limits): that is `VatCheckUnavailable`, never "invalid".
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

import httpx
import structlog

log = structlog.get_logger("app.integrations.vies")

# VIES's answers that a number is not registered (or is no number at all).
_INVALID_ANSWERS = frozenset({"INVALID", "INVALID_INPUT"})


class VatCheckUnavailable(Exception):
    """VIES did not say: down, slow, rate-limited, or the member state's register did not answer."""


class VatNumberChecker(Protocol):
    async def is_registered(self, vat_number: str) -> bool:
        """Whether the compact EU VAT number (prefix included, "DE123456789") is registered; raises
        VatCheckUnavailable when the service cannot tell."""
        ...


class ViesClient:
    def __init__(self, http: httpx.AsyncClient, *, base_url: str, timeout_seconds: float) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds

    async def is_registered(self, vat_number: str) -> bool:
        country, number = vat_number[:2].upper(), vat_number[2:]
        url = f"{self._base_url}/ms/{quote(country, safe='')}/vat/{quote(number, safe='')}"
        try:
            response = await self._http.get(
                url, timeout=self._timeout, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise VatCheckUnavailable(f"VIES unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise VatCheckUnavailable(f"VIES answered HTTP {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise VatCheckUnavailable("VIES answered no JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("isValid"), bool):
            raise VatCheckUnavailable("VIES answered without isValid")
        answer = body.get("userError")
        if body["isValid"]:
            return True
        if answer is None or answer in _INVALID_ANSWERS:
            return False
        log.info("vies.no_answer", country=country, user_error=str(answer)[:64])
        raise VatCheckUnavailable(f"VIES could not check the number: {str(answer)[:64]}")
