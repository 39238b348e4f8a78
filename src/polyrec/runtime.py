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


def available_cpus() -> int:
    """The CPUs this process may actually use: its affinity mask, capped by a cgroup (v2 or v1)
    CPU quota when one is set (containers, shared machines); at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup quota (``cpu.max`` or ``cpu.cfs_quota_us``), None if unlimited."""
    try:
        parts = open("/sys/fs/cgroup/cpu.max").read().split()  # noqa: SIM115 - tiny read
        if parts and parts[0] != "max":
            return float(parts[0]) / float(parts[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())  # noqa: SIM115
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())  # noqa: SIM115
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def default_threads() -> int:
    """Torch threads when ``train.threads`` is not set: the CPUs this process may use
    (:func:`available_cpus`), never more than torch's own default (physical cores)."""
    return max(1, min(available_cpus(), _torch_default_threads()))


@functools.cache
def _torch_default_threads() -> int:
    """Torch's thread count as first seen (before any run set its own)."""
    import torch

    return int(torch.get_num_threads())
