"""A module whose import hangs, as a worker's stuck preload would (tests/test_compute.py)."""

import time

time.sleep(60)
