"""The study's cells (strategy × fraction × seed): computed once, written atomically, reused.

:func:`run_curve` plans the cells, runs each missing one on the split ``headstart fit
--train-size n --seed s`` would make, and writes ``curve.json``, ``results.md``,
``curve.png`` and ``report.html``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._io import atomic_write_bytes, atomic_write_json, stable_hash
from ..data.base import Examples
from ..errors import ConfigError, DataError
from ..report.schema import CurveRow
from .config import CELL_FORMAT, CurveConfig
from .study import Study, short_metrics
from .summary import CurveResult, headline, summarise_cells, text_table


def _budget(n_pool: int, n_classes: int, fraction: float) -> int:
    """Labelled examples for a fraction: at least 2 per class (one to train, one to validate)."""
    return n_pool if fraction >= 1.0 else min(n_pool, max(2 * n_classes, round(fraction * n_pool)))


def _cell_split(
    pool: Examples, n: int, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into the pool: the split ``fit --train-size n --seed seed`` makes.

    The same (n, seed) gives the same split for every strategy; budgets nest across fractions.
    """
    from ..data.split import budget_split

    return budget_split(pool.labels, n, val_fraction, seed)


def _cell_id(strategy: str, fraction: float, seed: int) -> str:
    return f"{strategy}-f{fraction:g}-seed{seed}"


def _read_cell(path: Path, key: str) -> dict[str, Any] | None:

    if not path.exists():
        return None
    try:
        cell = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cell if isinstance(cell, dict) and cell.get("key") == key and "test" in cell else None


