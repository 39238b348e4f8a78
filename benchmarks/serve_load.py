"""Load test of ``polyrec serve`` on loopback: requests/s, latency percentiles, error counts.

Bounded and local only: the script starts ``polyrec serve`` as a child process on 127.0.0.1 (a
free port), sends requests for ``--seconds`` (default 60) per scenario at a fixed concurrency
(``--concurrency`` client threads, one keep-alive ``http.client`` connection each, default 2:
the server answers on one event loop with one torch thread, so more connections add queueing
latency, not throughput), then stops the server it started and exits. Scenarios:

* ``lightgcn``: a LightGCN export of the embedded Retailrocket data (30,113 items); each request
  ``POST /recommend {"user": <random known user>, "k": 20}``.
* ``comirec-sa``: a ComiRec-SA export (SimRec Amazon Beauty when it is available, else a
  synthetic sequence log); half the requests name a user, half give a random history of 5–20
  items (the network embeds it on each request), k = 20.
* ``lightgcn+heavy``: as ``lightgcn``, while one more client sends heavy batches back to back
  (``/recommend/batch`` of 256 requests, k = 100, 1,500-item deny lists each).
  Goal: the light requests' p99 at most 2× that of the ``lightgcn`` scenario of the same run
  (the heavy batches run in the server's worker thread; beyond its bounded queue they get 429).
* ``lightgcn+bad``: as ``lightgcn`` with ``--bad-fraction`` (10 %) bad requests mixed in —
  malformed JSON, unknown fields, k = 0, k above the maximum, unknown item ids, oversize
  batches, wrong types. Every bad request must be answered 4xx, every good one 200, none 5xx,
  and ``/health`` must answer after the run.

Exports are made once (short training: the point is serving speed, not accuracy) and kept in
``--workdir`` (default ``runs/serve-load``). Results: ``benchmarks/results/serve-load.{json,md}``
with the date, machine and how busy the rest of the machine was. Goal (2 CPU cores, k = 20):
≥ 200 requests/s with p99 < 20 ms and zero 5xx; the client runs on the same cores, so the
figures are a lower bound of the server alone.

    python benchmarks/serve_load.py                     # 60 s per scenario
    nice -n 19 python benchmarks/serve_load.py --seconds 20 --concurrency 4   # more queueing
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "serve-load"
BEAUTY_SRC = Path("/work/shared/data/seq-simrec-beauty")
MAX_K = 100
MAX_BATCH = 256
HEAVY_DENY = 1500


# ------------------------------------------------------------------------------ exports
def _train(model: str, data: str, overrides: list[str], out: Path, config: Path | None) -> None:
    import polyrec

    print(f"[serve-load] training {model} on {data} → {out}", flush=True)
    t0 = time.perf_counter()
    polyrec.train(model, data, config=config, overrides=overrides, out=out)
    print(f"[serve-load] trained in {time.perf_counter() - t0:.0f} s", flush=True)


def lightgcn_export(work: Path, epochs: int) -> Path:
    import polyrec

    exp = work / "lightgcn-retailrocket"
    if not (exp / "manifest.json").exists():
        run = work / "run-lightgcn"
        if not (run / "best.safetensors").exists():
            _train(
                "lightgcn",
                "embedded:retailrocket",
                [f"train.epochs={epochs}", 'eval.protocols=["full"]'],
                run,
                None,
            )
        polyrec.export(run, exp)
    return exp


def comirec_data(work: Path) -> tuple[str, str]:
    """A dataset directory for ComiRec-SA: Beauty (imported once) or a synthetic log."""
    import polyrec

    for cand in (ROOT / "data" / "seq-simrec-beauty", work / "seq-simrec-beauty"):
        if (cand / "dataset.json").exists():
            return str(cand), "SimRec Amazon Beauty"
    if BEAUTY_SRC.exists():
        polyrec.import_data(BEAUTY_SRC, work / "seq-simrec-beauty", fmt="simrec")
        return str(work / "seq-simrec-beauty"), "SimRec Amazon Beauty"
    from polyrec.data.synthetic import synthetic_log

    synth = work / "synthetic-seq"
    if not (synth / "dataset.json").exists():
        synthetic_log(n_users=5000, n_items=12000, n_views=200_000, seed=0).save(synth)
    return str(synth), "synthetic log (5,000 users × 12,000 items)"


def comirec_export(work: Path, batches: int) -> tuple[Path, str]:
    import polyrec

    exp = work / "comirec-sa"
    data, label = comirec_data(work)
    if not (exp / "manifest.json").exists():
        run = work / "run-comirec-sa"
        if not (run / "best.safetensors").exists():
            config = ROOT / "configs" / "comirec-sa-beauty.toml"
            over = ["train.epochs=1", f"params.batches_per_epoch={batches}"]
            if "synthetic" in label:
                over += ['data.protocol="leave-one-out"', "data.n_negatives=0"]
            _train("comirec-sa", data, over, run, config if config.exists() else None)
        polyrec.export(run, exp)
    return exp, label


# ------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``polyrec serve`` in a child process on 127.0.0.1; stopped by :meth:`stop`."""

    def __init__(self, export: Path, threads: int, log: Path) -> None:
        self.port = free_port()
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable, "-m", "polyrec.cli", "serve", str(export),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-k", str(MAX_K), "--max-batch", str(MAX_BATCH), "--threads", str(threads),
        ]  # fmt: skip
        env = _bench.child_env(threads)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 120.0) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                if get_json(self.port, "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def get_json(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


# ------------------------------------------------------------------------------ requests
class Requests:
    """Random good (and bad) request bodies for one export."""

    def __init__(self, export: Path, k: int, seed: int) -> None:
        import pyarrow.parquet as pq

        manifest = json.loads((export / "manifest.json").read_text())
        self.kind = manifest["kind"]
        self.users = pq.read_table(export / "users.parquet").column("id").to_pylist()
        self.items = pq.read_table(export / "items.parquet").column("id").to_pylist()
        self.k = k
        self.seed = seed

    def good(self, rng: random.Random) -> tuple[str, bytes]:
        if self.kind == "interest" and rng.random() < 0.5:
            hist = rng.sample(self.items, rng.randint(5, 20))
            return "/recommend", json.dumps({"history": hist, "k": self.k}).encode()
        return "/recommend", json.dumps({"user": rng.choice(self.users), "k": self.k}).encode()

    def heavy(self, rng: random.Random) -> tuple[str, bytes]:
        """A batch of MAX_BATCH requests with k = MAX_K and HEAVY_DENY-item deny lists."""
        reqs = [
            {"user": rng.choice(self.users), "k": MAX_K,
             "deny": rng.sample(self.items, min(HEAVY_DENY, len(self.items)))}
            for _ in range(MAX_BATCH)
        ]  # fmt: skip
        return "/recommend/batch", json.dumps({"requests": reqs}).encode()

    def bad(self, rng: random.Random) -> tuple[str, str, bytes]:
        u = rng.choice(self.users)
        cases = [
            ("malformed-json", "/recommend", b'{"user": ' + json.dumps(u).encode() + b', "k": '),
            ("unknown-field", "/recommend", json.dumps({"user": u, "kk": 20}).encode()),
            ("k-zero", "/recommend", json.dumps({"user": u, "k": 0}).encode()),
            ("k-over-max", "/recommend", json.dumps({"user": u, "k": MAX_K + 1}).encode()),
            (
                "unknown-item",
                "/recommend",
                json.dumps(
                    {"user": u, "k": 20, "deny": [f"no-such-item-{rng.randint(0, 9)}"]}
                ).encode(),
            ),
            (
                "oversize-batch",
                "/recommend/batch",
                json.dumps({"requests": [{"user": u, "k": 5}] * (MAX_BATCH + 1)}).encode(),
            ),
            ("wrong-type", "/recommend", json.dumps({"user": [u], "k": "twenty"}).encode()),
        ]
        return rng.choice(cases)


def load(
    server: Server,
    reqs: Requests,
    seconds: float,
    concurrency: int,
    bad_fraction: float,
    warmup: float,
    heavy: bool = False,
) -> dict[str, Any]:
    """``concurrency`` threads send requests until the deadline; returns the statistics (with
    ``heavy``, one more thread sends heavy batches back to back, counted apart)."""
    port = server.port
    start = time.perf_counter() + warmup
    deadline = start + seconds
    lock = threading.Lock()
    lat: list[float] = []
    status: Counter[str] = Counter()
    bad_status: Counter[str] = Counter()
    bad_kinds: Counter[str] = Counter()
    failures: Counter[str] = Counter()

    def worker(wid: int) -> None:
        rng = random.Random(reqs.seed * 1000 + wid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        my_lat: list[float] = []
        my_status: Counter[str] = Counter()
        my_bad: Counter[str] = Counter()
        my_kinds: Counter[str] = Counter()
        my_fail: Counter[str] = Counter()
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            is_bad = rng.random() < bad_fraction
            if is_bad:
                kind, path, body = reqs.bad(rng)
            else:
                path, body = reqs.good(rng)
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                code = r.status
            except (OSError, http.client.HTTPException) as e:
                my_fail[type(e).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            t1 = time.perf_counter()
            if t0 < start:  # warm-up: not recorded
                continue
            if t1 > deadline:  # answered after the end: not counted (nor in the CPU time)
                break
            my_lat.append(t1 - t0)
            my_status[str(code)] += 1
            if is_bad:
                my_bad[str(code)] += 1
                my_kinds[kind] += 1
            elif code == 200 and not json.loads(payload).get("items"):
                my_fail["empty-answer"] += 1
        conn.close()
        with lock:
            lat.extend(my_lat)
            status.update(my_status)
            bad_status.update(my_bad)
            bad_kinds.update(my_kinds)
            failures.update(my_fail)

    heavy_lat: list[float] = []
    heavy_status: Counter[str] = Counter()

    def heavy_worker() -> None:
        rng = random.Random(reqs.seed * 7919)
        bodies = [reqs.heavy(rng) for _ in range(4)]  # built once: the client's own cost
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        k = 0
        while time.perf_counter() < deadline:
            path, body = bodies[k % len(bodies)]
            k += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            if t0 >= start:
                with lock:
                    heavy_lat.append(time.perf_counter() - t0)
                    heavy_status[str(r.status)] += 1
            if r.status == 429:
                time.sleep(float(r.getheader("Retry-After") or 1))
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    if heavy:
        threads.append(threading.Thread(target=heavy_worker))
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    b0, t_0 = _bench.cpu_jiffies()
    cpu0, own0 = server.cpu_seconds(), time.process_time()
    time.sleep(max(0.0, deadline - time.perf_counter()))
    cpu1, own1 = server.cpu_seconds(), time.process_time()
    b1, t_1 = _bench.cpu_jiffies()
    hz = os.sysconf("SC_CLK_TCK")
    # CPUs busy with other processes than this client and the server, on average
    others = ((b1 - b0) / hz - (cpu1 - cpu0) - (own1 - own0)) / seconds
    for t in threads:
        t.join()
    ms = sorted(x * 1000 for x in lat)

    def pct(p: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 2) if ms else None

    n = len(ms)
    n_bad = sum(bad_status.values())
    bad_4xx = sum(v for c, v in bad_status.items() if c.startswith("4"))
    good_200 = status.get("200", 0) - bad_status.get("200", 0)
    return {
        "requests": n,
        "requests_per_s": round(n / seconds, 1),
        "latency_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "max": round(ms[-1], 2) if ms else None,
            "mean": round(statistics.fmean(ms), 2) if ms else None,
        },
        "status": dict(sorted(status.items())),
        "5xx": sum(v for c, v in status.items() if c.startswith("5")),
        "good_requests": n - n_bad,
        "good_answered_200": good_200,
        "bad_requests": n_bad,
        "bad_answered_4xx": bad_4xx,
        "bad_kinds": dict(sorted(bad_kinds.items())),
        "client_failures": dict(failures),
        # server CPU per answered request: robust to other load on the machine (1000 / this =
        # requests/s one idle core could answer)
        "server_cpu_ms_per_request": round(1000 * (cpu1 - cpu0) / n, 3) if n else None,
        "machine_busy_fraction": round((b1 - b0) / (t_1 - t_0), 3) if t_1 > t_0 else None,
        "client_cpu_s_per_s": round((own1 - own0) / seconds, 2),
        "server_cpu_s_per_s": round((cpu1 - cpu0) / seconds, 2),
        "other_processes_cpus": round(max(0.0, others), 2),
        **(
            {
                "heavy": {
                    "requests": len(heavy_lat),
                    "status": dict(sorted(heavy_status.items())),
                    "latency_ms_p50": round(1000 * statistics.median(heavy_lat), 1)
                    if heavy_lat
                    else None,
                    "latency_ms_max": round(1000 * max(heavy_lat), 1) if heavy_lat else None,
                }
            }
            if heavy
            else {}
        ),
    }


# ------------------------------------------------------------------------------ report
def report(result: dict[str, Any]) -> _bench.Doc:
    s = result["settings"]
    doc = _bench.Doc("polyrec serve: load on loopback")
    doc.text(
        f"{s['seconds']} s per scenario · concurrency {s['concurrency']} · k = {s['k']} · "
        f"server threads {s['server_threads']}"
    )
    doc.table(["scenario", "export", "requests/s", "p50 ms", "p95 ms", "p99 ms",
               "server CPU ms/request", "5xx", "bad → 4xx", "health after",
               "goal (≥ 200/s, p99 < 20 ms, 0 × 5xx)"])  # fmt: skip
    for sc in result["scenarios"]:
        r = sc["result"]
        lat = r["latency_ms"]
        bad = f"{r['bad_answered_4xx']}/{r['bad_requests']}" if r["bad_requests"] else "–"
        doc.row(sc["name"], sc["export"], r["requests_per_s"], lat["p50"], lat["p95"],
                lat["p99"], r["server_cpu_ms_per_request"], r["5xx"], bad, sc["health_after"],
                "met" if sc["goal_met"] else "not met")  # fmt: skip
    for sc in result["scenarios"]:
        h = sc["result"].get("heavy")
        if h:
            doc.text(
                f"{sc['name']}: light requests' p99 {sc['result']['latency_ms']['p99']} ms = "
                f"{sc['result'].get('light_p99_vs_without_heavy')}× the run without heavy "
                f"batches (goal ≤ 2×); heavy batches ({MAX_BATCH} requests, k = {MAX_K}, "
                f"{HEAVY_DENY}-item deny lists): {h['requests']} answered, status "
                f"{h['status']}, median {h['latency_ms_p50']} ms, max {h['latency_ms_max']} ms."
            )
    doc.text("CPU use during each scenario (CPUs busy on average: server / load client / "
             "other processes on the machine): " + ", ".join(
                 f"{sc['name']} {sc['result']['server_cpu_s_per_s']} / "
                 f"{sc['result']['client_cpu_s_per_s']} / {sc['result']['other_processes_cpus']}"
                 for sc in result["scenarios"]))  # fmt: skip
    doc.text(
        f"Run at niceness {result['niceness']}; load average at the start "
        f"{' '.join(result['loadavg_at_start']) or 'unknown'} (other processes on the machine).",
        result["caveat"],
    )
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per scenario")
    ap.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first")
    ap.add_argument("--concurrency", type=int, default=2, help="client threads (connections)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--bad-fraction", type=float, default=0.1)
    ap.add_argument(
        "--server-threads", type=int, default=1, help="torch/faiss threads of the server"
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "serve-load")
    ap.add_argument("--lightgcn-epochs", type=int, default=5)
    ap.add_argument("--comirec-batches", type=int, default=300)
    ap.add_argument(
        "--scenarios",
        default="lightgcn,lightgcn+heavy,comirec-sa,lightgcn+bad",
        help="comma-separated subset",
    )
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--no-write", action="store_true", help="print the results, write no files")
    args = ap.parse_args()
    if args.seconds <= 0 or args.concurrency < 1:
        ap.error("--seconds must be > 0 and --concurrency >= 1")
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    args.workdir.mkdir(parents=True, exist_ok=True)
    exports: dict[str, tuple[Path, str]] = {}
    if any(s.startswith("lightgcn") for s in wanted):
        exports["lightgcn"] = (
            lightgcn_export(args.workdir, args.lightgcn_epochs),
            "LightGCN, embedded Retailrocket",
        )
    if "comirec-sa" in wanted:
        exp, label = comirec_export(args.workdir, args.comirec_batches)
        exports["comirec-sa"] = (exp, f"ComiRec-SA, {label}")
    scenarios = []
    for name in wanted:
        base = name.split("+")[0]
        heavy = name.endswith("+heavy")
        if base not in exports:
            ap.error(f"unknown scenario {name!r}")
        export, label = exports[base]
        bad = args.bad_fraction if name.endswith("+bad") else 0.0
        server = Server(export, args.server_threads, args.workdir / f"server-{base}.log")
        try:
            server.wait_ready()
            manifest = json.loads((export / "manifest.json").read_text())
            label += f", {manifest['dataset']['n_items']:,} items"
            print(f"[serve-load] {name}: {args.seconds:.0f} s at concurrency {args.concurrency}",
                  flush=True)  # fmt: skip
            reqs = Requests(export, args.k, seed=len(scenarios) + 1)
            res = load(server, reqs, args.seconds, args.concurrency, bad, args.warmup, heavy)
            code, health = get_json(server.port, "/health")
            alive = server.proc.poll() is None and code == 200 and health.get("status") == "ok"
        finally:
            server.stop()
        lat = res["latency_ms"]
        speed_ok = res["requests_per_s"] >= 200 and lat["p99"] is not None and lat["p99"] < 20
        if heavy:  # light requests beside heavy batches: p99 at most 2× the run without them
            without = next((x["result"] for x in scenarios if x["name"] == base), None)
            ref = without["latency_ms"]["p99"] if without else None
            ratio = round(lat["p99"] / ref, 2) if ref and lat["p99"] is not None else None
            res["light_p99_vs_without_heavy"] = ratio
            speed_ok = (
                ratio is not None
                and ratio <= 2.0
                and not any(c.startswith("5") for c in res["heavy"]["status"])
            )
        goal = (
            speed_ok
            and res["5xx"] == 0
            and res["good_answered_200"] == res["good_requests"]
            and res["bad_answered_4xx"] == res["bad_requests"]
            and alive
        )
        print(f"[serve-load] {name}: {json.dumps(res)}", flush=True)
        scenarios.append(
            {"name": name, "export": label, "result": res, "health_after": "ok" if alive else "DOWN",
             "goal_met": goal, "bad_fraction": bad}
        )  # fmt: skip
    result = {
        "name": NAME,
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "k": args.k,
            "bad_fraction": args.bad_fraction,
            "server_threads": args.server_threads,
            "max_k": MAX_K,
            "max_batch": MAX_BATCH,
            "client": "http.client, one keep-alive connection per thread",
        },
        "niceness": os.nice(0),
        "loadavg_at_start": loadavg,
        "scenarios": scenarios,
        "caveat": (
            "Client and server share the machine's cores, and other work may have run on the "
            "machine meanwhile (see CPU use): the figures are a lower bound for the server "
            "on 2 idle cores."
        ),
        "command": ("nice -n 19 " if os.nice(0) >= 19 else "")
        + "python benchmarks/serve_load.py "
        + " ".join(sys.argv[1:]),
    }
    _bench.emit(result, report(result), args.out_dir, args.no_write, "serve-load")
    sys.exit(0 if all(sc["goal_met"] for sc in scenarios) else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
