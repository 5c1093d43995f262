"""Streaming, resumable, content-addressed feature extraction.

Features are computed in shards of ``shard_size`` examples and written to
``cache_root()/features/<key>/``, where the key hashes the backbone name, its weights hash,
its preprocessing and pooling, and the data's fingerprint. Each shard is written atomically
(``shard-00000.npy``), then its sidecar (``shard-00000.json``: rows, dim, sha256); a shard
without a matching sidecar does not exist. A killed extraction therefore resumes from its
last finished shard, and a later fit with another head reads the shards instead of running
the backbone again. Only one shard of features is held in memory while extracting.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_open, atomic_write_json, cache_root, sha256_file, stable_hash
from ..backbones.base import AudioPreprocess, Backbone, ImagePreprocess, TextPreprocess
from ..data.base import Examples
from ..errors import CacheError, ConfigError
from . import preprocess as P

log = logging.getLogger("headstart")

#: 2: image files are resized and cropped once (format 1 cropped them twice), so features of
#: image folders differ and format-1 entries must not be read for them.
FORMAT_VERSION = 2
ENGINES = ("auto", "torch", "onnx")
#: Texts per batch of a feature extraction by default (sorted by length, padded per batch).
TEXT_BATCH = 32


@dataclass
class FeatureSet:
    """A finished cache entry: ``load()`` concatenates its verified shards."""

    path: Path
    n: int
    dim: int
    key: str
    engine: str
    seconds: float  # time spent computing in this call (0 when fully cached)
    cached_shards: int
    computed_shards: int

    def load(self, verify: bool = True) -> np.ndarray:
        out = np.empty((self.n, self.dim), dtype=np.float32)
        row = 0
        for shard in _shard_files(self.path):
            arr = _read_shard(shard, verify=verify)
            if arr is None:
                raise CacheError(
                    f"feature shard {shard} is missing or corrupt. Delete {self.path} "
                    "and run again to recompute it."
                )
            out[row : row + len(arr)] = arr
            row += len(arr)
        if row != self.n:
            raise CacheError(
                f"{self.path} holds {row} rows, expected {self.n}: delete it and rerun"
            )
        return out


def cache_key(backbone: Backbone, fingerprint: str) -> str:
    return stable_hash(
        {
            "format": FORMAT_VERSION,
            "backbone": backbone.name,
            "weights": backbone.weights.current_sha256,
            "preprocess": backbone.preprocess.to_dict(),
            "pooling": backbone.pooling,
            "data": fingerprint,
        }
    )[:40]


def _shard_files(path: Path) -> list[Path]:
    return sorted(path.glob("shard-*.npy"))


def _read_shard(npy: Path, verify: bool = True) -> np.ndarray | None:
    side = npy.with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
        if verify and sha256_file(npy) != meta["sha256"]:
            log.warning("feature shard %s failed its checksum; recomputing it", npy)
            return None
        arr = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):  # TypeError: a side file not an object
        return None
    if arr.shape != (meta["rows"], meta["dim"]):
        return None
    return arr


def _write_shard(npy: Path, arr: np.ndarray) -> None:
    with atomic_open(npy) as fh:
        np.save(fh, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    atomic_write_json(
        npy.with_suffix(".json"),
        {"rows": int(arr.shape[0]), "dim": int(arr.shape[1]), "sha256": sha256_file(npy)},
    )


# ------------------------------------------------------------------------------- engines
def _torch_engine(backbone: Backbone) -> Callable[[dict[str, torch.Tensor]], np.ndarray]:
    device = next(backbone.parameters()).device

    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            out = backbone(**{k: v.to(device) for k, v in batch.items()})
        return out.float().cpu().numpy()

    return run


def make_engine(
    backbone: Backbone, engine: str = "auto"
) -> tuple[str, Callable[[dict[str, torch.Tensor]], np.ndarray]]:
    """Pick the inference engine: ONNX Runtime on CPU where it exports and passes the parity
    check against PyTorch, else eager PyTorch (always on GPU)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    on_cpu = next(backbone.parameters()).device.type == "cpu"
    if engine == "torch" or (engine == "auto" and not on_cpu):
        return "torch", _torch_engine(backbone)
    try:
        from .onnx_runtime import get_or_export
    except ImportError as exc:  # onnxruntime missing
        if engine == "onnx":
            raise ConfigError(
                f"engine 'onnx' needs onnxruntime: pip install onnxruntime ({exc})"
            ) from exc
        return "torch", _torch_engine(backbone)
    backbone.eval()
    pre = backbone.preprocess.to_dict()
    if pre.get("kind") == "text":
        # tokenising and truncating happen before the graph, which is exported with a dynamic
        # sequence axis: one export serves every token window
        pre = {k: v for k, v in pre.items() if k not in ("max_length", "truncation")}
    key = stable_hash(
        {
            "b": backbone.name,
            "w": backbone.weights.current_sha256,
            "p": pre,
            "pool": backbone.pooling,
        }
    )[:32]
    example = backbone.example_inputs(batch_size=2)
    runner = get_or_export(backbone, tuple(example.values()), key, input_names=list(example))
    if runner is None:
        if engine == "onnx":
            raise ConfigError(
                f"{backbone.name} could not be run through ONNX Runtime (see log); use --engine torch"
            )
        return "torch", _torch_engine(backbone)

    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        return runner(**{k: v.numpy() for k, v in batch.items()})

    return "onnx", run


