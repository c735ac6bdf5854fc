"""Large freed buffers go back to the operating system at once, not into glibc's free lists.

glibc serves an allocation from the heap, where a free keeps the memory for reuse, unless it is
larger than its mmap threshold; and it raises that threshold to the largest block freed so far, up
to 32 MB. Once one large image has been freed, every later decode's 16 MB pixel blocks come from
the heaps of the worker threads, which keep them: after eight 24-megapixel PNGs at once the
process stayed 470 MB above its rest. A fixed threshold (which also stops the raising) maps
each large block and unmaps it when freed: the process returned within 15 MB of its rest, at no
measurable cost for ordinary photos, whose buffers are smaller than it (docs/experiments.md,
"Decoding memory").
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
"""Larger than a 640x480 RGB image held by Pillow (1.2 MB), smaller than its 16 MB blocks."""
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def return_large_buffers_to_the_system(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process; False where the C library is not glibc
    (musl, macOS), which manage large blocks their own way."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    if not done:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused: large buffers stay in the heap")
    return done
