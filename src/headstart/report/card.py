"""The model card: ``MODEL_CARD.md`` in a run's bundle, what a user of the model reads first.

A bundle copied to another team carries its weights and preprocessing but not the story of
how good it is and where it stops being trustworthy. :func:`model_card` writes that story
from what the fit already measured (``metrics.json``, ``config.json``, ``decisions.json``
and the bundle's ``headstart.json``): intended use, the training data (fingerprints, sizes,
class counts), test accuracy with its standard error and a 95% confidence interval beside the
no-transfer baseline, forgetting measures when layers were fine-tuned, the limits of the
evaluation, and how to load the model. Nothing is measured here; every figure is read from
the run folder, so the card and the report always agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..errors import DataError
from .schema import CONFIG_FILE, DECISIONS_FILE, METRICS_FILE

CARD_FILE = "MODEL_CARD.md"
#: z for a two-sided 95% interval.
Z95 = 1.959964
#: Below this many test examples the card warns that the figure is coarse.
SMALL_TEST = 1000
#: Per-class figures from fewer test examples than this are called unreliable.
SMALL_CLASS = 30


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``p`` measured on ``n`` examples.

    Unlike ``p ± z·s.e.`` it stays inside [0, 1] and keeps its coverage for small ``n``
    and accuracies near 1, which is exactly where small test splits sit.
    """
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _acc_row(label: str, m: dict[str, Any] | None) -> str | None:
    if not m or "accuracy" not in m:
        return None
    acc, n = float(m["accuracy"]), int(m.get("n") or 0)
    se = math.sqrt(acc * (1 - acc) / n) if n else float("nan")
    lo, hi = wilson_interval(acc, n)
    return (
        f"| {label} | {n:,} | {acc:.4f} | ± {se:.4f} | [{lo:.4f}, {hi:.4f}] | "
        f"{float(m.get('macro_f1', float('nan'))):.4f} |"
    )


def _intended_use(
    meta: dict[str, Any], config: dict[str, Any], metrics: dict[str, Any]
) -> list[str]:
    classes = [str(c) for c in meta.get("classes", [])]
    modality = meta.get("modality", "?")
    source = config.get("data", {}).get("source") or config.get("config", {}).get("data", "?")
    shown = ", ".join(f"`{c}`" for c in classes[:30]) + (" ..." if len(classes) > 30 else "")
    return [
        "## Intended use",
        "",
        f"Classifies one {modality} input into one of {len(classes)} classes: {shown}. "
        f"It was trained on `{source}` and is meant for inputs like those: the same kind of "
        f"{modality}, the same classes, the same conditions of capture or writing.",
        "",
        "Not intended for: inputs of other domains or classes outside the list (the model "
        "always answers with one of its classes, even for an input that belongs to none); "
        "decisions about people without human review.",
        "",
    ]


