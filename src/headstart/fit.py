"""`headstart fit` as a function: load the data, pick the backbone, fit, write the run folder.

The model itself is fitted by :class:`~headstart.TransferClassifier` (which runs the
strategy: extraction, fine-tuning or the ladder); this module only reads the splits, chooses
the backbone (``--backbone auto``), scores the test split and writes ``config.json``
(resolved config, versions, data fingerprint), ``metrics.json``, ``decisions.json`` (what
the ladder measured and why it went on or stopped), ``model/``, ``report.html`` and
``errors.json``. Every file is written atomically; re-running the same command into the
same folder reuses the feature cache and resumes fine-tuning from its last finished epoch.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._env import machine, versions
from ._io import atomic_write_json
from .config import FitConfig
from .data.base import Splits

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

    d = cfg.data
    return load_data(
        d.data,
        text_column=d.text_column,
        image_column=d.image_column,
        label_column=d.label_column,
        val=d.val,
        test=d.test,
        train_size=d.train_size,
        test_size=d.test_size,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=cfg.seed,
        on_error="skip" if d.skip_bad_files else "raise",
    )


def _is_main() -> bool:
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # pragma: no cover - accelerate always installed
        return True


def _extraction_by_split(log_: list[dict[str, Any]], splits: Splits) -> dict[str, Any]:
    """``metrics.json``'s ``extraction``: one entry per split (``*_tuned`` for the tuned backbone)."""
    roles = {splits.train.name: "train", splits.val.name: "val"}
    if splits.test is not None:
        roles[splits.test.name] = "test"
    out: dict[str, Any] = {}
    for e in log_:
        role = roles.get(e["examples"], e["examples"])
        key = role if e["backbone"] == "pretrained" else f"{role}_tuned"
        out[key] = {k: v for k, v in e.items() if k not in ("examples", "backbone")}
    return out


