"""A study's table (mean ± std over seeds) and its headline: does the 1 %-of-the-data claim hold?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..report.schema import STRATEGY_LABELS, strategy_label
from .config import CURVE_STRATEGIES

REFERENCE_NAMES = {
    "scratch": "the same architecture",
    "cnn": "a small CNN",
    "baseline": "pixels/TF-IDF + logistic regression",
}
#: The transfer-learning claim the study tests: with 1% of the labels, at least this share
#: (90-95% in the usual statement; its lower end) of the best from-scratch model on 100%.
CLAIM_RATIO = 0.90


def _std(a: np.ndarray) -> float:
    """Sample standard deviation; 0 for a single value."""
    return float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise_cells(
    cells: list[dict[str, Any]], strategies: list[str] | None = None
) -> list[dict[str, Any]]:
    """Mean ± std (sample std; 0 for one seed) over seeds for each (strategy, fraction).

    Rows come in the order of `strategies` (default :data:`CURVE_STRATEGIES`), then fraction.
    """
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["strategy"], c["fraction"]), []).append(c)
    rows = []
    for (s, f), cs in groups.items():
        acc = np.array([c["test"]["accuracy"] for c in cs])
        f1 = np.array([c["test"]["macro_f1"] for c in cs])
        rows.append(
            {
                "strategy": s,
                "fraction": f,
                "n_labelled": round(float(np.mean([c["n_labelled"] for c in cs]))),
                "n_seeds": len(cs),
                "seeds": sorted(c["seed"] for c in cs),
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": _std(acc),
                "macro_f1_mean": float(f1.mean()),
                "macro_f1_std": _std(f1),
                "seconds_mean": float(np.mean([c["seconds"] for c in cs])),
                "accuracies": [float(a) for a in acc],
            }
        )
    order = {s: i for i, s in enumerate(strategies or CURVE_STRATEGIES)}
    return sorted(rows, key=lambda r: (order.get(r["strategy"], 99), r["fraction"]))


def headline(rows: list[dict[str, Any]], modality: str | None = None) -> tuple[str, dict[str, Any]]:
    """'With 1% of the labels, fine-tuned transfer reaches X% of the from-scratch model ...'.

    ``modality`` names the references as they are on that data ("a small text CNN")."""
    have = {r["strategy"] for r in rows}
    # what a user gets by default first, then the fixed strategies
    transfer = next((s for s in ("auto", "finetune", "extract") if s in have), None)
    # no-pretraining references: the trained from-scratch networks, else the linear baseline
    refs = [s for s in ("scratch", "cnn") if s in have] or [s for s in ("baseline",) if s in have]
    if transfer is None or not refs:
        return (
            "No headline: the study needs a transfer strategy (auto, finetune or extract) and a "
            "reference without pretraining (scratch, cnn or baseline)."
        ), {}
    lo = min(r["fraction"] for r in rows if r["strategy"] == transfer)
    hi = max(r["fraction"] for r in rows if r["strategy"] in refs)
    t = next(r for r in rows if r["strategy"] == transfer and r["fraction"] == lo)
    ref = max(
        (r for r in rows if r["strategy"] in refs and r["fraction"] == hi),
        key=lambda r: r["accuracy_mean"],
    )
    ratio = t["accuracy_mean"] / ref["accuracy_mean"] if ref["accuracy_mean"] > 0 else float("nan")
    what = {
        "auto": "headstart's default (auto)",
        "finetune": "fine-tuned transfer",
        "extract": "transfer by feature extraction",
    }[transfer]
    text = (
        f"With {100 * lo:g}% of the labels ({t['n_labelled']:,} examples), {what} reaches "
        f"{100 * ratio:.0f}% of the test accuracy of the best from-scratch model trained on "
        f"{100 * hi:g}% ({ref['n_labelled']:,} examples; {_reference_name(ref['strategy'], modality)}): "
        f"{100 * t['accuracy_mean']:.1f}% vs {100 * ref['accuracy_mean']:.1f}% (mean of "
        f"{t['n_seeds']} and {ref['n_seeds']} seeds)."
    )
    versus = against_references(rows, transfer, modality)
    if versus:
        text += " " + versus["text"]
    holds = None
    if math.isclose(lo, 0.01) and math.isclose(hi, 1.0):
        # The claim this study tests: "90-95% of a custom model's performance with ~1% of the data".
        holds = bool(ratio >= CLAIM_RATIO)
        text += (
            f" The claim '{100 * CLAIM_RATIO:.0f}-95% of a from-scratch model's accuracy with 1% "
            f"of the data' {'holds' if holds else 'does not hold'} here."
        )
    detail = {
        "transfer": transfer,
        "versus_references": versus or None,
        "fraction": lo,
        "transfer_accuracy": t["accuracy_mean"],
        "reference": ref["strategy"],
        "reference_fraction": hi,
        "reference_accuracy": ref["accuracy_mean"],
        "ratio": ratio,
        "claim_holds": holds,
    }
    return text, detail


def _reference_name(strategy: str, modality: str | None) -> str:
    if strategy == "cnn" and modality == "text":
        return "a small text CNN"
    if strategy == "baseline" and modality in ("image", "text", "audio"):
        return strategy_label(strategy, modality)
    return REFERENCE_NAMES[strategy]


def against_references(
    rows: list[dict[str, Any]], transfer: str, modality: str | None = None
) -> dict[str, Any]:
    """Per label budget: does ``transfer`` (mean over seeds) match the best non-transfer
    reference (small CNN, same architecture from scratch, pixels/TF-IDF baseline)?"""
    refs = ("scratch", "cnn", "baseline")
    by = {(r["strategy"], r["fraction"]): r for r in rows}
    fracs = sorted({r["fraction"] for r in rows if r["strategy"] == transfer})
    per: list[dict[str, Any]] = []
    for f in fracs:
        cands = [by[(s, f)] for s in refs if (s, f) in by]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["accuracy_mean"])
        t = by[(transfer, f)]["accuracy_mean"]
        per.append(
            {
                "fraction": f,
                "transfer": t,
                "reference": best["strategy"],
                "reference_accuracy": best["accuracy_mean"],
                "at_least": bool(t >= best["accuracy_mean"]),
            }
        )
    if not per:
        return {}
    wins = sum(p["at_least"] for p in per)
    name = STRATEGY_LABELS.get(transfer, transfer)
    losses = ", ".join(
        f"{100 * p['fraction']:g}% ({100 * p['transfer']:.1f} vs "
        f"{100 * p['reference_accuracy']:.1f}, {strategy_label(p['reference'], modality)})"
        for p in per
        if not p["at_least"]
    )
    text = (
        f"{name[0].upper() + name[1:]} matches or beats the best non-transfer reference at "
        f"{wins} of {len(per)} label budgets" + (f"; below it at {losses}." if losses else ".")
    )
    return {"text": text, "budgets": per, "at_least": wins, "of": len(per)}


def text_table(
    rows: list[dict[str, Any]], markdown: bool = False, modality: str | None = None
) -> str:
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    fracs = sorted({r["fraction"] for r in rows})
    by = {(r["strategy"], r["fraction"]): r for r in rows}
    head = ["labels", "examples", *(strategy_label(s, modality) for s in strategies)]
    lines = []
    for f in fracs:
        n = next(r["n_labelled"] for r in rows if r["fraction"] == f)
        cells = [f"{100 * f:g}%", f"{n:,}"]
        for s in strategies:
            r = by.get((s, f))
            cells.append(
                "–"
                if r is None
                else f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}"
            )
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [head, *lines])


@dataclass
class CurveResult:
    """What :func:`run_curve` did and found."""

    out: Path
    rows: list[dict[str, Any]]
    headline: str
    computed: list[str]
    reused: list[str]
    complete: bool
    report: Path
    total: int = 0
    modality: str | None = None

    def table(self) -> str:
        """The mean ± std table as aligned plain text."""
        return text_table(self.rows, modality=self.modality)