def _data(config: dict[str, Any]) -> list[str]:
    d = config.get("data", {})
    if not d:
        return ["## Training data", "", "No config.json in the run folder: unknown.", ""]
    out = ["## Training data", ""]
    out.append(
        f"- source: `{d.get('source', '?')}` ({d.get('kind', '?')}, {d.get('modality', '?')})"
    )
    sizes = d.get("sizes", {})
    out.append(
        f"- sizes: train {sizes.get('train', 0):,}, validation {sizes.get('val', 0):,}, "
        f"test {sizes.get('test', 0):,}"
    )
    for key, what in (("train_size", "labelled budget"), ("test_from", "test split"),
                      ("val_from", "validation split")):  # fmt: skip
        if d.get(key):
            out.append(f"- {what}: {d[key]}")
    if d.get("skipped"):
        out.append(f"- {d['skipped']} unusable examples were skipped (listed in config.json)")
    for split, fp in (d.get("fingerprint") or {}).items():
        out.append(f"- fingerprint ({split}, sha256 of contents and labels): `{fp}`")
    counts = d.get("class_counts") or {}
    splits = [s for s in ("train", "val", "test") if counts.get(s)]
    if splits:
        out += ["", "| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        for c in d.get("classes", []):
            out.append(f"| {c} | " + " | ".join(f"{counts[s].get(c, 0):,}" for s in splits) + " |")
    out.append("")
    return out


def _metrics(metrics: dict[str, Any]) -> list[str]:
    out = [
        "## Metrics",
        "",
        "Accuracy with its standard error (√(p(1−p)/n)) and a 95% Wilson confidence interval; "
        "the baseline is a model that uses nothing pretrained, trained on the same split.",
        "",
        "| model, split | n | accuracy | s.e. | 95% interval | macro-F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = metrics.get("baseline") or {}
    name = base.get("name", "baseline")
    rows = [
        _acc_row("**this model, test**", metrics.get("test")),
        _acc_row(f"baseline ({name}), test", base.get("test")),
        _acc_row("linear probe alone (before fine-tuning), test", metrics.get("extract_test")),
        _acc_row("this model, validation (used to choose it)", metrics.get("val")),
        _acc_row(f"baseline ({name}), validation", base.get("val")),
    ]
    out += [r for r in rows if r]
    test = metrics.get("test")
    if test and base.get("test"):
        delta = test["accuracy"] - base["test"]["accuracy"]
        out += ["", f"Transfer over the baseline on test: {delta:+.4f} accuracy."]
    if test and "ece" in test:
        out += ["", f"Calibration on test: expected calibration error {test['ece']:.4f}."]
    per = (test or {}).get("per_class") or {}
    if per:
        out += ["", "Per class on test:", "", "| class | precision | recall | support |",
                "|---|---:|---:|---:|"]  # fmt: skip
        for c, s in per.items():
            out.append(f"| {c} | {s['precision']:.3f} | {s['recall']:.3f} | {s['support']:,} |")
    out.append("")
    return out


def _forgetting(metrics: dict[str, Any]) -> list[str]:
    ft = metrics.get("finetune")
    if not ft:
        return []
    f = ft.get("forgetting") or {}
    out = [
        "## Forgetting (layers were fine-tuned)",
        "",
        f"Unfrozen: {', '.join(ft.get('unfrozen', [])) or '?'}; "
        f"{ft.get('n_trainable', 0):,} trainable parameters.",
        "",
    ]
    if "cka" in f:
        out.append(f"- feature CKA, pretrained vs tuned (1 = unchanged): {f['cka']:.3f} "
                   f"on {f.get('probe_size', '?')} validation examples")  # fmt: skip
    if "source_top1_agreement" in f:
        out.append(f"- original classifier's top-1 predictions unchanged: "
                   f"{_pct(f['source_top1_agreement'])}")  # fmt: skip
    if "cka_source" in f:
        out.append(f"- on natural photos (the source domain): feature CKA {f['cka_source']:.3f}")
    if "source_top1_agreement_source" in f:
        out.append(f"- on natural photos: original top-1 unchanged "
                   f"{_pct(f['source_top1_agreement_source'])}")  # fmt: skip
    out.append("")
    return out


def _limitations(metrics: dict[str, Any], config: dict[str, Any]) -> list[str]:
    out = ["## Limitations: what the evaluation cannot say", ""]
    test = metrics.get("test")
    d = config.get("data", {})
    if not test:
        out.append(
            "- No test split was scored: the figures above are validation scores, and the "
            "validation split also chose the model, so they are optimistic."
        )
    else:
        n = int(test.get("n") or 0)
        lo, hi = wilson_interval(float(test["accuracy"]), n)
        if n < SMALL_TEST:
            out.append(
                f"- The test split is small ({n:,} examples): the true accuracy lies between "
                f"{lo:.3f} and {hi:.3f} (95%); differences smaller than that are not resolved."
            )
        sub = metrics.get("test_subset")
        if sub:
            out.append(
                f"- Only a stratified subset of {sub['n']:,} of the {sub['of']:,} test "
                f"examples was scored ({sub['reason']}); `headstart evaluate` scores them all."
            )
        few = [
            c for c, s in (test.get("per_class") or {}).items() if s.get("support", 0) < SMALL_CLASS
        ]
        if few:
            out.append(
                f"- {len(few)} class(es) have fewer than {SMALL_CLASS} test examples "
                f"({', '.join(few[:8])}): their per-class figures are unreliable."
            )
    where = d.get("test_from", "")
    out.append(
        f"- The test data comes from the same source as the training data ({where or 'see above'}): "
        "it says nothing about other domains (other cameras, sites, writers, languages, time "
        "periods). Measure on your own data with `headstart evaluate MODEL DATA`."
    )
    base = (metrics.get("baseline") or {}).get("test")
    if test and base and base["accuracy"] >= test["accuracy"]:
        out.append(
            "- The no-transfer baseline scores as well or better on test: the pretrained "
            "backbone brings nothing measurable on this data."
        )
    out.append(
        "- Accuracy counts every mistake alike; if some confusions cost more, read the "
        "per-class figures and the confusion matrix in report.html."
    )
    out.append("")
    return out


def _loading(bundle: str, modality: str) -> list[str]:
    example = (
        '["a first text", "a second text"]'
        if modality == "text"
        else '["photo1.jpg", "photo2.jpg"]'
    )
    return [
        "## How to load it",
        "",
        "```bash",
        f"headstart predict {bundle} table.csv --output predictions.csv   # or files, a folder, texts",
        f"headstart export {bundle} --format onnx --out model.onnx          # onnxruntime only",
        f"headstart serve {bundle}                                          # HTTP: POST /predict",
        "```",
        "",
        "```python",
        "from headstart import load_model",
        "",
        f'clf = load_model("{bundle}")',
        f"labels = clf.predict({example})",
        "```",
        "",
    ]


def _provenance(meta: dict[str, Any], metrics: dict[str, Any], config: dict[str, Any]) -> list[str]:
    bb = meta.get("backbone", {})
    w = bb.get("weights", {})
    v = meta.get("versions", {})
    cfg = config.get("config", {})
    out = [
        "## Provenance",
        "",
        f"- backbone: `{bb.get('name', '?')}` ({w.get('source', 'source unknown')})",
        f"- weights sha256: `{w.get('sha256', '?')}`"
        + (f", tuned `{w['tuned_sha256']}`" if w.get("tuned_sha256") else ""),
        f"- head: {meta.get('head', {}).get('name', '?')}; strategy: {meta.get('strategy', '?')}"
        + (
            f"; predicts with: {meta['contender']['chosen']} ({meta['contender']['baseline']})"
            if meta.get("contender")
            else ""
        ),
        "- versions: " + ", ".join(f"{k} {v[k]}" for k in sorted(v) if v[k]),
    ]
    if "seed" in cfg:
        out.append(f"- seed: {cfg['seed']}")
    if metrics.get("timings"):
        out.append(f"- fit wall time: {metrics['timings'].get('total_s', 0):.1f} s")
    out.append("")
    return out


def model_card(run_dir: str | Path, bundle_dir: str | Path | None = None) -> str:
    """The model card of a `headstart fit` run folder, as Markdown.

    ``bundle_dir`` is the bundle the card describes (default ``run_dir/model``); it is named
    as given in the loading examples.
    """
    run = Path(run_dir)
    bundle = Path(bundle_dir) if bundle_dir is not None else run / "model"
    metrics = _read(run / METRICS_FILE)
    if not metrics:
        raise DataError(
            f"{run} has no {METRICS_FILE}: a model card is written from a finished "
            "`headstart fit` run folder (its --out)."
        )
    meta = _read(bundle / "headstart.json")
    config = _read(run / CONFIG_FILE)
    decisions = _read(run / DECISIONS_FILE)
    source = config.get("data", {}).get("source") or "data"
    title = f"# Model card: {source}, {metrics.get('strategy', '?')} with {metrics.get('backbone', '?')}"
    predictor = metrics.get("predictor", "transfer")
    if predictor != "transfer":  # auto kept the baseline, or a stack of it with transfer
        base = (metrics.get("contender") or {}).get("baseline", "the baseline")
        title = (
            f"# Model card: {source}, the non-transfer baseline ({base})"
            if predictor == "baseline"
            else f"# Model card: {source}, a stack of {base} and {metrics.get('strategy', '?')} "
            f"with {metrics.get('backbone', '?')}"
        )
    lines = [title, ""]
    reasons = decisions.get("reasons") or []
    if reasons:
        lines += ["Why this model (the fit's decisions):", ""] + [f"- {r}" for r in reasons] + [""]
    lines += _intended_use(meta, config, metrics)
    lines += _data(config)
    lines += _metrics(metrics)
    lines += _forgetting(metrics)
    lines += _limitations(metrics, config)
    lines += _loading(str(bundle), meta.get("modality", ""))
    lines += _provenance(meta, metrics, config)
    return "\n".join(lines).rstrip() + "\n"


def write_model_card(run_dir: str | Path, bundle_dir: str | Path | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into the bundle folder (atomically) and return its path."""
    bundle = Path(bundle_dir) if bundle_dir is not None else Path(run_dir) / "model"
    path = bundle / CARD_FILE
    atomic_write_bytes(path, model_card(run_dir, bundle).encode("utf-8"))
    return path