def fit_run(cfg: FitConfig, *, progress: bool = True) -> RunResult:
    """Run one fit as configured and write its run folder."""
    from .backbones.registry import load_backbone
    from .estimator import TransferClassifier
    from .metrics import classification_metrics

    t_start = time.perf_counter()
    main = _is_main()
    out = Path(cfg.run_dir)
    seed_everything(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg)
    modality = splits.train.modality
    bb = cfg.backbone
    backbone_choice: dict[str, Any] | None = None
    if bb.backbone == "auto":
        backbone_name, backbone_choice = _choose_backbone(cfg, splits, progress)
    else:
        backbone_name = bb.backbone
    backbone = load_backbone(
        backbone_name,
        pretrained=bb.pretrained,
        image_size=bb.image_size,
        max_length=bb.max_length,
    )
    backbone.eval()
    fingerprints = {k: v for k, v in splits.fingerprint().items() if v is not None}
    config_doc = {
        "config": cfg.to_dict(),
        "resolved": {"backbone": backbone.describe(), "modality": modality, "out": str(out)},
        "data": {**splits.description, "fingerprint": fingerprints, "classes": splits.classes},
        "versions": versions(),
        "machine": machine(),
    }
    if main:
        atomic_write_json(out / "config.json", config_doc)

    budget = cfg.time_budget_s
    clf = TransferClassifier(
        backbone=backbone,
        head=cfg.extract.head,
        strategy=cfg.strategy,
        finetune=cfg.finetune,
        ladder=cfg.ladder,
        time_budget_s=None
        if budget is None
        else max(1.0, budget - (time.perf_counter() - t_start)),
        pretrained=bb.pretrained,
        image_size=bb.image_size,
        max_length=bb.max_length,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        cache_dir=cfg.extract.cache_dir,
        checkpoint_dir=out / "checkpoints",
        random_state=cfg.seed,
        progress=progress and main,
    )
    clf.fit(splits.train, X_val=splits.val)
    decisions = clf.decisions_
    if backbone_choice is not None:
        decisions["backbone"] = backbone_choice
        decisions["reasons"].insert(0, backbone_choice["reason"])
    extraction = clf.extraction_
    probe_val = extraction.val_metrics
    assert probe_val is not None  # fit_run always hands over a validation split
    metrics: dict[str, Any] = {
        "backbone": backbone_name,
        "head": cfg.extract.head,
        "strategy": clf.strategy_,
        "train_size": len(splits.train) + len(splits.val),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test) if splits.test is not None else 0,
        "head_selection": extraction.detail["head_selection"],
        "val": clf.val_metrics_,
    }
    test_proba = None
    if splits.test is not None:
        test_proba = clf.predict_proba(splits.test, cache=True)
        metrics["test"] = classification_metrics(splits.test.labels, test_proba, splits.classes)
    if clf.unfrozen_:
        metrics["finetune"] = clf.finetune_detail_
        metrics["extract_val"] = probe_val
        if splits.test is not None:
            # the probe's test score beside it (reported only; nothing is chosen on test)
            F = clf.features(splits.test, backbone=extraction.backbone, cache=True)
            metrics["extract_test"] = classification_metrics(
                splits.test.labels, extraction.probe.predict_proba(F), splits.classes
            )
    elif len(decisions["rungs"]) > 1:
        metrics["extract_val"] = probe_val
    if cfg.baseline:
        metrics["baseline"] = _baseline(splits)
    rung0 = decisions["rungs"][0]
    pretrained_s = sum(e["seconds"] for e in clf.extraction_log_ if e["backbone"] == "pretrained")
    metrics["timings"] = {
        "features_s": round(pretrained_s, 3),
        "head_s": round(max(0.0, rung0["seconds"] - pretrained_s), 3),
        "finetune_s": round(sum(r["seconds"] for r in decisions["rungs"][1:]), 3),
        "total_s": round(time.perf_counter() - t_start, 3),
    }
    metrics["extraction"] = _extraction_by_split(clf.extraction_log_, splits)
    if main:
        _drop_discarded_checkpoints(out / "checkpoints", clf.unfrozen_)
        clf.save(out / "model")
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_json(out / "decisions.json", decisions)
        _write_report(out, splits, test_proba)
        if cfg.track != "none":
            from .tracking import log_run

            where = log_run(out, cfg.track)
            log.info("logged the run to %s (%s)", where, cfg.track)
    return RunResult(out, metrics, config_doc, summarise(metrics, decisions))


def _drop_discarded_checkpoints(folder: Path, kept: int) -> None:
    """The run is written: only the kept rung's checkpoint can still matter (a re-run resumes
    into it); discarded rungs' checkpoints would only fill the disk."""
    if not folder.is_dir():
        return
    for ckpt in folder.glob("rung-*.pt"):
        if ckpt.name != f"rung-{kept}.pt":
            ckpt.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def _choose_backbone(cfg: FitConfig, splits: Splits, progress: bool) -> tuple[str, dict[str, Any]]:
    """``--backbone auto``: rank the installed candidates on a sample of the training split.

    The features of the sample go through the same cache as the fit, so the chosen backbone's
    sample is not extracted twice. With one candidate (or none installed, or
    ``--no-pretrained``, where ranking random weights means nothing) the modality's default
    is used, and the reason says so.
    """
    from .backbones.registry import DEFAULT_BACKBONE, load_backbone
    from .selection.rank import candidates, rank_backbones

    bb = cfg.backbone
    modality = splits.train.modality
    default = DEFAULT_BACKBONE[modality]
    names = candidates(modality) if bb.pretrained else []
    if len(names) < 2:
        why = (
            "random initialisation: nothing to rank"
            if not bb.pretrained
            else f"{len(names)} {modality} backbone(s) installed: nothing to rank"
        )
        name = names[0] if names else default
        return name, {"chosen": name, "reason": f"backbone {name} ({why})", "table": None}
    items: list[Any] = list(names)
    if bb.image_size or bb.max_length:  # rank what the fit will use
        items = [
            load_backbone(n, image_size=bb.image_size, max_length=bb.max_length) for n in names
        ]
    table = rank_backbones(
        splits.train,
        items,
        sample=bb.rank_sample,
        seed=cfg.seed,
        cache_dir=cfg.extract.cache_dir,
        progress=progress,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        skip_failed=True,
    )
    best = table.best(bb.backbone_budget_ms)
    budget = (
        f" within {bb.backbone_budget_ms:g} ms per example"
        if bb.backbone_budget_ms is not None
        else ""
    )
    reason = (
        f"backbone {best.name}: ranked first{budget} of {len(table.rows)} installed {modality} "
        f"backbones by {table.primary} on {table.n} training examples"
    )
    return best.name, {"chosen": best.name, "reason": reason, "table": table.to_dict()}