# ---------------------------------------------------------------------------- extraction
def _batches(backbone: Backbone, ex: Examples, start: int, stop: int, batch_size: int):
    """Yield (row_indices_relative_to_start, inputs) for rows [start, stop)."""
    pre = backbone.preprocess
    if isinstance(pre, ImagePreprocess):
        row = 0
        for x in P.image_batches(ex.inputs, pre, batch_size, start, stop):
            yield np.arange(row, row + len(x)), {"pixel_values": x}
            row += len(x)
        return
    if isinstance(pre, TextPreprocess):
        seqs = P.tokenize([str(t) for t in ex.inputs[start:stop]], pre)
        order = np.argsort([len(s) for s in seqs], kind="stable")  # length bucketing
        pad = P.get_tokenizer(pre).pad_token_id or 0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield idx, P.pad_batch([seqs[j] for j in idx], pad)
        return
    if isinstance(pre, AudioPreprocess):
        from ..backbones.audio import audio_batch

        for i in range(start, stop, batch_size):
            j = min(i + batch_size, stop)
            yield np.arange(i - start, j - start), audio_batch(list(ex.inputs[i:j]), pre)
        return
    raise ConfigError(f"no extraction path for preprocessing {type(pre).__name__}")


def extract_features(
    backbone: Backbone,
    examples: Examples,
    *,
    batch_size: int | None = None,
    shard_size: int = 2048,
    engine: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    fingerprint: str | None = None,
) -> FeatureSet:
    """Features for every example, from the cache where present, computed and cached if not."""
    if examples.modality != backbone.modality:
        raise ConfigError(
            f"{backbone.name} is a {backbone.modality} backbone but the data is {examples.modality}; "
            f"choose a {examples.modality} backbone (`headstart backbones`)."
        )
    fingerprint = fingerprint or examples.fingerprint()
    key = cache_key(backbone, fingerprint)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    path = root / key
    path.mkdir(parents=True, exist_ok=True)
    n = len(examples)
    bs = batch_size or (64 if backbone.modality == "image" else TEXT_BATCH)
    spans = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    todo = [i for i, _ in enumerate(spans) if _read_shard(path / f"shard-{i:05d}.npy") is None]
    # Stale shards from a different shard_size would break the row order: refuse to mix.
    manifest = path / "manifest.json"
    meta = {
        "key": key,
        "backbone": backbone.name,
        "weights": backbone.weights.current_sha256,
        "preprocess": backbone.preprocess.to_dict(),
        "n": n,
        "dim": backbone.feature_dim,
        "shard_size": shard_size,
        "data": fingerprint,
        "format": FORMAT_VERSION,
    }
    if manifest.exists():
        old = _read_manifest(manifest)
        if old is None or old.get("shard_size") != shard_size or old.get("n") != n:
            for f in path.glob("shard-*"):
                f.unlink()
            todo = list(range(len(spans)))
    if _distributed()[0] == 0:
        atomic_write_json(manifest, meta)
    cached = len(spans) - len(todo)
    rank, world, barrier = _distributed()
    if world > 1:
        # Under `accelerate launch`, each process computes every world-th missing shard; all
        # then wait and read the merged result from the shared cache folder.
        todo = [i for k, i in enumerate(todo) if k % world == rank]
    engine_used, t0 = "cache", time.perf_counter()
    if todo:
        engine_used, run = make_engine(backbone, engine)
        total = sum(spans[i][1] - spans[i][0] for i in todo)
        bar = _progress(total, backbone, progress, cached_rows=n - total)
        for i in todo:
            s, e = spans[i]
            out = np.empty((e - s, backbone.feature_dim), dtype=np.float32)
            for idx, batch in _batches(backbone, examples, s, e, bs):
                out[idx] = run(batch)
                bar.update(len(idx))
            _write_shard(path / f"shard-{i:05d}.npy", out)
        bar.close()
    seconds = time.perf_counter() - t0 if todo else 0.0
    if world > 1:
        barrier()
        missing = [i for i in range(len(spans)) if _read_shard(path / f"shard-{i:05d}.npy") is None]
        if missing:
            raise CacheError(
                f"shards {missing[:5]} of {path} are missing after a distributed "
                "extraction: is the cache folder shared by all processes?"
            )
    atomic_write_json(path / "complete.json", {**meta, "engine": engine_used})
    return FeatureSet(path, n, backbone.feature_dim, key, engine_used, seconds, cached, len(todo))


