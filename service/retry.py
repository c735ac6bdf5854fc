"""How long a refused client is told to wait (`Retry-After`), written once for every refusal.

A 503 from a full service (load shedding, arriving uploads, the decoding budget, a deadline)
clears within a second as requests finish: 1 s. A service that is starting or draining, and a
full temporary disk, take longer: 5 s. Load balancers and the clients in bench/ and tests read
the header, so the figures are the same wherever they are sent from.
"""

from __future__ import annotations

BUSY_SECONDS = 1
"""The service is momentarily full: a place frees as soon as a request finishes."""
NOT_READY_SECONDS = 5
"""The service is loading its model or draining for shutdown."""
DISK_FULL_SECONDS = 5
"""The temporary directory has no room for an upload."""


def retry_after(seconds: int = BUSY_SECONDS) -> dict[str, str]:
    """The header that tells a client to come back in `seconds`."""
    return {"Retry-After": str(seconds)}


def retry_headers(status_code: int) -> dict[str, str] | None:
    """`Retry-After` on every 503 a route raises itself, as on the ones the middlewares send."""
    return retry_after() if status_code == 503 else None
