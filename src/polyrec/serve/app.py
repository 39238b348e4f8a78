"""The FastAPI app over an export directory (``polyrec serve EXPORT_DIR``).

Endpoints: ``GET /health``, ``GET /model``, ``POST /recommend``, ``POST /recommend/batch``,
``POST /similar-items``; OpenAPI docs at ``/docs``. Every bad request gets a 4xx JSON body
``{"error": "<one line naming the problem>"}``: malformed JSON (400), a body over
``max_body_bytes`` (413), unknown fields, wrong types, ``k <= 0`` or above ``max_k``, unknown
item ids, a batch over ``max_batch`` (422). The export is loaded and checked before the app
exists, so a corrupt or mismatched export never starts a server.

Handlers are ``async``. A light request (its work — k plus its allow, deny and history lists,
summed over a batch — at most ``heavy_work``) is answered on the event loop: well under a
millisecond of torch/faiss work, less than a thread hand-off would cost. A heavy one runs in a
worker thread (``heavy_workers`` of them), so that the light requests of other clients keep their
latency while it runs; at most ``heavy_queue`` heavy requests wait for a worker, and the next one
is answered 429 (retry later) instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyrec.errors import ConfigError, PolyrecError
from polyrec.exporting import Bundle, Query, Recommender, load_export
from polyrec.exporting.engine import Answer, Search
from polyrec.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorBody,
    Health,
    ModelInfo,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid request (the message names the field)"},
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    # an unknown field first: it is often the misspelling behind a missing one
    # (and of an id's int | str branches, the text branch's own complaint before "not an int")
    errors = sorted(
        exc.errors(),
        key=lambda e: (e.get("type") != "extra_forbidden", e.get("type") != "value_error"),
    )
    if not errors:
        return 422, "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return 400, f"malformed JSON body{': ' + str(reason) if reason else ''}"
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    kind = first.get("type", "")
    if loc and loc[-1] in ("int", "str", "function-after[_unicode(), str]"):
        loc = loc[:-1]  # an id (int | str union): one message, not two
        kind = kind if kind == "value_error" else "id"
    where = ".".join(loc) or "body"
    if kind == "id":
        msg = f"{where}: expected an id (a JSON integer or string)"
        return 422, msg
    if kind == "extra_forbidden":
        msg = f"{where}: unknown field"
    elif kind == "missing":
        msg = f"{where}: required field missing" if loc else "request body missing"
    elif kind == "model_attributes_type":
        msg = f"{where}: expected a JSON object"
        if isinstance(first.get("input"), bytes | str) and not loc:
            msg += " (is the Content-Type application/json?)"
    else:
        msg = f"{where}: {str(first.get('msg', 'invalid value')).removeprefix('Value error, ')}"
    more = len(errors) - 1
    return 422, msg + (f" ({more} more problem{'s' if more > 1 else ''})" if more else "")


class BodyLimit:
    """Read each request body here, under two limits, before the app sees it: at most ``limit``
    bytes *as read* (413; a Content-Length over it is refused before reading, and a chunked body
    cannot get past it either), and at most ``timeout`` seconds (408: a client that stalls
    half-way through its body does not hold a connection forever)."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float = 10.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = -1
                if size > self.limit or size < 0:
                    msg = (
                        f"request body of {size} bytes is over the limit of {self.limit}"
                        if size > self.limit
                        else "invalid Content-Length header"
                    )
                    await _error(413 if size > self.limit else 400, msg)(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except TimeoutError:
                await _error(408, f"request body not received within {self.timeout:g} s")(
                    scope, receive, send
                )
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _error(413, f"request body over the limit of {self.limit} bytes")(
                    scope, receive, send
                )
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)


def _result(user: Any, a: Answer) -> dict[str, Any]:
    return {"user": user, "items": a.items, "scores": a.scores, "fallback": a.fallback}


def _query(r: RecommendRequest) -> Query:
    return Query(r.user, r.history, r.k, r.exclude_seen, r.allow, r.deny)


def work(requests: list[RecommendRequest]) -> int:
    """A request's work, in list entries: k plus its allow, deny and history lengths, summed."""
    return sum(
        r.k + len(r.allow or ()) + len(r.deny or ()) + len(r.history or ()) for r in requests
    )


class HeavyPool:
    """Worker threads for heavy requests with a bounded wait: ``run`` answers None (busy) when
    ``queue`` requests already wait for one of the ``workers``."""

    def __init__(self, workers: int, queue: int) -> None:
        import anyio

        self.limiter = anyio.CapacityLimiter(workers)
        self.queue = queue

    async def run(self, fn: Any) -> Any:
        import anyio

        if self.limiter.statistics().tasks_waiting >= self.queue:
            return None
        return await anyio.to_thread.run_sync(_background(fn), limiter=self.limiter)


def _background(fn: Any) -> Any:
    """``fn`` run at the lowest CPU priority of its thread (Linux: threads have their own nice
    value), so that the event loop's light requests get the cores first."""

    def run() -> Any:
        if hasattr(os, "setpriority"):
            # not permitted here: the normal priority
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return fn()

    return run


