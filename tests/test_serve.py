"""polyrec serve: every endpoint, every bad request answered 4xx (never 5xx), the same top-k as
``polyrec recommend``, and a corrupt export that never starts."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings

import pytest
from typer.testing import CliRunner

import polyrec
from polyrec.cli import app as cli_app
from polyrec.errors import CheckpointError, ConfigError

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx in its test client
    from fastapi.testclient import TestClient

from polyrec.serve import create_app

FAST = ["train.batch_size=256", "eval.ks=[10]", "data.n_negatives=20", "params.dim=16"]
SA = [
    "params.max_len=8",
    "params.n_interests=2",
    "params.batches_per_epoch=2",
    "params.min_history=1",
]
MAX_K, MAX_BATCH = 50, 8


@pytest.fixture(scope="module")
def lgn_export(tmp_path_factory, dataset_dir):
    root = tmp_path_factory.mktemp("serve")
    polyrec.train("lightgcn", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=root / "run")
    polyrec.export(root / "run", root / "exp")
    return root


@pytest.fixture(scope="module")
def sa_export(tmp_path_factory, dataset_dir):
    root = tmp_path_factory.mktemp("serve-sa")
    polyrec.train(
        "comirec-sa", dataset_dir, overrides=[*FAST, *SA, "train.epochs=1"], out=root / "run"
    )
    polyrec.export(root / "run", root / "exp")
    return root


@pytest.fixture(scope="module")
def lgn(lgn_export):
    return TestClient(create_app(lgn_export / "exp", max_k=MAX_K, max_batch=MAX_BATCH))


@pytest.fixture(scope="module")
def sa(sa_export):
    return TestClient(create_app(sa_export / "exp", max_k=MAX_K, max_batch=MAX_BATCH))


def error_of(r, status: int | tuple[int, ...] = 422) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    return body["error"]


# ---------------------------------------------------------------------------- endpoints
def test_health_and_model(lgn):
    assert lgn.get("/health").json() == {
        "status": "ok",
        "model": "lightgcn",
        "items": 150,
        "users": 120,
    }
    info = lgn.get("/model").json()
    assert info["name"] == "lightgcn" and info["kind"] == "embedding"
    assert info["dataset"]["n_items"] == 150 and info["dataset"]["target"] == "buy"
    assert "ndcg@10" in info["metrics"]["test"]["metrics"]["full"]
    assert info["protocol"]["split"]["name"] == "leave-one-out"
    assert info["limits"] == {"max_k": MAX_K, "max_batch": MAX_BATCH, "heavy_work": 4096,
                              "heavy_workers": 1, "heavy_queue": 8}  # fmt: skip
    assert info["index"]["type"] == "flat" and info["search"] in ("faiss", "torch")


def test_openapi_docs(lgn):
    assert lgn.get("/docs").status_code == 200
    paths = lgn.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/health", "/model", "/recommend", "/recommend/batch", "/similar-items"}


def test_recommend_matches_polyrec_recommend(lgn, lgn_export):
    users = [0, 3, 5, 17, 42, 99]
    frame = polyrec.recommend(lgn_export / "run", users, k=10)
    for u in users:
        body = lgn.post("/recommend", json={"user": u, "k": 10}).json()
        rows = frame.filter(frame["user"] == u)
        assert body["items"] == rows["item"].to_list()
        assert body["scores"] == pytest.approx(rows["score"].to_list(), rel=1e-5)
        assert body["fallback"] is None and body["user"] == u
    batch = lgn.post(
        "/recommend/batch", json={"requests": [{"user": u, "k": 10} for u in users]}
    ).json()["results"]
    assert [r["items"] for r in batch] == [
        frame.filter(frame["user"] == u)["item"].to_list() for u in users
    ]
    # string ids find integer ids
    assert lgn.post("/recommend", json={"user": "3", "k": 10}).json()["items"] == batch[1]["items"]


def test_recommend_filters(lgn, lgn_export):
    from polyrec.exporting import load_export

    top = lgn.post("/recommend", json={"user": 5, "k": 10}).json()["items"]
    denied = lgn.post("/recommend", json={"user": 5, "k": 10, "deny": top[:3]}).json()["items"]
    assert not set(top[:3]) & set(denied) and denied[:7] == top[3:]
    allowed = lgn.post("/recommend", json={"user": 5, "k": 3, "allow": top[5:9]}).json()["items"]
    assert allowed == top[5:8]
    # seen items (the user's target-behavior items) are removed unless exclude_seen is false
    bundle = load_export(lgn_export / "exp")
    u = int(bundle.user_map.to_dense([5])[0])
    ptr, idx = bundle.seen.indptr.numpy(), bundle.seen.indices.numpy()
    seen = bundle.item_map.to_external(idx[ptr[u] : ptr[u + 1]]).tolist()
    assert seen
    every = lgn.post("/recommend", json={"user": 5, "k": MAX_K}).json()["items"]
    assert not set(seen) & set(every)
    body = {"user": 5, "k": MAX_K, "allow": seen}
    assert lgn.post("/recommend", json=body).json()["items"] == []
    kept = lgn.post("/recommend", json={**body, "exclude_seen": False}).json()["items"]
    assert sorted(kept) == sorted(seen)


def test_unknown_user_gets_popularity_fallback(lgn):
    body = lgn.post("/recommend", json={"user": "someone-new", "k": 5}).json()
    assert body["fallback"] == "popularity" and len(body["items"]) == 5
    assert body["scores"] == sorted(body["scores"], reverse=True)
    again = lgn.post("/recommend", json={"user": 10**9, "k": 5}).json()
    assert again["items"] == body["items"]


def test_similar_items(lgn):
    body = lgn.post("/similar-items", json={"item": 3, "k": 5}).json()
    assert body["item"] == 3 and len(body["items"]) == 5 and 3 not in body["items"]
    assert body["scores"] == sorted(body["scores"], reverse=True)
    deny = lgn.post("/similar-items", json={"item": 3, "k": 5, "deny": body["items"][:2]}).json()
    assert deny["items"][:3] == body["items"][2:]


def test_interest_model_history_and_user(sa, sa_export):
    info = sa.get("/model").json()
    assert info["kind"] == "interest" and info["interests"] == 2 and info["max_len"] == 8
    users = [0, 3, 5, 42]
    frame = polyrec.recommend(sa_export / "run", users, k=10)
    for u in users:
        body = sa.post("/recommend", json={"user": u, "k": 10}).json()
        assert body["items"] == frame.filter(frame["user"] == u)["item"].to_list()
    hist = sa.post("/recommend", json={"history": [1, 2, 3], "k": 5}).json()
    assert len(hist["items"]) == 5 and not {1, 2, 3} & set(hist["items"])
    assert hist["user"] is None and hist["fallback"] is None
    keep = sa.post("/recommend", json={"history": [1, 2, 3], "k": 50, "exclude_seen": False})
    assert keep.status_code == 200
    mixed = sa.post(
        "/recommend/batch",
        json={
            "requests": [
                {"history": [1, 2, 3], "k": 5},
                {"user": "new", "k": 5},
                {"user": 3, "k": 10},
            ]
        },
    ).json()
    assert mixed["results"][0]["items"] == hist["items"]
    assert mixed["results"][1]["fallback"] == "popularity"
    assert mixed["results"][2]["items"] == frame.filter(frame["user"] == 3)["item"].to_list()


# ---------------------------------------------------------------------------- bad requests
BAD_RECOMMEND = [
    ({"user": 0, "k": 0}, "k"),
    ({"user": 0, "k": -3}, "k"),
    ({"user": 0, "k": MAX_K + 1}, "maximum"),
    ({"user": 0, "k": "ten"}, "k"),
    ({"user": 0, "k": 2.5}, "k"),
    ({"user": 0, "colour": "red"}, "colour: unknown field"),
    ({"k": 5}, "exactly one of 'user' and 'history'"),
    ({"user": 0, "history": [1], "k": 5}, "exactly one"),
    ({"user": [1, 2]}, "user: expected an id"),
    ({"user": 1.5}, "user: expected an id"),
    ({"user": True}, "user: expected an id"),
    ({"user": 0, "deny": [12345]}, "deny: item id 12345"),
    ({"user": 0, "allow": [1, "x", "y"]}, "allow: 2 of 3 item ids"),
    ({"user": 0, "exclude_seen": "yes"}, "exclude_seen"),
    ({"history": [1, 2]}, "embeds users by id"),
    ([1, 2, 3], "expected a JSON object"),
    ("user", "expected a JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_RECOMMEND)
def test_bad_recommend_requests_are_4xx(lgn, body, fragment):
    assert fragment in error_of(lgn.post("/recommend", json=body))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"history": [1, 999, "zzz"], "k": 5}, "history: 2 of 3 item ids"),
        ({"history": [], "k": 5}, "history"),
        ({"history": "1,2", "k": 5}, "history"),
    ],
)
def test_bad_history_requests_are_4xx(sa, body, fragment):
    assert fragment in error_of(sa.post("/recommend", json=body))


def test_malformed_and_oversize_bodies(lgn):
    assert "malformed JSON" in error_of(
        lgn.post(
            "/recommend", content=b'{"user": 0,', headers={"content-type": "application/json"}
        ),
        400,
    )
    assert "missing" in error_of(
        lgn.post("/recommend", content=b"", headers={"content-type": "application/json"})
    )
    huge = json.dumps({"user": 0, "deny": list(range(10)) * 200_000}).encode()
    assert "over the limit" in error_of(
        lgn.post("/recommend", content=huge, headers={"content-type": "application/json"}), 413
    )
    assert error_of(lgn.get("/recommend"), 405)
    assert error_of(lgn.get("/no-such-endpoint"), 404)


def test_bad_batches_are_4xx(lgn):
    too_many = {"requests": [{"user": 0, "k": 1}] * (MAX_BATCH + 1)}
    assert f"maximum is {MAX_BATCH}" in error_of(lgn.post("/recommend/batch", json=too_many))
    assert "requests" in error_of(lgn.post("/recommend/batch", json={"requests": []}))
    assert "requests" in error_of(lgn.post("/recommend/batch", json={"requests": {"user": 0}}))
    bad_item = {"requests": [{"user": 0, "k": 2}, {"user": 1, "deny": ["nope"]}]}
    assert "requests[1].deny" in error_of(lgn.post("/recommend/batch", json=bad_item))
    bad_k = {"requests": [{"user": 0, "k": 2}, {"user": 1, "k": 0}]}
    assert "requests.1.k" in error_of(lgn.post("/recommend/batch", json=bad_k))
    assert "users: unknown field" in error_of(lgn.post("/recommend/batch", json={"users": [1]}))


def test_bad_similar_items_requests(lgn):
    assert "item id 'nope'" in error_of(lgn.post("/similar-items", json={"item": "nope"}))
    assert "maximum" in error_of(lgn.post("/similar-items", json={"item": 3, "k": 10**6}))
    assert "item" in error_of(lgn.post("/similar-items", json={"k": 3}))


def test_server_stays_healthy_after_bad_requests(lgn):
    for body, _ in BAD_RECOMMEND:
        assert 400 <= lgn.post("/recommend", json=body).status_code < 500
    assert lgn.get("/health").json()["status"] == "ok"
    assert len(lgn.post("/recommend", json={"user": 0, "k": 5}).json()["items"]) == 5


# ---------------------------------------------------------------------------- start-up
def test_corrupt_export_never_starts(lgn_export, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(lgn_export / "exp", bad)
    (bad / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(CheckpointError, match="checksum"):
        create_app(bad)
    r = CliRunner().invoke(cli_app, ["serve", str(bad), "--port", "1"])
    out = r.output.strip()
    assert r.exit_code == 2 and out.startswith("error:") and "checksum" in out, out
    assert len(out.splitlines()) <= 2
    r = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(cli_app, ["serve", str(lgn_export / "exp"), "--search", "fast"])
    assert r.exit_code == 2 and "search" in r.output


def test_missing_serve_extra_is_a_clear_error(lgn_export, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'polyrec\[serve\]'"):
        create_app(lgn_export / "exp")


# ---------------------------------------------------------------------------- hardening (issue 24)
def test_a_lone_surrogate_is_a_json_422_not_a_500(lgn):
    for body in (b'{"user": "\\ud800"}', b'{"user": 0, "deny": ["a", "\\udfff"]}'):
        r = lgn.post("/recommend", content=body, headers={"content-type": "application/json"})
        assert "not valid Unicode" in error_of(r, 422)
    assert lgn.get("/health").status_code == 200


def test_a_chunked_body_cannot_pass_the_size_limit(lgn):
    def chunks():  # no Content-Length: transfer-encoding chunked, 6 MiB in all
        yield b'{"user": 0, "deny": ['
        for _ in range(6 * 1024):
            yield b"1," * 512
        yield b"1]}"

    r = lgn.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert "over the limit" in error_of(r, 413)
    ok = lgn.post("/recommend", content=iter([b'{"user": 0,', b' "k": 3}']),
                  headers={"content-type": "application/json"})  # fmt: skip
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3


def test_a_stalled_body_is_answered_408():
    import asyncio

    from polyrec.serve.app import BodyLimit

    sent: list[dict] = []
    called = []

    async def app(scope, receive, send):  # never reached
        called.append(True)

    parts = [{"type": "http.request", "body": b'{"user":', "more_body": True}]

    async def receive():
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)  # the client stalls half-way through its body

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/recommend", "headers": []}
    asyncio.run(asyncio.wait_for(BodyLimit(app, 1 << 20, timeout=0.2)(scope, receive, send), 5))
    assert not called and sent[0]["status"] == 408
    assert b"not received within" in sent[1]["body"]


def test_a_manifest_naming_files_outside_the_export_is_refused(lgn_export, tmp_path):
    for name in ("../outside.bin", "/etc/hostname"):
        bad = tmp_path / f"bad{len(name)}"
        shutil.copytree(lgn_export / "exp", bad)
        (tmp_path / "outside.bin").write_bytes(b"secret")
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["files"][name] = {"sha256": "0" * 64}
        (bad / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CheckpointError, match="outside the export folder"):
            create_app(bad)
