"""`headstart fit` as a function: data → backbone → features → head → metrics → bundle.

The run folder gets ``config.json`` (resolved config, versions, data fingerprint),
``metrics.json``, ``model/`` and, for the ladder, ``decisions.json``. Every file is written
atomically; re-running the same command into the same folder reuses the feature cache.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._env import machine, versions
from ._io import atomic_write_json
from .config import FitConfig
from .data.base import Examples, Splits

log = logging.getLogger("headstart")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class RunResult:
    out: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    summary: str


def load_splits(cfg: FitConfig) -> Splits:
    from .data.load import load_data

    return load_data(
        cfg.data, text_column=cfg.text_column, image_column=cfg.image_column,
        label_column=cfg.label_column, val=cfg.val, test=cfg.test, train_size=cfg.train_size,
        test_size=cfg.test_size, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
        seed=cfg.seed, on_error=cfg.on_error,
    )


def fit_run(cfg: FitConfig, *, progress: bool = True) -> RunResult:
    """Run one fit as configured and write its run folder."""
    from .backbones.registry import DEFAULT_BACKBONE, load_backbone
    from .estimator import TransferClassifier
    from .extract import extract_features
    from .metrics import classification_metrics

    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg)
    modality = splits.train.modality
    backbone_name = DEFAULT_BACKBONE[modality] if cfg.backbone == "auto" else cfg.backbone
    backbone = load_backbone(backbone_name, pretrained=cfg.pretrained,
                             image_size=cfg.image_size, max_length=cfg.max_length)
    backbone.eval()
    fingerprints = splits.fingerprint()
    config_doc = {
        "config": cfg.to_dict(),
        "resolved": {"backbone": backbone.describe(), "modality": modality},
        "data": {**splits.description, "fingerprint": fingerprints, "classes": splits.classes},
        "versions": versions(),
        "machine": machine(),
    }
    atomic_write_json(out / "config.json", config_doc)

    # Features: one cache entry per split, so a new head (or a new test set) reuses the rest.
    t0 = time.perf_counter()
    feats: dict[str, np.ndarray] = {}
    extraction: dict[str, Any] = {}
    parts: list[tuple[str, Examples]] = [("train", splits.train), ("val", splits.val)]
    if splits.test is not None:
        parts.append(("test", splits.test))
    for name, ex in parts:
        fs = extract_features(backbone, ex, batch_size=cfg.batch_size, engine=cfg.engine,
                              cache_dir=cfg.cache_dir, progress=progress,
                              fingerprint=fingerprints[name])
        feats[name] = fs.load()
        extraction[name] = {"n": fs.n, "engine": fs.engine, "seconds": round(fs.seconds, 3),
                            "cached": fs.computed_shards == 0, "cache_key": fs.key}
    t_feat = time.perf_counter() - t0

    # Head: choose its hyper-parameters on val, report val, then refit on train+val.
    t0 = time.perf_counter()
    clf = TransferClassifier(backbone=backbone_name, head=cfg.head, pretrained=cfg.pretrained,
                             image_size=cfg.image_size, max_length=cfg.max_length,
                             engine=cfg.engine, batch_size=cfg.batch_size,
                             cache_dir=cfg.cache_dir, random_state=cfg.seed,
                             head_params={"refit": False} if cfg.head == "logistic" else None)
    clf.fit_features(feats["train"], splits.train.labels, splits.classes,
                     F_val=feats["val"], y_val=splits.val.labels, backbone=backbone)
    val_metrics = classification_metrics(splits.val.labels, clf.head_.predict_proba(feats["val"]), splits.classes)
    selection = _selection_info(clf.head_)
    if cfg.head == "logistic":
        clf.head_params = {"C": float(clf.head_.C_), "refit": False}
        clf.fit_features(np.concatenate([feats["train"], feats["val"]]),
                         np.concatenate([splits.train.labels, splits.val.labels]),
                         splits.classes, backbone=backbone)
    t_head = time.perf_counter() - t0
    clf.strategy_ = "extract"

    metrics: dict[str, Any] = {
        "backbone": backbone_name,
        "strategy": "extract",
        "head": cfg.head,
        "train_size": len(splits.train) + len(splits.val),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test) if splits.test is not None else 0,
        "val": val_metrics,
        "head_selection": selection,
    }
    if splits.test is not None:
        metrics["test"] = classification_metrics(splits.test.labels, clf.head_.predict_proba(feats["test"]), splits.classes)
    if cfg.baseline:
        metrics["baseline"] = _baseline(splits)
    metrics["timings"] = {"features_s": round(t_feat, 3), "head_s": round(t_head, 3),
                          "total_s": round(time.perf_counter() - t_start, 3)}
    metrics["extraction"] = extraction
    clf.save(out / "model")
    atomic_write_json(out / "metrics.json", metrics)
    return RunResult(out, metrics, config_doc, summarise(metrics))


def _selection_info(head: Any) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for attr in ("C_", "val_scores_", "n_iter_", "best_epoch_"):
        if hasattr(head, attr):
            v = getattr(head, attr)
            if isinstance(v, dict):
                v = {str(k): v2 for k, v2 in v.items()}
            info[attr.rstrip("_")] = v
    return info


def _baseline(splits: Splits) -> dict[str, Any]:
    from .baselines import fit_baseline
    from .metrics import classification_metrics

    t0 = time.perf_counter()
    base = fit_baseline(splits.train, splits.val)
    res: dict[str, Any] = {"name": base.name}
    res["val"] = classification_metrics(splits.val.labels, base.predict_proba(splits.val), splits.classes)
    if splits.test is not None:
        res["test"] = classification_metrics(splits.test.labels, base.predict_proba(splits.test), splits.classes)
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def summarise(metrics: dict[str, Any]) -> str:
    split = "test" if "test" in metrics else "val"
    m = metrics[split]
    lines = [
        f"{metrics['strategy']} with {metrics['backbone']} + {metrics['head']} head, "
        f"{metrics['train_size']} labelled examples ({metrics['n_train']} train / {metrics['n_val']} val)",
        f"  {split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}"
        + (f" on {metrics['n_test']} examples" if split == "test" else ""),
    ]
    if "baseline" in metrics and split in metrics["baseline"]:
        b = metrics["baseline"][split]
        delta = m["accuracy"] - b["accuracy"]
        lines.append(f"  baseline ({metrics['baseline']['name']}, no transfer): accuracy "
                     f"{b['accuracy']:.4f} ({delta:+.4f} for transfer)")
    t = metrics["timings"]
    cached = all(e["cached"] for e in metrics["extraction"].values())
    lines.append(f"  time: features {t['features_s']:.1f} s{' (cached)' if cached else ''}, "
                 f"head {t['head_s']:.1f} s, total {t['total_s']:.1f} s")
    return "\n".join(lines)
