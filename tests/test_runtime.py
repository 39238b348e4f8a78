"""Thread defaults from the CPUs the process may use (issue 25, item 4)."""

from __future__ import annotations

import os

from polyrec import runtime


def test_available_cpus_follows_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: None)
    assert runtime.available_cpus() == 4
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: 1.5)  # 150 ms per 100 ms period
    assert runtime.available_cpus() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(runtime, "_cgroup_quota", lambda: 8.0)
    assert runtime.available_cpus() == 1


def test_default_threads_never_exceed_torch_or_the_cpus(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 1)
    assert runtime.default_threads() == 1
    monkeypatch.setattr(runtime, "available_cpus", lambda: 10_000)
    assert runtime.default_threads() == runtime._torch_default_threads()
