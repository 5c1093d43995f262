"""A fitted baseline on disk: ``baseline.json`` + ``baseline.safetensors``, no pickle.

:func:`save_baseline` writes :meth:`Baseline.state <headstart.baselines.linear.Baseline.state>`
as a JSON description and a safetensors file of numeric arrays, each written to a temporary
name in the folder and renamed over the old file, so a reader never sees half a file. The JSON
records the sha256 of the arrays file, so a pair from two different saves is refused.

:func:`load_baseline` treats the folder as untrusted input: each file must be a regular file
inside the folder, the JSON valid and of a known format, the arrays of numeric dtypes, finite,
with the names and shapes the description implies. The small CNN
(:class:`~headstart.baselines.scratch.ScratchCNN`) is stored the same way, its tensors as
arrays (``name: "small-cnn"`` in the JSON selects it). Every failure is one
:class:`~headstart.errors.BundleError` naming the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from headstart._io import atomic_write_bytes, atomic_write_json, sha256_file
from headstart.baselines.linear import BASELINE_FORMAT, Baseline
from headstart.baselines.scratch import CNN_NAME, ScratchCNN
from headstart.errors import BundleError, ConfigError

__all__ = ["ARRAYS_FILE", "META_FILE", "load_baseline", "save_baseline"]

#: The baseline's description (JSON) and arrays (safetensors) inside its folder.
META_FILE = "baseline.json"
ARRAYS_FILE = "baseline.safetensors"
_FIX = (
    "Restore the folder from where the baseline was saved, or save it again "
    "(save_baseline(fit_baseline(train, val), folder), or re-run headstart fit)."
)
#: safetensors dtypes a baseline's arrays may have.
_DTYPES = ("F32", "F64", "I32", "I64")


def _storable(name: str, a: np.ndarray) -> np.ndarray:
    """`a` as a contiguous array of a dtype safetensors stores and :func:`load_baseline`
    accepts (float32/64, int32/64); other numeric dtypes are widened, objects refused."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        a = a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)
    elif a.dtype.kind in "iub":
        a = a if a.dtype in (np.int32, np.int64) else a.astype(np.int64)
    else:
        raise TypeError(f"Baseline array {name!r} has dtype {a.dtype}; only numbers can be saved.")
    return np.ascontiguousarray(a)


def save_baseline(baseline: Baseline | ScratchCNN, folder: Path) -> None:
    """Write `baseline` to ``folder/baseline.json`` and ``folder/baseline.safetensors``
    (the folder is created if needed; existing files are replaced atomically)."""
    from safetensors.numpy import save

    meta, arrays = baseline.state()
    data = save({k: _storable(k, v) for k, v in arrays.items()})
    folder = Path(folder)
    atomic_write_bytes(folder / ARRAYS_FILE, data)
    atomic_write_json(
        folder / META_FILE, {**meta, "arrays_sha256": hashlib.sha256(data).hexdigest()}
    )


def _file(folder: Path, name: str, what: str) -> Path:
    """``folder/name`` after checking it is a regular file inside `folder` (no link out)."""
    p = folder / name
    real, root = Path(os.path.realpath(p)), Path(os.path.realpath(folder))
    if p.exists() and root not in real.parents:
        raise BundleError(f"{p} ({what}) leads outside {folder} (to {real}): refused. {_FIX}")
    if not p.is_file():
        state = "is missing" if not p.exists() else "is not a regular file"
        raise BundleError(f"{p} ({what}) {state}. {_FIX}")
    return p


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise BundleError(f"{path} is not readable JSON ({exc}). {_FIX}") from exc
    if not isinstance(meta, dict):
        raise BundleError(
            f"{path} holds a JSON {type(meta).__name__}, not a baseline description. {_FIX}"
        )
    fmt = meta.get("format")
    if fmt != BASELINE_FORMAT:
        raise BundleError(
            f"{path} has format {fmt!r}; this headstart reads baseline format {BASELINE_FORMAT} "
            "only. Save the baseline again with this headstart, or upgrade headstart if a newer "
            "one wrote it."
        )
    return meta


def _read_arrays(path: Path, expected_sha256: Any, meta_path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise BundleError(
            f"{path} is not the arrays file {meta_path} was saved with (its sha256 differs): "
            f"the pair comes from two different saves, or one was edited. {_FIX}"
        )
    try:
        with safe_open(str(path), "np") as fh:
            dtypes = {k: str(fh.get_slice(k).get_dtype()) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(
            f"{path} cannot be read as safetensors ({exc}): it is truncated or damaged. {_FIX}"
        ) from exc
    bad = {k: d for k, d in dtypes.items() if d not in _DTYPES}
    if bad:
        raise BundleError(
            f"{path}: arrays {bad} have dtypes a baseline never saves (it saves "
            f"{', '.join(_DTYPES)}). {_FIX}"
        )
    arrays = load_file(str(path))
    bad_values = sorted(k for k, v in arrays.items() if not np.isfinite(v).all())
    if bad_values:
        raise BundleError(f"{path}: arrays {bad_values} hold NaN or infinite values. {_FIX}")
    return arrays


def load_baseline(folder: Path) -> Baseline | ScratchCNN:
    """The baseline :func:`save_baseline` wrote to `folder`, checked before it is built.

    Raises BundleError when a file is missing, damaged, of an unknown format, or when the
    arrays do not match the description (names, shapes, class count, feature dimension).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(
            f"{folder} is not a folder holding a saved baseline ({META_FILE} + "
            f"{ARRAYS_FILE}). Pass the folder save_baseline wrote. {_FIX}"
        )
    meta_path = _file(folder, META_FILE, "the baseline's description")
    arrays_path = _file(folder, ARRAYS_FILE, "the baseline's arrays")
    meta = _read_meta(meta_path)
    arrays = _read_arrays(arrays_path, meta.pop("arrays_sha256", None), meta_path)
    try:
        if meta.get("name") == CNN_NAME:
            return ScratchCNN.from_state(meta, arrays)
        return Baseline.from_state(meta, arrays)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{arrays_path} does not match {meta_path}: {exc} {_FIX}") from exc
