"""A fake of the EU's VIES REST service (`GET {base}/ms/{countryCode}/vat/{vatNumber}`), on a respx router.

It answers 200 with VIES's body (`isValid`, `userError` VALID | INVALID | MS_UNAVAILABLE, `requestDate`,
`vatNumber`, `name`, `address`; "---" for what a member state does not disclose) for the numbers in
`registered`; a country in `unavailable` answers `MS_UNAVAILABLE` (its register did not respond);
`fail_with(status)` makes every call answer that HTTP status. `calls` lists the numbers asked, with
their prefix.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import respx

BASE_URL = "https://vies.fake.test/taxation_customs/vies/rest-api"


class FakeVies:
    def __init__(self, router: respx.MockRouter, base_url: str = BASE_URL) -> None:
        self.base_url = base_url
        self.registered: set[str] = set()
        self.unavailable: set[str] = set()
        self.calls: list[str] = []
        self._status: int | None = None
        router.get(url__regex=rf"^{base_url}/ms/(?P<country>[^/]+)/vat/(?P<number>[^/?]+)$").mock(
            side_effect=self._answer
        )

    def fail_with(self, status: int) -> None:
        self._status = status

    def _answer(self, request: httpx.Request, country: str, number: str) -> httpx.Response:
        self.calls.append(country + number)
        if self._status is not None:
            return httpx.Response(self._status, json={"actionSucceed": False, "errorWrappers": []})
        if country in self.unavailable:
            answer, valid = "MS_UNAVAILABLE", False
        else:
            valid = country + number in self.registered
            answer = "VALID" if valid else "INVALID"
        return httpx.Response(
            200,
            json={
                "isValid": valid,
                "requestDate": datetime.now(UTC).isoformat(),
                "userError": answer,
                "name": "ACME GMBH" if valid else "---",
                "address": "---",
                "requestIdentifier": "",
                "originalVatNumber": number,
                "vatNumber": number,
                "viesApproximate": {"name": "---", "street": "---", "postalCode": "---", "city": "---"},
            },
        )
