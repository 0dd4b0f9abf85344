"""glibc's malloc set for a stream of images: each cutout makes a few arrays of 1-3 MB (a 424 px
RGB cutout in float32 is 2.1 MB) that are freed a moment later. glibc hands blocks that size back to
the system on free (mmap, or a heap trimmed past its threshold) and faults them in again for the next
file, ~1,300 page faults a cutout: the reference reader spent about two thirds of its time there.
Kept in the process instead (below a threshold far above any one image's arrays), the same decode ran
2.5x faster (26,000 -> 66,000 gz1-sdss cutouts/min, 2 threads, 2-core Zen 5) and FITS cubes 1.3x
end to end, with the same peak memory (`galaxy classify`, 300 cubes of 424 px: 280 MB either way).
Numbers are untouched: only where memory comes from changes.

The `galaxy` program and bench.py set it at start; a program using the Python API can set it with
the environment variables glibc reads (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, or
GLIBC_TUNABLES' glibc.malloc.*), which are also left to win here where set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# blocks below this come from the process's heaps, which keep up to TRIM of free memory at their top
MMAP_THRESHOLD = 32 * 2**20  # (the most glibc takes on 64-bit systems)
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_allocator() -> bool:
    """Keep freed image-sized blocks in the process (glibc only; elsewhere, or where the environment
    already sets glibc's malloc, nothing is changed). Returns whether it was set."""
    if (not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt (musl has it)
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt does nothing; say so by returning False
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
