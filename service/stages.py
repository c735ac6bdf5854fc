"""The one hook the pipeline calls around each of its stages (decode, detect, crop, infer).

Before a stage starts it checks the request's deadline (a request out of time stops between
stages); when the stage ends its duration goes into the stage latency histogram of /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from service.deadline import check_deadline
from service.metrics import STAGE_SECONDS


@contextmanager
def stage(name: str) -> Iterator[None]:
    check_deadline()
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage=name).observe(time.perf_counter() - start)
