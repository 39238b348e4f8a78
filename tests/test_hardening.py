"""Hardening of run directories and checkpoints (issue 24, items 1–6): atomic claims, checksums,
resuming a run killed before its first checkpoint, stale temporaries, short messages, and
output folders created on demand."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys

import pytest
import torch

import polyrec
from cli_helpers import assert_user_error, run
from polyrec.errors import CheckpointError, DataError
from polyrec.fsutil import LOCK, claim_dir, release_dir, remove_temporaries, temporary_sibling
from polyrec.training.checkpoint import load_weights, save_weights

FAST = ["train.batch_size=256", "eval.ks=[10]", "data.n_negatives=20", "params.dim=16"]


@pytest.fixture
def live_pid():
    """The pid of another live process (a sleeping child)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------ 1. atomic claims
def test_a_run_directory_is_claimed_once(tmp_path, live_pid):
    lock = claim_dir(tmp_path / "a" / "run")  # parents created
    assert lock.read_text().split() == [str(__import__("os").getpid()), socket.gethostname()]
    with pytest.raises(DataError, match="in use by another polyrec process"):
        claim_dir(tmp_path / "a" / "run")  # this process's own live lock: taken
    release_dir(lock)
    assert not lock.exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / LOCK).write_text(f"{live_pid} {socket.gethostname()}\n")
    with pytest.raises(DataError, match=f"pid {live_pid}"):
        claim_dir(tmp_path / "b")
    # a killed process's lock is taken over
    (tmp_path / "b" / LOCK).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    lock = claim_dir(tmp_path / "b")
    assert lock.read_text().split()[0] == str(__import__("os").getpid())


def test_train_into_a_directory_held_by_a_live_run_writes_nothing(tmp_path, dataset_dir, live_pid):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(f"{live_pid} {socket.gethostname()}\n")
    r = run("train", "-m", "pop", "--data", dataset_dir, "--out", out)
    assert_user_error(r, "in use by another polyrec process")
    assert sorted(p.name for p in out.iterdir()) == [LOCK]


def test_a_finished_run_releases_its_lock_and_leaves_no_temporaries(tmp_path, dataset_dir):
    out = tmp_path / "run"
    polyrec.train("mf", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=out)
    names = {p.name for p in out.iterdir()}
    assert LOCK not in names and not [n for n in names if ".tmp" in n]
    assert {"config.toml", "metrics.json", "best.safetensors", "split.npz"} <= names


def test_temporary_names_are_unique_per_call(tmp_path):
    a, b = temporary_sibling(tmp_path / "x"), temporary_sibling(tmp_path / "x")
    assert a != b and a.name.startswith(".x.") and str(__import__("os").getpid()) in a.name


# ------------------------------------------------------------------ 2. checksums
def _flip_inside_a_tensor(path, n=64):
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    start = 8 + header_len
    for k in range(start, min(start + n, len(raw))):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_flipped_tensor_byte_is_found(tmp_path):
    m = torch.nn.Linear(8, 4)
    save_weights(tmp_path / "w.safetensors", m)
    load_weights(tmp_path / "w.safetensors", m)  # intact: loads
    _flip_inside_a_tensor(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"damaged.*checksum"):
        load_weights(tmp_path / "w.safetensors", m)


def test_a_damaged_checkpoint_stops_resume_and_evaluate_with_one_line(tmp_path, dataset_dir):
    out = tmp_path / "r"
    polyrec.train("mf", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=out)
    _flip_inside_a_tensor(out / "best.safetensors")
    assert_user_error(run("evaluate", out), "best.safetensors", "damaged")


# ------------------------------------------------------------------ 3. killed before a checkpoint
def test_resume_before_the_first_checkpoint_trains_from_the_start(tmp_path, dataset_dir):
    args = [*FAST, "train.epochs=3", "train.lr=0.01"]
    full = polyrec.train("mf", dataset_dir, overrides=args, out=tmp_path / "full")
    # a run killed during its first epoch: config, split and a stale lock, no checkpoint
    killed = tmp_path / "killed"
    polyrec.train("mf", dataset_dir, overrides=args, out=killed)
    for name in ("last.safetensors", "best.safetensors", "metrics.json"):
        (killed / name).unlink()
    (killed / LOCK).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    resumed = polyrec.train(resume=killed)
    assert resumed["test"]["metrics"] == full["test"]["metrics"]
    assert resumed["epochs_run"] == full["epochs_run"] == 3


def test_a_folder_with_only_a_stale_lock_counts_as_empty(tmp_path, dataset_dir):
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    res = polyrec.train("pop", dataset_dir, overrides=FAST[:-1], out=out)
    assert res["test"] is not None and not (out / LOCK).exists()


# ------------------------------------------------------------------ 4. stale temporaries
def test_resume_removes_temporaries_of_a_killed_write(tmp_path, dataset_dir):
    from test_trainer import Killer

    args = [*FAST, "train.epochs=4", "train.lr=0.01"]
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        polyrec.train("mf", dataset_dir, overrides=args, out=out, reporter=Killer(3))
    stale = temporary_sibling(out / "last.safetensors")
    stale.write_bytes(b"\0" * 4096)  # what a kill during a checkpoint write leaves
    polyrec.train(resume=out)
    assert not stale.exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert remove_temporaries(out) == []


# ------------------------------------------------------------------ 5. short messages
def test_a_garbled_header_gives_a_short_message(tmp_path, dataset_dir):
    out = tmp_path / "r"
    polyrec.train("mf", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=out)
    junk = json.dumps({"__metadata__": {"x": "y" * 30000}, "t": {"dtype": "F32"}}).encode()
    (out / "best.safetensors").write_bytes(struct.pack("<Q", len(junk)) + junk)
    r = run("evaluate", out)
    assert_user_error(r, "best.safetensors")
    assert len(r.output) < 600


# ------------------------------------------------------------------ 6. missing parents
def test_out_creates_missing_parent_folders(tmp_path, dataset_dir):
    r = run("train", "-m", "pop", "--data", dataset_dir, "--out", tmp_path / "runs" / "a" / "x")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "a" / "x" / "metrics.json").exists()
    (tmp_path / "file").write_text("")
    assert_user_error(
        run("train", "-m", "pop", "--data", dataset_dir, "--out", tmp_path / "file" / "x"),
        "is not a folder",
    )