def _write_report(out: Path, splits: Splits, test_proba: np.ndarray | None) -> None:
    """errors.json and report.html; a plotting failure is logged, never loses the run."""
    from .report import save_errors, write_report

    try:
        if splits.test is not None and test_proba is not None:
            save_errors(out, splits.test, splits.test.labels, test_proba)
        write_report(out)
    except Exception as exc:  # the model and metrics are already written
        log.warning(
            "could not write %s: %s (the model and metrics are saved; "
            "`headstart report %s` retries)",
            out / "report.html",
            exc,
            out,
        )


def _baseline(splits: Splits) -> dict[str, Any]:
    from .baselines import fit_baseline
    from .metrics import classification_metrics

    t0 = time.perf_counter()
    base = fit_baseline(splits.train, splits.val)
    res: dict[str, Any] = {"name": base.name}
    res["val"] = classification_metrics(
        splits.val.labels, base.predict_proba(splits.val), splits.classes
    )
    if splits.test is not None:
        res["test"] = classification_metrics(
            splits.test.labels, base.predict_proba(splits.test), splits.classes
        )
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def summarise(metrics: dict[str, Any], decisions: dict[str, Any] | None = None) -> str:
    split = "test" if "test" in metrics else "val"
    m = metrics[split]
    lines = []
    for reason in (decisions or {}).get("reasons", []):
        lines.append(f"- {reason}")
    lines += [
        f"{metrics['strategy']} with {metrics['backbone']} + {metrics['head']} head, "
        f"{metrics['train_size']} labelled examples ({metrics['n_train']} train / {metrics['n_val']} val)",
        f"  {split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}"
        + (f" on {metrics['n_test']} examples" if split == "test" else ""),
    ]
    if "baseline" in metrics and split in metrics["baseline"]:
        b = metrics["baseline"][split]
        delta = m["accuracy"] - b["accuracy"]
        lines.append(
            f"  baseline ({metrics['baseline']['name']}, no transfer): accuracy "
            f"{b['accuracy']:.4f} ({delta:+.4f} for transfer)"
        )
    if split == "test" and "extract_test" in metrics:
        e = metrics["extract_test"]["accuracy"]
        lines.append(
            f"  feature extraction alone (the linear probe, train split only): accuracy "
            f"{e:.4f} ({m['accuracy'] - e:+.4f} for fine-tuning)"
        )
    ft = metrics.get("finetune")
    if ft:
        f = ft["forgetting"]
        extra = (
            f", ImageNet top-1 agreement {f['source_top1_agreement']:.2f}"
            if "source_top1_agreement" in f
            else ""
        )
        lines.append(f"  forgetting: feature CKA vs pretrained {f['cka']:.3f}{extra}")
        if "cka_source" in f:
            agree = f.get("source_top1_agreement_source")
            lines.append(
                f"  on natural photos (the source domain): CKA {f['cka_source']:.3f}"
                + (f", ImageNet top-1 agreement {agree:.2f}" if agree is not None else "")
            )
    t = metrics["timings"]
    cached = all(e["cached"] for e in metrics["extraction"].values())
    tuning = f"fine-tuning {t['finetune_s']:.1f} s, " if t.get("finetune_s") else ""
    lines.append(
        f"  time: features {t['features_s']:.1f} s{' (cached)' if cached else ''}, "
        f"head {t['head_s']:.1f} s, {tuning}total {t['total_s']:.1f} s"
    )
    return "\n".join(lines)
