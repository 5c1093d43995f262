"""What a backbone costs to use: extraction milliseconds per example, measured or recorded.

Both ranking (:mod:`headstart.selection.rank`) and advice (:mod:`headstart.selection.advise`)
report a backbone's extraction cost; :func:`one_blas_thread` keeps the small scoring
computations that follow an extraction from waiting on the engine's busy threads.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json
from ..backbones.base import Backbone
from ..data.base import Examples

__all__ = ["COST_FILE", "extraction_cost", "measure_cost", "one_blas_thread"]

#: The record, inside a feature-cache entry, of what extracting it cost.
COST_FILE = "cost.json"


def one_blas_thread() -> Any:
    """Run the scores' linear algebra on one BLAS thread.

    The matrices are small (a few hundred rows); right after extraction the inference
    engine's worker threads are still spinning, and multi-threaded OpenBLAS then waits on
    them: measured on the 2-core development machine, LogME plus the ridge probe on 500 x
    1280 features took 0.4 s on one thread and 4 to 20 s on two.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def measure_cost(
    backbone: Backbone,
    examples: Examples,
    *,
    engine: str = "auto",
    batch_size: int | None = None,
    n: int = 32,
) -> float:
    """Marginal extraction milliseconds per example, measured on up to ``n`` examples.

    Three extractions into a throw-away cache: a warm-up of ``n // 4`` examples (it pays a
    first ONNX export, once per backbone and input size), then ``n // 4`` and ``n`` timed;
    the difference over the extra examples is the per-example cost, free of the engine's
    start-up.
    """
    import tempfile

    from ..features.cache import extract_features

    n = max(4, min(n, len(examples)))
    small = max(1, n // 4)
    with tempfile.TemporaryDirectory(prefix="headstart-cost-") as tmp:

        def timed(count: int, folder: str) -> float:
            t = time.perf_counter()
            extract_features(
                backbone,
                examples.subset(np.arange(count)),
                cache_dir=f"{tmp}/{folder}",
                progress=False,
                engine=engine,
                batch_size=batch_size,
            )
            return time.perf_counter() - t

        timed(small, "warm")
        t_small, t_n = timed(small, "small"), timed(n, "n")
    extra = t_n - t_small
    if n > small and extra > 0:
        return 1000.0 * extra / (n - small)
    return 1000.0 * t_n / n


def extraction_cost(
    backbone: Backbone, fs: Any, sample: Examples, engine: str, batch_size: int | None
) -> tuple[float, str]:
    """Extraction milliseconds per example of ``backbone``, and where the number came from.

    ``fs`` is the feature set just extracted for ``sample``. When this call computed every
    shard, its own timing is used ("extraction") and recorded next to the features; when the
    features were cached, that record is read back ("cache record"); without one, the cost
    is measured again on ``sample`` with :func:`measure_cost` ("re-measured").
    """
    record = Path(fs.path) / COST_FILE
    if fs.computed_shards and not fs.cached_shards and fs.seconds > 0:
        ms = 1000.0 * fs.seconds / fs.n
        with contextlib.suppress(OSError):  # a read-only cache still ranks
            atomic_write_json(
                record,
                {"ms_per_example": ms, "n": fs.n, "engine": fs.engine, "seconds": fs.seconds},
            )
        return ms, "extraction"
    try:
        doc = json.loads(record.read_text())
        return float(doc["ms_per_example"]), "cache record"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return measure_cost(backbone, sample, engine=engine, batch_size=batch_size), "re-measured"
