"""One check, shared by every binding's tests: a call releases the GIL while it works.

A worker thread makes the call while this thread keeps stamping the clock in Python. Were the
GIL held during the call, this thread could not run and its stamps would show one gap as long
as the call; released, the longest gap stays a small fraction of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def assert_releases_gil(call: Callable[[], object]) -> None:
    span: list[float] = []

    def worker() -> None:
        start = time.perf_counter()
        call()
        span.extend([start, time.perf_counter()])

    thread = threading.Thread(target=worker)
    stamps: list[float] = []
    thread.start()
    while thread.is_alive():
        stamps.append(time.perf_counter())
    thread.join()
    assert len(span) == 2, "the call raised in the worker thread"
    start, end = span
    inside = [start] + [s for s in stamps if start < s < end] + [end]
    longest_gap = max(b - a for a, b in zip(inside, inside[1:], strict=False))
    assert end - start > 0.05, "the call was too short to tell"
    assert longest_gap < (end - start) / 3, (
        f"Python stalled {longest_gap:.3f}s of a {end - start:.3f}s call: the GIL was held"
    )
