"""`headstart fit` as a function: data → backbone → features → head → (fine-tuning) → bundle.

The run folder gets ``config.json`` (resolved config, versions, data fingerprint),
``metrics.json``, ``decisions.json`` (what the ladder measured and why it went on or
stopped), ``model/`` and ``checkpoints/``. Every file is written atomically; re-running the
same command into the same folder reuses the feature cache and resumes fine-tuning from its
last finished epoch.
"""

from __future__ import annotations

import copy
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
PROBE_SIZE = 256


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
        cfg.data,
        text_column=cfg.text_column,
        image_column=cfg.image_column,
        label_column=cfg.label_column,
        val=cfg.val,
        test=cfg.test,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        on_error="skip" if cfg.on_error == "skip" else "raise",
    )


def _is_main() -> bool:
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # pragma: no cover - accelerate always installed
        return True


class _Run:
    """State shared by the steps of one fit."""

    def __init__(self, cfg: FitConfig, progress: bool) -> None:
        self.cfg = cfg
        self.progress = progress
        self.t_start = time.perf_counter()
        self.out = Path(cfg.out)
        self.main = _is_main()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def features(
        self, backbone: Any, ex: Examples, fingerprint: str
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from .extract import extract_features

        fs = extract_features(
            backbone,
            ex,
            batch_size=self.cfg.batch_size,
            engine=self.cfg.engine,
            cache_dir=self.cfg.cache_dir,
            progress=self.progress and self.main,
            fingerprint=fingerprint,
        )
        info = {
            "n": fs.n,
            "engine": fs.engine,
            "seconds": round(fs.seconds, 3),
            "cached": fs.computed_shards == 0,
            "cache_key": fs.key,
        }
        if fs.seconds > 0:
            info["examples_per_s"] = round(
                fs.n
                * fs.computed_shards
                / max(1, fs.computed_shards + fs.cached_shards)
                / fs.seconds,
                1,
            )
        return fs.load(), info


def fit_run(cfg: FitConfig, *, progress: bool = True) -> RunResult:
    """Run one fit as configured and write its run folder."""
    from .backbones.registry import load_backbone
    from .estimator import TransferClassifier
    from .metrics import classification_metrics

    run = _Run(cfg, progress)
    seed_everything(cfg.seed)
    run.out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg)
    modality = splits.train.modality
    backbone_choice: dict[str, Any] | None = None
    if cfg.backbone == "auto":
        backbone_name, backbone_choice = _choose_backbone(cfg, splits, progress)
    else:
        backbone_name = cfg.backbone
    backbone = load_backbone(
        backbone_name,
        pretrained=cfg.pretrained,
        image_size=cfg.image_size,
        max_length=cfg.max_length,
    )
    backbone.eval()
    fingerprints = {k: v for k, v in splits.fingerprint().items() if v is not None}
    config_doc = {
        "config": cfg.to_dict(),
        "resolved": {"backbone": backbone.describe(), "modality": modality},
        "data": {**splits.description, "fingerprint": fingerprints, "classes": splits.classes},
        "versions": versions(),
        "machine": machine(),
    }
    if run.main:
        atomic_write_json(run.out / "config.json", config_doc)

    # 1. Features: one cache entry per split, so a new head (or test set) reuses the rest.
    t0 = time.perf_counter()
    feats: dict[str, np.ndarray] = {}
    extraction: dict[str, Any] = {}
    parts: list[tuple[str, Examples]] = [("train", splits.train), ("val", splits.val)]
    if splits.test is not None:
        parts.append(("test", splits.test))
    for name, ex in parts:
        feats[name], extraction[name] = run.features(backbone, ex, fingerprints[name])
    t_feat = time.perf_counter() - t0

    # 2. Linear probe: hyper-parameters chosen on val, scored on val.
    t0 = time.perf_counter()
    probe = TransferClassifier(
        backbone=backbone_name,
        head=cfg.head,
        pretrained=cfg.pretrained,
        image_size=cfg.image_size,
        max_length=cfg.max_length,
        engine=cfg.engine,
        batch_size=cfg.batch_size,
        cache_dir=cfg.cache_dir,
        random_state=cfg.seed,
        head_params={"refit": False} if cfg.head == "logistic" else None,
    )
    probe.fit_features(
        feats["train"],
        splits.train.labels,
        splits.classes,
        F_val=feats["val"],
        y_val=splits.val.labels,
        backbone=backbone,
    )
    val_proba = probe.head_.predict_proba(feats["val"])
    lp_val = classification_metrics(splits.val.labels, val_proba, splits.classes)
    selection = _selection_info(probe.head_)
    t_head = time.perf_counter() - t0

    from .ladder import LadderConfig, Rung

    rungs = [
        Rung(
            0,
            lp_val["accuracy"],
            t_feat + t_head,
            {"val": _short(lp_val), "head_selection": selection},
        )
    ]
    decisions: dict[str, Any] = {"strategy": cfg.strategy, "rungs": [], "reasons": []}
    if backbone_choice is not None:
        decisions["backbone"] = backbone_choice
        decisions["reasons"].append(backbone_choice["reason"])
    chosen = 0
    tuned: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
    if cfg.strategy != "extract":
        ladder = LadderConfig.from_overrides(cfg.ladder)
        decisions["ladder"] = ladder.to_dict()
        curve = _learning_curve(feats, splits, cfg) if cfg.strategy == "auto" else None
        if curve is not None:
            decisions["learning_curve"] = curve
        chosen, tuned = _climb(run, backbone, probe, splits, feats, rungs, decisions, ladder, curve)

    # 3. The final model, scored on test.
    metrics: dict[str, Any] = {
        "backbone": backbone_name,
        "head": cfg.head,
        "train_size": len(splits.train) + len(splits.val),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test) if splits.test is not None else 0,
        "head_selection": selection,
    }
    if chosen == 0:
        clf = probe
        if cfg.head == "logistic":  # refit on train+val with the chosen C
            clf.head_params = {"C": float(probe.head_.C_), "refit": False}
            clf.fit_features(
                np.concatenate([feats["train"], feats["val"]]),
                np.concatenate([splits.train.labels, splits.val.labels]),
                splits.classes,
                backbone=backbone,
            )
        clf.strategy_ = "extract"
        metrics["val"] = lp_val
        if splits.test is not None:
            test_proba = clf.head_.predict_proba(feats["test"])
            metrics["test"] = classification_metrics(splits.test.labels, test_proba, splits.classes)
    else:
        clf, val_m, detail = tuned[chosen]
        metrics["val"] = val_m
        metrics["finetune"] = detail
        if splits.test is not None:
            Ft, extraction["test_tuned"] = run.features(
                clf.backbone_, splits.test, fingerprints["test"]
            )
            test_proba = clf.head_.predict_proba(Ft)
            metrics["test"] = classification_metrics(splits.test.labels, test_proba, splits.classes)
            # the probe's test score beside it (reported only; nothing is chosen on test)
            metrics["extract_test"] = classification_metrics(
                splits.test.labels, probe.head_.predict_proba(feats["test"]), splits.classes
            )
    metrics["strategy"] = clf.strategy_
    if (chosen and cfg.strategy == "auto") or len(rungs) > 1:
        metrics["extract_val"] = lp_val
    if cfg.baseline:
        metrics["baseline"] = _baseline(splits)
    metrics["timings"] = {
        "features_s": round(t_feat, 3),
        "head_s": round(t_head, 3),
        "total_s": round(run.elapsed(), 3),
    }
    metrics["extraction"] = extraction
    decisions["chosen"] = rungs[[r.unfreeze for r in rungs].index(chosen)].label
    decisions["rungs"] = [
        {
            "unfreeze": r.unfreeze,
            "label": r.label,
            "val_accuracy": r.val_accuracy,
            "seconds": round(r.seconds, 2),
            **r.detail,
        }
        for r in rungs
    ]
    if run.main:
        clf.save(run.out / "model")
        atomic_write_json(run.out / "metrics.json", metrics)
        atomic_write_json(run.out / "decisions.json", decisions)
        _write_report(run.out, splits, test_proba if splits.test is not None else None)
        if cfg.track != "none":
            from .tracking import log_run

            where = log_run(run.out, cfg.track)
            log.info("logged the run to %s (%s)", where, cfg.track)
    return RunResult(run.out, metrics, config_doc, summarise(metrics, decisions))


