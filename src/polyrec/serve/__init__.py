"""HTTP serving of an exported model: FastAPI + uvicorn (the optional ``serve`` extra).

>>> from polyrec.serve import create_app          # doctest: +SKIP
>>> app = create_app("exports/lgn", max_k=100)     # doctest: +SKIP

or from the shell: ``polyrec serve exports/lgn --host 127.0.0.1 --port 8000``. fastapi and
uvicorn are imported only here, on use; without them a :class:`ConfigError` says what to install.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from polyrec.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVE_HINT = "pip install 'polyrec[serve]'"


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"serving needs {module}, from the serve extra: {SERVE_HINT}")


def create_app(export: Any, **options: Any) -> FastAPI:
    """The FastAPI app over an export (see :func:`polyrec.serve.app.create_app`)."""
    _need("fastapi")
    from polyrec.serve.app import create_app as _create

    return _create(export, **options)


def serve(
    export_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int | None = 1,
    access_log: bool = False,
    on_ready: Any = None,
    **options: Any,
) -> None:
    """Load and check ``export_dir``, then serve it with uvicorn until interrupted.

    ``threads`` sets torch's (and faiss's) CPU threads: 1 suits a server answering single
    requests (no oversubscription under concurrent load); ``None`` keeps the defaults.
    ``on_ready(app)`` is called once the export is loaded, before uvicorn starts.
    """
    _need("fastapi")
    _need("uvicorn")
    import uvicorn

    if threads is not None:
        import torch

        from polyrec.exporting.index import import_faiss

        torch.set_num_threads(threads)
        faiss = import_faiss()
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
    app = create_app(export_dir, **options)
    # hand the GIL over every 1 ms (default 5): a heavy request's Python work in the worker
    # thread then delays the event loop's light requests by at most that
    import sys

    sys.setswitchinterval(0.001)
    if on_ready is not None:
        on_ready(app)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log)


__all__ = ["SERVE_HINT", "create_app", "serve"]
