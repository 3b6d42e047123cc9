"""How many examples a property or fuzz test runs: its own count in CI, derandomized so every run sends
the same cases; FUZZ_EXAMPLES=<n> runs n instead and FUZZ_RANDOM=1 draws fresh random ones (by hand)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

RANDOM = bool(os.environ.get("FUZZ_RANDOM"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def fuzz(max_examples: int) -> Any:
    return hypothesis_settings(
        max_examples=EXAMPLES or max_examples,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        # The tests drive a whole app per example: slow, large and fixture-backed by design.
        suppress_health_check=list(HealthCheck),
    )
