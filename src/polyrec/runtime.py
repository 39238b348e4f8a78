"""Process-level tuning applied once when a run starts."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@functools.cache
def tune_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS.

    Training allocates and frees tensors of several MB every batch (a 32k × 64 embedding table
    is 8 MB). With glibc's defaults each such block is ``mmap``-ed and page-faulted anew; on the
    2-core machines used here a dense add over 8 MB took 8 ms instead of 0.1 ms. Raising the
    mmap threshold (to glibc's maximum, 32 MiB) and the trim threshold (1 GiB) keeps the pages.
    Only on Linux with glibc; set ``POLYREC_NO_MALLOPT=1`` to skip. Returns whether it applied.
    """
    if os.environ.get("POLYREC_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        ok &= libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    return bool(ok)