def _choose_backbone(cfg: FitConfig, splits: Splits, progress: bool) -> tuple[str, dict[str, Any]]:
    """``--backbone auto``: rank the installed candidates on a sample of the training split.

    The features of the sample go through the same cache as the fit, so the chosen backbone's
    sample is not extracted twice. With one candidate (or none installed, or
    ``--no-pretrained``, where ranking random weights means nothing) the modality's default
    is used, and the reason says so.
    """
    from .backbones.registry import DEFAULT_BACKBONE, load_backbone
    from .rank import candidates, rank_backbones

    modality = splits.train.modality
    default = DEFAULT_BACKBONE[modality]
    names = candidates(modality) if cfg.pretrained else []
    if len(names) < 2:
        why = (
            "random initialisation: nothing to rank"
            if not cfg.pretrained
            else f"{len(names)} {modality} backbone(s) installed: nothing to rank"
        )
        name = names[0] if names else default
        return name, {"chosen": name, "reason": f"backbone {name} ({why})", "table": None}
    items: list[Any] = list(names)
    if cfg.image_size or cfg.max_length:  # rank what the fit will use
        items = [
            load_backbone(n, image_size=cfg.image_size, max_length=cfg.max_length) for n in names
        ]
    table = rank_backbones(
        splits.train,
        items,
        sample=cfg.rank_sample,
        seed=cfg.seed,
        cache_dir=cfg.cache_dir,
        progress=progress,
        engine=cfg.engine,
        batch_size=cfg.batch_size,
        skip_failed=True,
    )
    best = table.best(cfg.backbone_budget_ms)
    budget = (
        f" within {cfg.backbone_budget_ms:g} ms per example"
        if cfg.backbone_budget_ms is not None
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


def _short(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("accuracy", "macro_f1", "log_loss") if k in m}


def _learning_curve(
    feats: dict[str, np.ndarray], splits: Splits, cfg: FitConfig
) -> dict[str, Any] | None:
    """Linear-probe validation accuracy on 25/50/100% of the training features (cached, cheap)."""
    from .data.split import stratified_subset
    from .heads import make_head

    y = splits.train.labels
    n = len(y)
    sizes = sorted({max(len(splits.classes) * 2, int(n * f)) for f in (0.25, 0.5, 1.0)})
    points = []
    for size in sizes:
        idx = np.arange(n) if size >= n else stratified_subset(y, size, seed=cfg.seed)
        head = make_head("logistic", random_state=cfg.seed, refit=False)
        head.fit(feats["train"][idx], y[idx], X_val=feats["val"], y_val=splits.val.labels)
        acc = float(np.mean(head.predict(feats["val"]) == splits.val.labels))
        points.append({"n": len(idx), "val_accuracy": acc})
    if len(points) < 2:
        return None
    a, b = points[-2], points[-1]
    slope = (b["val_accuracy"] - a["val_accuracy"]) / max(1e-9, np.log2(b["n"] / a["n"]))
    return {"points": points, "slope_per_doubling": float(slope)}


def _climb(
    run: _Run,
    pristine: Any,
    probe: Any,
    splits: Splits,
    feats: dict[str, np.ndarray],
    rungs: list[Any],
    decisions: dict[str, Any],
    ladder: Any,
    curve: dict[str, Any] | None,
) -> tuple[int, dict[int, tuple[Any, Any, dict[str, Any]]]]:
    """Fine-tuning rungs: one (strategy finetune) or as the ladder decides (auto)."""
    from .ladder import Decision, Rung, choose, next_step

    cfg = run.cfg
    n_groups = len(pristine.layer_groups())
    counts = splits.train.class_counts() + splits.val.class_counts()
    tuned: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
    while True:
        if cfg.strategy == "finetune":
            k = n_groups if cfg.unfreeze == -1 else min(cfg.unfreeze, n_groups)
            decision = (
                Decision("finetune", k, f"strategy finetune: the top {k} of {n_groups} groups")
                if len(rungs) == 1
                else Decision("stop", 0, "strategy finetune: one rung")
            )
        else:
            left = None if cfg.time_budget_s is None else cfg.time_budget_s - run.elapsed()
            decision = next_step(
                rungs,
                n_labelled=int(counts.sum()),
                min_class_count=int(counts.min()),
                n_classes=len(splits.classes),
                n_groups=n_groups,
                n_val=len(splits.val),
                cfg=ladder,
                time_left_s=left,
                curve_slope=curve["slope_per_doubling"] if curve else None,
            )
        decisions["reasons"].append(decision.reason)
        log.warning("ladder: %s", decision.reason) if run.progress and run.main else None
        if decision.action != "finetune":
            break
        clf, val_m, detail, seconds = _finetune_rung(
            run, pristine, probe, splits, feats, decision.unfreeze
        )
        tuned[decision.unfreeze] = (clf, val_m, detail)
        rungs.append(
            Rung(
                decision.unfreeze,
                val_m["accuracy"],
                seconds,
                {
                    "val": _short(val_m),
                    **{
                        k: detail[k]
                        for k in (
                            "unfrozen",
                            "n_trainable",
                            "lrs",
                            "best_epoch",
                            "epochs_run",
                            "stopped",
                            "examples_per_s",
                            "forgetting",
                            "guard",
                            "history",
                        )
                    },
                },
            )
        )
    if cfg.strategy == "finetune" and len(rungs) > 1:
        best = rungs[-1]  # the user asked for fine-tuning: report it, extraction sits beside it
    else:
        best, why = choose(rungs, n_val=len(splits.val), cfg=ladder)
        if why:
            decisions["reasons"].append(why)
            log.warning("ladder: %s", why)
    return best.unfreeze, tuned


def _finetune_rung(
    run: _Run, pristine: Any, probe: Any, splits: Splits, feats: dict[str, np.ndarray], k: int
) -> tuple[Any, dict[str, Any], dict[str, Any], float]:
    from .estimator import TransferClassifier
    from .finetune import finetune
    from .forgetting import classifier_agreement, linear_cka, source_forgetting, weight_drift
    from .metrics import classification_metrics

    cfg = run.cfg
    t0 = time.perf_counter()
    backbone = copy.deepcopy(pristine)  # every rung starts from the pretrained weights
    head_est = copy.deepcopy(probe.head_)
    reference = {n: p.detach().clone() for n, p in pristine.named_parameters()}
    ft_cfg = cfg.finetune_config(unfreeze=k)
    ft_cfg.time_budget_s = (
        None if cfg.time_budget_s is None else max(1.0, cfg.time_budget_s - run.elapsed())
    )
    model, res = finetune(
        backbone,
        head_est.to_torch(),
        splits.train,
        splits.val,
        ft_cfg,
        checkpoint=run.out / "checkpoints" / f"rung-{k}.pt",
        progress=run.progress and run.main,
    )
    backbone.mark_tuned()
    head_est.load_torch(model.head)
    clf = TransferClassifier(
        backbone=pristine.name,
        head=cfg.head,
        pretrained=cfg.pretrained,
        image_size=cfg.image_size,
        max_length=cfg.max_length,
        engine=cfg.engine,
        batch_size=cfg.batch_size,
        cache_dir=cfg.cache_dir,
        random_state=cfg.seed,
    )
    clf.backbone_, clf.head_ = backbone, head_est
    clf.classes_ = np.array(splits.classes)
    clf.modality_ = splits.train.modality
    clf.strategy_ = "finetune"
    clf.tuned_state_ = {
        key[len("backbone.") :]: v
        for key, v in res.tuned_state.items()
        if key.startswith("backbone.")
    }
    Fv, _ = run.features(backbone, splits.val, splits.val.fingerprint())
    val_m = classification_metrics(splits.val.labels, head_est.predict_proba(Fv), splits.classes)
    # Forgetting: pretrained vs tuned features of the same probe examples.
    p = min(PROBE_SIZE, len(splits.val))
    before, after = feats["val"][:p], Fv[:p]
    forgetting: dict[str, Any] = {
        "probe_size": p,
        "cka": linear_cka(before, after),
        "weight_drift": {
            g: round(v, 6)
            for g, v in weight_drift(backbone, reference, backbone.layer_groups()).items()
        },
    }
    agree = classifier_agreement(pristine, before, after)
    if agree is not None:
        forgetting["source_top1_agreement"] = agree
    if pristine.modality == "image":
        forgetting.update(source_forgetting(pristine, backbone))
    detail = {**res.to_dict(), "forgetting": forgetting, "val_metrics": _short(val_m)}
    return clf, val_m, detail, time.perf_counter() - t0


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
    lines.append(
        f"  time: features {t['features_s']:.1f} s{' (cached)' if cached else ''}, "
        f"head {t['head_s']:.1f} s, total {t['total_s']:.1f} s"
    )
    return "\n".join(lines)
