"""The report's figures: matplotlib on its Agg canvas (no display needed), returned as PNG bytes.

Each ``plot_*`` function takes the plain values a run folder holds (see
:mod:`headstart.report.schema`) and returns the PNG; :func:`png_data_uri` turns it into the
``data:`` URI the self-contained page embeds.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .schema import (
    ClassScores,
    CurveRow,
    EpochRecord,
    LearningCurvePoint,
    ReliabilityBin,
    Rung,
    strategy_label,
)

__all__ = [
    "STRATEGY_COLOURS",
    "plot_confusion",
    "plot_head_selection",
    "plot_history",
    "plot_learning_curve",
    "plot_per_class",
    "plot_probe_curve",
    "plot_reliability",
    "plot_rungs",
    "plot_weight_drift",
    "png_data_uri",
]

# One colour per strategy, the same in every plot (matplotlib's tab10).
STRATEGY_COLOURS = {
    "finetune": "#1f77b4", "extract": "#ff7f0e", "scratch": "#2ca02c", "cnn": "#d62728",
    "baseline": "#7f7f7f", "auto": "#9467bd",
}  # fmt: skip


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _style(ax: Any) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def plot_history(histories: Mapping[str, Sequence[EpochRecord]]) -> bytes:
    """Training and validation loss, and validation accuracy, per epoch (one line per run)."""
    fig = _figure(9.0, 3.4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"]
    for j, (label, hist) in enumerate(histories.items()):
        c = colours[j % len(colours)]
        ep = [h["epoch"] for h in hist]
        tag = f" ({label})" if len(histories) > 1 else ""
        ax_loss.plot(ep, [h["train_loss"] for h in hist], "o-", color=c, label=f"train{tag}")
        ax_loss.plot(ep, [h["val_loss"] for h in hist], "s--", color=c, label=f"validation{tag}")
        acc = [100 * h["val_accuracy"] for h in hist]
        ax_acc.plot(ep, acc, "o-", color=c, label=label)
        best = int(np.argmax(acc))
        ax_acc.annotate(
            f"best {acc[best]:.1f}%",
            (ep[best], acc[best]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="left" if best == 0 else "right" if best == len(ep) - 1 else "center",
            fontsize=8,
            color=c,
        )
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style(ax)
    ax_loss.set_ylabel("cross-entropy loss (nats)")
    ax_loss.set_title("Loss: training vs validation")
    ax_loss.legend(fontsize=8)
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_acc.set_title("Validation accuracy")
    if len(histories) > 1:
        ax_acc.legend(fontsize=8)
    return _png(fig)


def plot_rungs(rungs: Sequence[Rung], chosen: str | None) -> bytes:
    """The ladder: validation accuracy of each rung, its time, the chosen one highlighted."""
    fig = _figure(max(4.6, 1.5 * len(rungs) + 1.6), 3.4)
    ax = fig.subplots()
    labels = [r["label"].replace("fine-tuning the ", "fine-tune ") for r in rungs]
    acc = [100 * r["val_accuracy"] for r in rungs]
    colours = ["#1f77b4" if r["label"] == chosen else "#9ecae1" for r in rungs]
    bars = ax.bar(range(len(rungs)), acc, color=colours, width=0.6)
    for b, r, a in zip(bars, rungs, acc, strict=True):
        ax.annotate(
            f"{a:.1f}%\n{r.get('seconds', 0):.0f} s",
            (b.get_x() + b.get_width() / 2, a),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(rungs)), labels, fontsize=8)
    lo = max(0.0, min(acc) - 10)
    ax.set_ylim(lo, min(100.0, max(acc) + (100 - lo) * 0.25) + 2)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy and time per rung")
    _style(ax)
    return _png(fig)


def plot_head_selection(
    val_scores: Mapping[str, Mapping[str, float]], chosen: float | None
) -> bytes:
    """Validation log-loss and accuracy along the logistic head's grid of C."""
    pts = sorted((float(c), s) for c, s in val_scores.items())
    cs = [c for c, _ in pts]
    fig = _figure(5.4, 3.4)
    ax = fig.subplots()
    ax.plot(cs, [s["log_loss"] for _, s in pts], "o-", color="#1f77b4")
    ax.set_xscale("log")
    ax.set_xlabel("C, inverse L2 strength (log scale)")
    ax.set_ylabel("validation log-loss (nats)", color="#1f77b4")
    ax2 = ax.twinx()
    ax2.plot(cs, [100 * s["accuracy"] for _, s in pts], "s--", color="#ff7f0e")
    ax2.set_ylabel("validation accuracy (%)", color="#ff7f0e")
    if chosen is not None:
        ax.axvline(chosen, color="black", linestyle=":", linewidth=1)
        ax.annotate(
            f"chosen C={chosen:g}",
            (chosen, 0.97),
            xycoords=("data", "axes fraction"),
            ha="left",
            va="top",
            fontsize=8,
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax.set_title("Head: C chosen on validation log-loss")
    ax.grid(True, alpha=0.3, linewidth=0.6)
    return _png(fig)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Counts, coloured by the share of each true class (row-normalised)."""
    m = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0)
    side = min(10.0, 2.6 + 0.4 * k)
    fig = _figure(side + 1.1, side)
    ax = fig.subplots()
    im = ax.imshow(100 * share, cmap="Blues", vmin=0, vmax=100)
    if k <= 25:
        for t in range(k):
            for p in range(k):
                if m[t, p]:
                    ax.text(
                        p,
                        t,
                        str(m[t, p]),
                        ha="center",
                        va="center",
                        fontsize=8 if k <= 12 else 6,
                        color="white" if share[t, p] > 0.55 else "black",
                    )
    names = [c if len(c) <= 14 else c[:13] + "…" for c in classes]
    fs = 8 if k <= 20 else 6
    if k <= 60:
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=fs)
        ax.set_yticks(range(k), names, fontsize=fs)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (counts; colour: % of the true class)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of the true class")
    return _png(fig)


def plot_per_class(per_class: Mapping[str, ClassScores]) -> bytes:
    """Precision and recall of each class, as horizontal bars."""
    names = list(per_class)
    k = len(names)
    fig = _figure(5.6, max(2.6, 0.34 * k + 1.3))
    ax = fig.subplots()
    y = np.arange(k)
    prec = [100 * per_class[n]["precision"] for n in names]
    rec = [100 * per_class[n]["recall"] for n in names]
    ax.barh(y - 0.2, prec, height=0.4, label="precision", color="#1f77b4")
    ax.barh(y + 0.2, rec, height=0.4, label="recall", color="#ff7f0e")
    ax.set_yticks(y, names, fontsize=8 if k <= 30 else 6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (%)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    _style(ax)
    return _png(fig)


def plot_reliability(bins: Sequence[ReliabilityBin], ece: float) -> bytes:
    """Reliability diagram: accuracy against confidence per bin, and how many fall in each."""
    fig = _figure(5.0, 4.8)
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    full = [b for b in bins if b["count"]]
    centres = [50 * (b["lower"] + b["upper"]) for b in full]
    width = 100 * (bins[0]["upper"] - bins[0]["lower"]) if bins else 10
    ax.plot([0, 100], [0, 100], ":", color="grey", label="perfect calibration")
    ax.bar(
        centres,
        [100 * b["accuracy"] for b in full],
        width=width * 0.9,
        color="#1f77b4",
        alpha=0.85,
        label="accuracy in the bin",
    )
    ax.plot(
        [100 * b["confidence"] for b in full],
        [100 * b["accuracy"] for b in full],
        "o",
        color="#d62728",
        markersize=4,
        label="mean confidence in the bin",
    )
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Calibration: expected calibration error {100 * ece:.1f} points")
    ax.legend(fontsize=8, loc="upper left")
    _style(ax)
    total = sum(b["count"] for b in bins) or 1
    ax_n.bar(centres, [100 * b["count"] / total for b in full], width=width * 0.9, color="#7f7f7f")
    ax_n.set_xlabel("confidence of the predicted class (%)")
    ax_n.set_ylabel("examples (%)")
    _style(ax_n)
    return _png(fig)


def plot_weight_drift(drift: Mapping[str, float]) -> bytes:
    """Relative L2 distance of each layer group from its pretrained weights."""
    names = list(drift)
    fig = _figure(6.5, max(2.2, 0.3 * len(names) + 1.0))
    ax = fig.subplots()
    vals = [100 * drift[n] for n in names]
    ax.barh(range(len(names)), vals, color=["#d62728" if v > 0 else "#bbbbbb" for v in vals])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("weight drift: ‖θ − θ₀‖ / ‖θ₀‖ (%)")
    ax.set_title("How far each layer group moved from its pretrained weights")
    _style(ax)
    return _png(fig)


def plot_probe_curve(points: Sequence[LearningCurvePoint]) -> bytes:
    """The auto ladder's linear-probe learning curve (validation accuracy against labels)."""
    fig = _figure(5.0, 3.0)
    ax = fig.subplots()
    ax.plot([p["n"] for p in points], [100 * p["val_accuracy"] for p in points], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Linear probe on part of the training data")
    _style(ax)
    return _png(fig)


def plot_learning_curve(
    rows: Sequence[CurveRow], title: str = "", modality: str | None = None
) -> bytes:
    """Test accuracy (mean ± std over seeds) against labelled examples, one line per strategy."""
    fig = _figure(7.5, 4.6)
    ax = fig.subplots()
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    ns: set[int] = set()
    for s in strategies:
        pts = sorted((r for r in rows if r["strategy"] == s), key=lambda r: r["n_labelled"])
        x = np.array([r["n_labelled"] for r in pts], dtype=float)
        m = np.array([100 * r["accuracy_mean"] for r in pts])
        sd = np.array([100 * r["accuracy_std"] for r in pts])
        c = STRATEGY_COLOURS.get(s)
        ax.plot(x, m, "o-", color=c, label=strategy_label(s, modality), linewidth=1.8)
        ax.fill_between(x, m - sd, m + sd, color=c, alpha=0.15, linewidth=0)
        ns.update(int(v) for v in x)
    ax.set_xscale("log")
    ticks = sorted(ns)
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples (train + validation), log scale")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title(title or "Learning curve")
    ax.legend(fontsize=8, loc="lower right")
    _style(ax)
    return _png(fig)
