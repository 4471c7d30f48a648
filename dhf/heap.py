"""Freed memory kept for the next call: no pages faulted in again every chunk.

Each compiled call of a big model returns fresh P-sized buffers (the MNIST autoencoder's
gradient or Gv: 2.8 M values, 11-22 MB), and the worker makes a few more beside it.
glibc's ``malloc`` serves such blocks with ``mmap`` and gives them back with ``munmap``
(or trims them off the heap) when freed, so the next call's buffers are new pages that
the kernel faults in and zeroes again: for the autoencoder's 16-row chunks, 5 000 faults
and about as much system time as compute per chunk, and under JAX, whose compute thread
allocates from an arena of its own, an erratic share of it.

:func:`keep_freed_memory` tells glibc (``mallopt``) to keep freed memory in one arena
for reuse: blocks up to 32 MB come from the heap, which is never trimmed, and every
thread allocates from the main arena.  A process's peak memory is unchanged; what it
holds after a peak stays held.  It must run before JAX starts its CPU client (whose
threads would otherwise take arenas of their own).  Elsewhere than glibc it does
nothing.  Measured in ``docs/benchmarks.md`` ("Memory kept for reuse").
"""
from __future__ import annotations

import ctypes
import sys

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: glibc's largest ``M_MMAP_THRESHOLD`` on 64-bit systems (``HEAP_MAX_SIZE / 2``).
MMAP_THRESHOLD = 32 << 20
#: Never trim the heap (the largest value ``mallopt`` takes).
TRIM_THRESHOLD = 2 ** 31 - 1


def keep_freed_memory() -> bool:
    """Keep freed memory for reuse (module docstring); returns whether glibc took all
    three settings (False on other C libraries and systems)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (M_ARENA_MAX, 1))
    return all([mallopt(option, value) == 1 for option, value in settings])
