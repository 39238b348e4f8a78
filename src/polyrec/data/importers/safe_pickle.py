"""A restricted unpickler for the numpy arrays and scipy.sparse matrices that datasets ship.

Published recommendation datasets (HKUDS/CML, SSLRec, ...) store their matrices as Python
pickles. A plain ``pickle.load`` runs whatever callable the file names, so a crafted file can run
shell commands. :func:`load_pickle` admits only the handful of globals needed to rebuild

* numpy arrays, numpy scalars and dtypes (``numpy.ndarray``, ``numpy.dtype``, the
  ``_reconstruct`` / ``scalar`` / ``_frombuffer`` helpers under ``numpy.core`` or ``numpy._core``);
* scipy.sparse ``csr``/``csc``/``coo``/``dok``/``lil`` matrices and arrays, under their public
  name (``scipy.sparse``), their private modules (``scipy.sparse._csr`` ... since scipy 1.8) and
  the old modules (``scipy.sparse.csr`` ... before 1.8);
* plain containers needed by those (``builtins`` slice/set/frozenset/complex/bytearray/dict,
  ``builtins.object`` and ``copyreg._reconstructor`` used by ``dok`` matrices and by protocol
  0/1 pickles, ``_codecs.encode`` used by protocol 2 for bytes).

Lists, tuples, dicts, strings, numbers and ``None`` are native pickle opcodes and need no
global. Anything else raises :class:`~polyrec.errors.DataError` before it is imported or called.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
from pathlib import Path
from typing import IO, Any

from polyrec.errors import DataError

_SPARSE_FORMATS = ("csr", "csc", "coo", "dok", "lil")
_SPARSE_CLASSES = frozenset(
    f"{fmt}_{kind}" for fmt in _SPARSE_FORMATS for kind in ("matrix", "array")
)
_SPARSE_MODULES = frozenset(
    ["scipy.sparse"]
    + [f"scipy.sparse._{fmt}" for fmt in _SPARSE_FORMATS]
    + [f"scipy.sparse.{fmt}" for fmt in _SPARSE_FORMATS]
)
_NUMPY_HELPERS = {
    "multiarray": frozenset({"_reconstruct", "scalar"}),
    "numeric": frozenset({"_frombuffer"}),
}
# object/dict: bases that copyreg._reconstructor gets for protocol 0/1 matrices and dok matrices
_BUILTINS = frozenset({"slice", "set", "frozenset", "complex", "bytearray", "dict", "object"})


def _numpy_helper(submodule: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core (numpy.core still works but warns): resolve the
    # helper from whichever exists, preferring the current location.
    for mod in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)


def _resolve(module: str, name: str) -> Any | None:
    """The object a pickle global may refer to, or None when it is not admitted."""
    if module == "numpy" and name in ("ndarray", "dtype"):
        import numpy

        return getattr(numpy, name)
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            sub = module[len(prefix) :]
            if name in _NUMPY_HELPERS.get(sub, ()):
                return _numpy_helper(sub, name)
            return None
    if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
        import scipy.sparse

        # the public namespace holds every class; the deprecated scipy.sparse.csr modules warn
        return getattr(scipy.sparse, name, None)
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        import builtins

        return getattr(builtins, name)
    if module in ("copyreg", "copy_reg") and name == "_reconstructor":
        import copyreg

        return copyreg._reconstructor  # type: ignore[attr-defined]
    if module == "_codecs" and name == "encode":
        import codecs

        return codecs.encode
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only numpy/scipy matrix types (see module doc)."""

    def __init__(self, file: IO[bytes], *, where: str = "<pickle>") -> None:
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        obj = _resolve(module, name)
        if obj is None:
            raise DataError(
                f"{self.where}: the pickle holds {module}.{name}, which is not a numpy/scipy "
                "matrix; refusing to load it"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"{self.where}: the pickle refers to an external persistent object; refusing to load it"
        )


def load_pickle(path: str | os.PathLike[str]) -> object:
    """Load a pickle of numpy arrays / scipy.sparse matrices / plain lists, safely.

    Raises :class:`DataError` naming the file when it is missing, empty, truncated, corrupt, or
    refers to any other Python object.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file does not exist")
    if not p.is_file():
        raise DataError(f"{p}: is not a file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    try:
        with p.open("rb") as fh:
            return RestrictedUnpickler(fh, where=str(p)).load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
        struct.error,
        UnicodeDecodeError,
        MemoryError,
        OverflowError,
        RecursionError,
    ) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{p}: the pickle is truncated or corrupt ({msg})") from None


__all__ = ["RestrictedUnpickler", "load_pickle"]