def _read_manifest(manifest: Path) -> dict[str, Any] | None:
    """The cache entry's manifest, or None when it is garbled (a disk error, a hand edit):
    its shards cannot be trusted to be in this entry's row order, so they are recomputed."""
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why: str = str(exc)
    else:
        if isinstance(old, dict):
            return old
        why = f"a JSON {type(old).__name__}, not an object"
    log.warning("feature cache manifest %s is unreadable (%s): recomputing", manifest, why)
    return None


def _barrier() -> None:
    torch.distributed.barrier()


def _distributed() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) when running under several processes, else (0, 1, no-op)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (
            torch.distributed.get_rank(),
            torch.distributed.get_world_size(),
            _barrier,
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState()
        return state.process_index, state.num_processes, state.wait_for_everyone
    return 0, 1, lambda: None


def _progress(total: int, backbone: Backbone, enabled: bool, cached_rows: int) -> Any:
    from tqdm.auto import tqdm

    unit = {"image": "img", "audio": "clips"}.get(backbone.modality, "text")  # "clips/s"
    desc = f"features {backbone.name.split(':')[-1]}"
    if cached_rows:
        desc += f" (+{cached_rows} cached)"
    return tqdm(
        total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False
    )


def features_for(
    backbone: Backbone, examples: Examples, **kw: Any
) -> tuple[np.ndarray, FeatureSet]:
    fs = extract_features(backbone, examples, **kw)
    return fs.load(), fs


def features_in_memory(backbone: Backbone, examples: Examples, batch_size: int = 32) -> np.ndarray:
    """Features without the cache (prediction on a handful of inputs)."""
    run = _torch_engine(backbone)
    out = np.empty((len(examples), backbone.feature_dim), dtype=np.float32)
    for idx, batch in _batches(backbone, examples, 0, len(examples), batch_size):
        out[idx] = run(batch)
    return out