def _run_cells(
    study: Study, plan: list[tuple[float, int, str]], max_new_cells: int | None, progress: bool
) -> tuple[list[dict[str, Any]], list[str], list[str], bool]:
    """Compute or reuse each planned cell; (cells, computed ids, reused ids, stopped early)."""
    from ..fit import seed_everything

    cfg, out = study.cfg, Path(study.cfg.out)
    n_pool, k = len(study.pool), len(study.classes)
    cells: list[dict[str, Any]] = []
    computed: list[str] = []
    reused: list[str] = []
    stopped = False
    for j, (f, seed, strategy) in enumerate(plan, 1):
        n = _budget(n_pool, k, f)
        cell_id = _cell_id(strategy, f, seed)
        key = stable_hash(
            {
                "format": CELL_FORMAT,
                "data": study.fingerprints,
                "strategy": strategy,
                "fraction": f,
                "seed": seed,
                "n": n,
                "val_fraction": cfg.val_fraction,
                "settings": study.settings(strategy),
            }
        )
        path = out / "cells" / f"{cell_id}.json"
        done = _read_cell(path, key)
        if done is not None:
            cells.append(done)
            reused.append(cell_id)
            continue
        if max_new_cells is not None and len(computed) >= max_new_cells:
            stopped = True  # keep scanning: later finished cells still count in the summary
            continue
        tr, va = _cell_split(study.pool, n, seed, cfg.val_fraction)
        if strategy in ("extract", "finetune", "auto"):
            study.features()  # once per study, not counted in the cell's time
        seed_everything(seed)
        t0 = time.perf_counter()
        if strategy in ("finetune", "auto", "scratch"):
            res = getattr(study, f"run_{strategy}")(tr, va, seed, cell_id, key)
        else:
            res = getattr(study, f"run_{strategy}")(tr, va, seed)
        seconds = time.perf_counter() - t0
        cell = {
            "format": CELL_FORMAT,
            "cell": cell_id,
            "key": key,
            "strategy": strategy,
            "fraction": f,
            "seed": seed,
            "n_labelled": n,
            "n_train": len(tr),
            "n_val": len(va),
            "split": stable_hash({"train": tr, "val": va}),
            "test": short_metrics(study.test.labels, res["proba"], study.classes),
            "val_accuracy": res["val_accuracy"],
            "seconds": round(seconds, 3),
            "detail": res["detail"],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(path, cell)
        cells.append(cell)
        computed.append(cell_id)
        if progress:
            print(
                f"[{j}/{len(plan)}] {cell_id}: test accuracy {cell['test']['accuracy']:.4f} "
                f"({n:,} labels, {seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )

    return cells, computed, reused, stopped


def run_curve(
    data: str | CurveConfig,
    *,
    progress: bool = True,
    max_new_cells: int | None = None,
    command: str | None = None,
    **settings: Any,
) -> CurveResult:
    """Run (or resume) the data-efficiency study and write its folder.

    `data` is what `headstart fit` takes (a built-in name, a folder, a table) and `settings`
    are :class:`CurveConfig` fields (``fractions``, ``strategies``, ``seeds``, ``backbone``,
    ``out``, ...); or pass a ready :class:`CurveConfig`. ``max_new_cells`` stops after computing
    that many cells (run again to go on). Returns what was computed, what was reused, the
    table rows and the headline.
    """
    from .._env import machine, versions
    from ..report import plot_learning_curve, write_report
    from ..tracking import Tracker

    if isinstance(data, CurveConfig):
        if settings:
            raise ConfigError(
                "Pass either a CurveConfig or keyword settings to run_curve, not both."
            )
        cfg = data
    else:
        cfg = CurveConfig.build(data=data, **settings)
    out = Path(cfg.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    study = Study(cfg, progress)
    strategies = list(cfg.strategies)
    if "cnn" in strategies and study.modality not in ("image", "text"):
        raise ConfigError(
            f"The 'cnn' strategy is a small CNN for images or text; {cfg.data} is "
            f"{study.modality} data. Leave 'cnn' out of --strategies."
        )
    if "scratch" in strategies and study.modality in ("image", "text") and "cnn" not in strategies:
        strategies.insert(strategies.index("scratch") + 1, "cnn")
    n_pool, k = len(study.pool), len(study.classes)
    if n_pool < 2 * k:
        raise DataError(
            f"The label pool has {n_pool} examples for {k} classes; a study needs at least "
            f"2 per class. Use more data."
        )
    # Opened first, so that a missing package is reported before hours of training.
    tracker = None if cfg.track == "none" else Tracker(cfg.track, out, run_name=f"curve {cfg.data}")
    seeds = list(range(cfg.seeds))
    plan = [(f, s, st) for f in cfg.fractions for s in seeds for st in strategies]
    t_study = time.perf_counter()
    try:
        cells, computed, reused, stopped = _run_cells(study, plan, max_new_cells, progress)
    except BaseException:
        if tracker is not None:
            tracker.close()
        raise
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and not any(ckpts.iterdir()):
        ckpts.rmdir()
    rows = summarise_cells(cells, strategies)
    complete = not stopped and len(cells) == len(plan)
    text, detail = headline(rows, study.modality) if rows else ("No finished cells yet.", {})
    if not complete:
        text = f"(partial: {len(cells)} of {len(plan)} cells) " + text
    doc = {
        "format": CELL_FORMAT,
        "config": cfg.to_dict(),
        "command": command,
        "strategies": strategies,
        "fractions": cfg.fractions,
        "seeds": seeds,
        "data": {
            **study.description,
            "fingerprint": study.fingerprints,
            "pool": n_pool,
            "n_test": len(study.test),
        },
        "backbone": {"name": study.backbone_name, "weights": study.backbone.weights.source},
        "features": study.feature_info,
        "rows": rows,
        "headline": text,
        "headline_detail": detail,
        "notes": study.notes(strategies),
        "cells": {
            "total": len(plan),
            "done": len(cells),
            "computed": len(computed),
            "reused": len(reused),
        },
        "complete": complete,
        "seconds": round(time.perf_counter() - t_study, 1),
        "versions": versions(),
        "machine": machine(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    atomic_write_json(out / "curve.json", doc)
    if rows:
        atomic_write_bytes(
            out / "curve.png",
            plot_learning_curve(
                cast(list[CurveRow], rows), f"{cfg.data}: {study.backbone_name}", study.modality
            ),
        )
    md = [
        f"# Data efficiency: {cfg.data}",
        "",
        text,
        "",
        "Test accuracy (%), mean ± std over "
        f"{cfg.seeds} seed(s), {len(study.test):,} test examples.",
        "",
        text_table(rows, markdown=True, modality=study.modality) if rows else "",
        "",
    ]
    atomic_write_bytes(out / "results.md", "\n".join(md).encode())
    report = write_report(out)
    if tracker is not None:
        with tracker:
            tracker.log_params({k: v for k, v in cfg.to_dict().items() if v is not None})
            for r in rows:
                tracker.log_metrics(
                    {
                        f"{r['strategy']}/test_accuracy": r["accuracy_mean"],
                        f"{r['strategy']}/test_accuracy_std": r["accuracy_std"],
                        f"{r['strategy']}/macro_f1": r["macro_f1_mean"],
                    },
                    step=r["n_labelled"],
                )
    return CurveResult(
        out,
        rows,
        text,
        computed,
        reused,
        complete,
        report,
        total=len(plan),
        modality=study.modality,
    )
