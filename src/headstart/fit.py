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

import contextlib
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._env import machine, versions
from ._io import atomic_write_json
from .config import FitConfig
from .data.base import Examples, Splits
from .preflight import check_fit_config
from .tracking import finish_run, start_run

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
        test_size=d.test_size if isinstance(d.test_size, int) else None,
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
    """Run one fit as configured, within its time budget, and write its run folder."""
    from .backbones.sizing import load_sized, native_size
    from .estimator import TransferClassifier
    from .metrics import classification_metrics
    from .plan import Budget, Step, measured_ms
    from .selection.budgeted import choose_within_budget, probe_speed

    t_start = time.perf_counter()
    budget = Budget(cfg.time_budget_s, started=t_start)
    main = _is_main()
    check_fit_config(cfg)
    out = Path(cfg.run_dir)
    seed_everything(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg)
    budget.add(Step("load data", "ran", splits.train.name, seconds=round(budget.spent(), 2)))
    modality = splits.train.modality
    native = native_size(splits.train)
    bb = cfg.backbone
    backbone_choice: dict[str, Any] | None = None
    t0 = time.perf_counter()
    if bb.backbone == "auto":
        backbone_name, backbone_choice = choose_within_budget(cfg, splits, progress, budget, native)
        if backbone_choice.get("max_length"):
            # the window the budget affords, as ranked (the run records it as resolved)
            bb = replace(bb, max_length=backbone_choice["max_length"])
    else:
        backbone_name = bb.backbone
    t0 = time.perf_counter()
    backbone, image_size = load_sized(backbone_name, bb, native)
    backbone.eval()
    ms = (backbone_choice or {}).get("ms_per_example") or probe_speed(backbone, cfg, splits)
    budget.add(
        Step(
            "backbone",
            "ran",
            f"{backbone.name}"
            + (f" at {image_size} px (native {native} px)" if image_size else "")
            + f", {ms:.1f} ms per example here",
            seconds=round(time.perf_counter() - t0, 2),
        )
    )
    full_test = splits.test
    splits.test, test_note = _plan_test(cfg, full_test, ms, budget.total_s)
    fingerprints = {k: v for k, v in splits.fingerprint().items() if v is not None}
    config_doc = {
        "config": cfg.to_dict(),
        "resolved": {
            "backbone": backbone.describe(),
            "modality": modality,
            "out": str(out),
            "image_size": image_size,
            "native_size": native,
            "n_test": len(splits.test) if splits.test is not None else 0,
        },
        "data": {**splits.description, "fingerprint": fingerprints, "classes": splits.classes},
        "versions": versions(),
        "machine": machine(),
    }
    if main:
        atomic_write_json(out / "config.json", config_doc)
    # the tracker starts with the run: epochs and rungs are logged as they finish
    tracker = start_run(cfg.track, out, cfg.to_dict()) if main else None

    # time kept for what follows the fit: the test split (at the speed the fit measures),
    # the baseline and the run folder
    n_test = len(splits.test) if splits.test is not None else 0
    clf_budget = budget.left() - TAIL_S
    clf = TransferClassifier(
        backbone=backbone,
        head=cfg.extract.head,
        strategy=cfg.strategy,
        finetune=cfg.finetune,
        ladder=cfg.ladder,
        time_budget_s=max(1.0, clf_budget) if math.isfinite(clf_budget) else None,
        pretrained=bb.pretrained,
        image_size=image_size,
        max_length=bb.max_length,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        cache_dir=cfg.extract.cache_dir,
        checkpoint_dir=out / "checkpoints",
        score_reserve=n_test,
        random_state=cfg.seed,
        progress=progress and main,
    )
    t0 = time.perf_counter()
    with tracker.listening() if tracker is not None else contextlib.nullcontext():
        clf.fit(splits.train, X_val=splits.val)
    fit_s = time.perf_counter() - t0
    decisions = clf.decisions_
    measured = measured_ms([e for e in clf.extraction_log_ if e["backbone"] == "pretrained"])
    if full_test is not None and (measured is not None or test_note is not None):
        # plan again with what is known now: the speed the fit's own extraction measured
        # (better than the probe's), and the time actually left, all of which the test split
        # may use now that training is over
        ms = measured if measured is not None else ms
        planned_test = splits.test
        splits.test, test_note = _plan_test(
            cfg, full_test, ms, budget.total_s, budget.left() - TAIL_S, share=1.0
        )
        if splits.test is not None and len(splits.test) != len(planned_test or ()):
            # config.json records the test split actually scored (hashed once more only here)
            fingerprints["test"] = splits.test.fingerprint()
    if test_note is not None:
        log.info("test split: %s", test_note["reason"])
        budget.add(
            Step("test split", "reduced", test_note["reason"],
                 estimated_s=round(test_note["of"] * ms / 1000, 1), flag="--test-size all")
        )  # fmt: skip
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
    t0 = time.perf_counter()
    if splits.test is not None:
        test_proba = clf.predict_proba(splits.test, cache=True)
        metrics["test"] = classification_metrics(splits.test.labels, test_proba, splits.classes)
        acc = metrics["test"]["accuracy"]
        metrics["test"]["accuracy_se"] = math.sqrt(acc * (1 - acc) / len(splits.test))
        if test_note is not None:
            metrics["test_subset"] = test_note
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
    contest = getattr(clf, "contest_", None)
    metrics["predictor"] = clf.predictor_
    if contest is not None:
        metrics["contender"] = contest.to_dict()
        if contest.chosen != "transfer" and splits.test is not None:
            # what transfer alone scored beside the kept baseline / stack (reported only)
            metrics["transfer_test"] = classification_metrics(
                splits.test.labels, clf.transfer_proba(splits.test, cache=True), splits.classes
            )
    test_s = time.perf_counter() - t0
    if cfg.baseline:
        metrics["baseline"] = _baseline(splits, None if contest is None else contest.baseline)
    rung0 = decisions["rungs"][0]
    pretrained_s = sum(e["seconds"] for e in clf.extraction_log_ if e["backbone"] == "pretrained")
    metrics["timings"] = {
        "features_s": round(pretrained_s, 3),
        "head_s": round(max(0.0, rung0["seconds"] - pretrained_s), 3),
        "finetune_s": round(sum(r["seconds"] for r in decisions["rungs"][1:]), 3),
        "total_s": round(time.perf_counter() - t_start, 3),
    }
    metrics["extraction"] = _extraction_by_split(clf.extraction_log_, splits)
    _record_steps(budget, decisions, metrics, fit_s=fit_s, test_s=test_s)
    if main:
        t0 = time.perf_counter()
        _drop_discarded_checkpoints(out / "checkpoints", clf.unfrozen_)
        clf.save(out / "model", self_contained=cfg.self_contained or None)
        budget.add(Step("save model", "ran", "model/", seconds=round(time.perf_counter() - t0, 2)))
        metrics["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
        if math.isfinite(cfg.time_budget_s):
            metrics["time_budget_s"] = cfg.time_budget_s
        decisions["steps"] = metrics["steps"] = [st.to_dict() for st in budget.steps]
        config_doc["resolved"]["n_test"] = metrics["n_test"]
        atomic_write_json(out / "config.json", config_doc)
        decisions["budget"] = {
            # null: no limit (standard JSON has no Infinity)
            "time_budget_s": cfg.time_budget_s if math.isfinite(cfg.time_budget_s) else None,
            "wall_s": metrics["timings"]["total_s"],
        }
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_json(out / "decisions.json", decisions)
        _write_report(out, splits, test_proba)
        if tracker is not None:
            where = finish_run(tracker, out)
            log.info("logged the run to %s (%s)", where, cfg.track)
    return RunResult(out, metrics, config_doc, summarise(metrics, decisions))


#: Seconds kept after the fit for the baseline, the bundle and the report (measured here:
#: 1-4 s on the built-in sets).
TAIL_S = 5.0


def _plan_test(
    cfg: FitConfig,
    test: Examples | None,
    ms: float,
    budget_s: float,
    time_left_s: float | None = None,
    share: float | None = None,
) -> tuple[Examples | None, dict[str, Any] | None]:
    """The test examples to score: a stated stratified subset when scoring all of them would
    dominate the budget (:func:`headstart.plan.plan_test_size`), else all of them."""
    from .data.split import stratified_subset
    from .plan import TEST_SHARE, plan_test_size

    if test is None:
        return None, None
    n_all = len(test)
    n, why = plan_test_size(
        n_all,
        ms,
        budget_s,
        requested=cfg.data.test_size,
        time_left_s=time_left_s,
        share=TEST_SHARE if share is None else share,
    )
    if why is None:
        return test, None
    # the subset `--test-size n` takes (data.load_data), so a later run can score the same one
    keep = stratified_subset(test.labels, n, cfg.seed + 2, min_per_class=1)
    note = {"n": n, "of": n_all, "reason": why, "stratified": True, "seed": cfg.seed}
    return test.subset(keep), note


def _record_steps(
    budget: Any, decisions: dict[str, Any], metrics: dict[str, Any], *, fit_s: float, test_s: float
) -> None:
    """Time per step, and the rungs the cost model refused, into the budget's step list."""
    from .plan import Step, budget_flag

    t = metrics["timings"]
    budget.add(
        Step("features + head", "ran", "extraction of train and validation, the head",
             seconds=round(t["features_s"] + t["head_s"], 2))
    )  # fmt: skip
    for r in decisions["rungs"][1:]:
        budget.add(Step(r["label"], "ran", f"val accuracy {r['val_accuracy']:.4f}",
                        seconds=r["seconds"]))  # fmt: skip
    # What a budget that runs a skipped rung also buys: the ranking and the whole test split
    # it skipped or shrank, and the tuned backbone's own features of the test split.
    also = test_s
    for st in budget.steps:
        if st.estimated_s and st.name == "rank backbones" and st.action == "skipped":
            also += st.estimated_s
        if st.estimated_s and st.name == "test split" and st.action == "reduced":
            also += max(0.0, st.estimated_s - test_s)
    spent = budget.spent()
    for sk in decisions.get("skipped", []):
        est = sk.get("estimated_s")
        flag = sk.get("flag")
        if est is not None and flag and flag.startswith("--time-budget"):
            # what this whole run would need with the rung in it
            # (a step that needs more time left than its cost, like the CNN contender's
            # share rule, says how much in needs_s)
            new = budget_flag(spent + also + sk.get("needs_s", 1.25 * est))
            old_reason, sk["reason"] = sk["reason"], sk["reason"].replace(flag, new)
            decisions["reasons"] = [
                sk["reason"] if r == old_reason else r for r in decisions["reasons"]
            ]
            sk["flag"] = flag = new
        budget.add(Step(sk["step"], "skipped", sk["reason"], estimated_s=est,
                        expected_gain=sk.get("expected_gain"), flag=flag))  # fmt: skip
    other = fit_s - t["features_s"] - t["head_s"] - t["finetune_s"]
    contender = decisions.get("contender") or {}
    for name, secs in (contender.get("scratch_seconds") or {}).items():
        budget.add(Step(f"{name} contender", "ran", "trained from scratch", seconds=secs))
        other -= secs
    if other > 0.5:
        budget.add(Step("ladder checks", "ran", "learning curve, domain, cost probes",
                        seconds=round(other, 2)))  # fmt: skip
    if metrics.get("n_test"):
        budget.add(Step("test", "ran", f"{metrics['n_test']:,} examples", seconds=round(test_s, 2)))
    if "baseline" in metrics:
        b = metrics["baseline"]
        budget.add(Step("baseline", "ran", b["name"], seconds=b["seconds"]))


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


def _write_report(out: Path, splits: Splits, test_proba: np.ndarray | None) -> None:
    """model/MODEL_CARD.md, errors.json and report.html; a failure is logged, never loses
    the run."""
    from .report import save_errors, write_model_card, write_report

    try:
        write_model_card(out)  # reads the metrics and bundle just written
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


def _baseline(splits: Splits, fitted: Any = None) -> dict[str, Any]:
    """The baseline's scores; ``fitted``: the one ``auto``'s contest already fitted on the
    same splits (not fitted again)."""
    from .baselines import fit_baseline
    from .metrics import classification_metrics

    t0 = time.perf_counter()
    base = fitted if fitted is not None else fit_baseline(splits.train, splits.val)
    res: dict[str, Any] = {"name": base.name}
    # validation: the train-only model, scored before the refit on train + val saw it
    val_proba = base.val_proba if base.val_proba is not None else base.predict_proba(splits.val)
    res["val"] = classification_metrics(splits.val.labels, val_proba, splits.classes)
    if splits.test is not None:
        res["test"] = classification_metrics(
            splits.test.labels, base.predict_proba(splits.test), splits.classes
        )
    for split in ("val", "test"):
        ex = getattr(splits, split)
        if split in res and len(ex):
            res[split]["majority_rate"] = float(np.bincount(ex.labels).max() / len(ex))
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def summarise(metrics: dict[str, Any], decisions: dict[str, Any] | None = None) -> str:
    split = "test" if "test" in metrics else "val"
    m = metrics[split]
    lines = []
    for reason in (decisions or {}).get("reasons", []):
        lines.append(f"- {reason}")
    on = ""
    if split == "test":
        sub = metrics.get("test_subset")
        on = (
            f" on a stratified subset of {sub['n']:,} of {sub['of']:,} test examples "
            "(--test-size all scores every one)"
            if sub
            else f" on {metrics['n_test']:,} examples"
        )
    se = f" ± {m['accuracy_se']:.4f} (s.e.)" if "accuracy_se" in m else ""
    predictor = metrics.get("predictor", "transfer")
    kept = {
        "baseline": f"the non-transfer baseline ({(metrics.get('contender') or {}).get('baseline')}), "
        "kept over ",
        "stack": "a stack of the baseline and ",
    }.get(predictor, "")
    lines += [
        f"{kept}{metrics['strategy']} with {metrics['backbone']} + {metrics['head']} head, "
        f"{metrics['train_size']} labelled examples ({metrics['n_train']} train / {metrics['n_val']} val)",
        f"  {split}: accuracy {m['accuracy']:.4f}{se}, macro-F1 {m['macro_f1']:.4f}{on}",
    ]
    if "baseline" in metrics and split in metrics["baseline"]:
        b = metrics["baseline"][split]
        delta = m["accuracy"] - b["accuracy"]
        lines.append(
            f"  baseline ({metrics['baseline']['name']}, no transfer): accuracy "
            f"{b['accuracy']:.4f} ({delta:+.4f} for "
            f"{'transfer' if predictor == 'transfer' else 'the kept model'})"
        )
        majority = b.get("majority_rate")
        if majority is not None and b["accuracy"] < majority:
            lines.append(
                f"  note: the baseline is below the majority-class rate ({majority:.4f}: always "
                "predicting the largest class), so it is a weak reference on this data"
            )
    if split == "test" and "transfer_test" in metrics:
        e = metrics["transfer_test"]["accuracy"]
        lines.append(
            f"  transfer alone: accuracy {e:.4f} ({m['accuracy'] - e:+.4f} for the {predictor})"
        )
    if split == "test" and "extract_test" in metrics:
        e = metrics["extract_test"]["accuracy"]
        lines.append(
            f"  feature extraction alone (the linear probe, train split only): accuracy "
            f"{e:.4f} ({m['accuracy'] - e:+.4f} for fine-tuning)"
        )
    ft = metrics.get("finetune")
    if ft and ft.get("resumed_from"):
        lines.append(
            f"  fine-tuning resumed from epoch {ft['resumed_from']} (the checkpoint of an "
            "interrupted run in this --out)"
        )
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
    steps = [st for st in metrics.get("steps", []) if st.get("seconds") is not None]
    if steps:
        per = ", ".join(f"{st['name']} {st['seconds']:.1f} s" for st in steps)
        lines.append(f"  time per step: {per}{' (features cached)' if cached else ''}")
        budget = metrics.get("time_budget_s")
        lines.append(
            f"  total {t['total_s']:.1f} s" + (f" of a {budget:g} s budget" if budget else "")
        )
    else:
        tuning = f"fine-tuning {t['finetune_s']:.1f} s, " if t.get("finetune_s") else ""
        lines.append(
            f"  time: features {t['features_s']:.1f} s{' (cached)' if cached else ''}, "
            f"head {t['head_s']:.1f} s, {tuning}total {t['total_s']:.1f} s"
        )
    return "\n".join(lines)