def create_app(
    export: str | os.PathLike[str] | Bundle,
    *,
    max_k: int = 100,
    max_batch: int = 256,
    search: Search = "auto",
    max_body_bytes: int = 4 << 20,
    read_timeout: float = 10.0,
    heavy_work: int = 4096,
    heavy_workers: int = 1,
    heavy_queue: int = 8,
) -> FastAPI:
    """The app serving ``export`` (a directory, loaded and verified here, or a loaded Bundle).

    Raises :class:`~polyrec.errors.CheckpointError` for a corrupt export and
    :class:`~polyrec.errors.ConfigError` for bad limits, before any request is served.
    """
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1 (got {max_batch})")
    if heavy_workers < 1 or heavy_queue < 0 or heavy_work < 0:
        raise ConfigError("heavy_workers must be >= 1, heavy_queue and heavy_work >= 0")
    pool = HeavyPool(heavy_workers, heavy_queue)

    def busy() -> JSONResponse:
        r = _error(429, "the server is busy with heavy requests; retry later")
        r.headers["Retry-After"] = "1"
        return r

    async def answer(requests: list[RecommendRequest], field: str = "") -> list[Answer] | None:
        """The answers, on the loop when light, in a worker when heavy (None: workers busy)."""
        queries = [_query(r) for r in requests]
        if work(requests) <= heavy_work:
            return rec.recommend(queries, field=field)
        out: list[Answer] | None = await pool.run(lambda: rec.recommend(queries, field=field))
        return out

    bundle = export if isinstance(export, Bundle) else load_export(export)
    rec = Recommender(bundle, max_k=max_k, search=search)
    manifest = bundle.manifest
    info = manifest["model"]
    # warm-up: the first request should not pay for lazy initialisation
    rec.recommend([Query(user=bundle.user_map.ids[0] if bundle.n_users else None, k=1)])

    app = FastAPI(
        title=f"polyrec: {info['name']} on {manifest['dataset'].get('name', '')}",
        version=str(manifest.get("software", {}).get("polyrec", "")),
        description=(
            "Recommendations from an exported polyrec model. Ids are the dataset's external ids "
            '(JSON integers or strings). Every error is a 4xx JSON body `{"error": ...}`.'
        ),
    )
    app.state.recommender = rec

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, msg = _validation_message(exc)
        return _error(status, msg)

    @app.exception_handler(PolyrecError)
    async def _user_error(request: Request, exc: PolyrecError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    metrics = bundle.metrics
    model_info = ModelInfo(
        name=info["name"],
        kind=bundle.kind,
        paper=info.get("paper", ""),
        scoring=info.get("scoring", ""),
        interests=int(info.get("interests", 1)),
        dim=int(info.get("dim", bundle.item_emb.shape[1])),
        max_len=info.get("max_len"),
        dataset=manifest.get("dataset", {}),
        protocol=manifest.get("protocol", {}),
        metrics={
            part: {"metrics": metrics[part].get("metrics", {}), "ks": metrics[part].get("ks")}
            for part in ("valid", "test")
            if isinstance(metrics.get(part), dict)
        },
        index=manifest.get("index", {}),
        search=rec.backend,
        limits={
            "max_k": max_k,
            "max_batch": max_batch,
            "heavy_work": heavy_work,
            "heavy_workers": heavy_workers,
            "heavy_queue": heavy_queue,
        },
        exported=manifest.get("created"),
    )
    health = Health(status="ok", model=info["name"], items=bundle.n_items, users=bundle.n_users)

    @app.get("/health", response_model=Health)
    async def get_health() -> Health:
        """Liveness: the model is loaded and answers."""
        return health

    @app.get("/model", response_model=ModelInfo)
    async def get_model() -> ModelInfo:
        """The model, its dataset, its validation/test metrics with their protocol, the index."""
        return model_info

    # The handlers return JSONResponse directly: the bodies are built from plain lists, so
    # validating them again against the response models (kept for the docs) would only cost.
    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS)
    async def post_recommend(body: RecommendRequest) -> JSONResponse:
        """Top-k items for ``user`` (or ``history``), seen items and ``deny`` removed."""
        answers = await answer([body])
        if answers is None:
            return busy()
        return JSONResponse(_result(body.user, answers[0]))

    @app.post("/recommend/batch", response_model=BatchResponse, responses=ERRORS)
    async def post_batch(body: BatchRequest) -> JSONResponse:
        """Several requests in one call (at most ``max_batch``), answered in order."""
        if len(body.requests) > max_batch:
            return _error(
                422,
                f"requests: {len(body.requests)} requests in one batch; the maximum is {max_batch}",
            )
        answers = await answer(body.requests, field="requests")
        if answers is None:
            return busy()
        results = [_result(r.user, a) for r, a in zip(body.requests, answers, strict=True)]
        return JSONResponse({"results": results})

    @app.post("/similar-items", response_model=SimilarItemsResponse, responses=ERRORS)
    async def post_similar(body: SimilarItemsRequest) -> JSONResponse:
        """Items nearest to ``item`` by inner product of the exported item embeddings."""
        a = rec.similar_items(body.item, body.k, allow=body.allow, deny=body.deny)
        return JSONResponse({"item": body.item, "items": a.items, "scores": a.scores})

    app.add_middleware(BodyLimit, limit=max_body_bytes, timeout=read_timeout)
    return app


__all__ = ["create_app"]
