"""Run reports: one self-contained static HTML page per run folder (and per `curve` study).

:func:`write_report` reads what a run left in its folder and writes ``report.html`` beside it
(atomically):

* a fit's folder (``config.json``, ``metrics.json``, ``decisions.json``, optional
  ``errors.json``): the config and data summary, the ladder's decisions with the scores
  behind them, training/validation curves, the confusion matrix, per-class precision and
  recall, a reliability (calibration) diagram, the examples the model got most confidently
  wrong, and the forgetting measures when layers were fine-tuned;
* a study's folder (``curve.json``, written by :mod:`headstart.curve`): the headline, the
  table (mean ± std over seeds) and the learning curve.

Plots are drawn with matplotlib's Agg canvas and embedded as ``data:image/png`` URIs; the page
has no script and no external resource, so it opens from disk with no server and no network.

:func:`save_errors` writes ``errors.json``: the ``k`` test examples the model was surest of
and got wrong, with a small PNG thumbnail (images) or a snippet (text) each. Its format::

    {"format": 1, "split": "test", "n": 1000, "n_wrong": 87, "k": 12,
     "errors": [{"index": 31, "source": "fashion-mnist test #31", "true": "Shirt",
                 "pred": "T-shirt/top", "true_index": 6, "pred_index": 0,
                 "confidence": 0.97,
                 "input": {"kind": "image", "png": "<base64>", "width": 84, "height": 84}
                       or {"kind": "text", "text": "first 300 characters...", "chars": 1840}
                       or {"kind": "file", "text": "clip.wav"}}]}
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_bytes, atomic_write_json
from .data.base import Examples
from .errors import DataError

__all__ = [
    "ERRORS_FILE",
    "REPORT_FILE",
    "load_errors",
    "png_data_uri",
    "save_errors",
    "write_report",
]

REPORT_FILE = "report.html"
ERRORS_FILE = "errors.json"
_ERRORS_FORMAT = 1
#: Longest side of an error thumbnail, in pixels.
THUMB_SIDE = 96
#: Characters of text kept per error snippet.
SNIPPET_CHARS = 300
# One colour per strategy, the same in every plot (matplotlib's tab10).
STRATEGY_COLOURS = {
    "finetune": "#1f77b4", "extract": "#ff7f0e", "scratch": "#2ca02c", "cnn": "#d62728",
    "baseline": "#7f7f7f",
}  # fmt: skip


# --------------------------------------------------------------------------------- errors.json
def _thumbnail(inputs: Any, i: int) -> dict[str, Any]:
    """A small PNG of image ``i`` (array rows or file paths), base64-encoded."""
    from PIL import Image

    try:
        if isinstance(inputs, np.ndarray):
            arr = np.asarray(inputs[i])
            if arr.dtype != np.uint8:
                arr = np.clip(arr, 0, 255).astype(np.uint8)
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            im = Image.fromarray(arr)
        else:
            with Image.open(inputs[i]) as src:
                src.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
                im = src.convert("RGB") if src.mode not in ("L", "RGB") else src.copy()
    except (OSError, ValueError, TypeError) as exc:
        return {"kind": "file", "text": f"{inputs[i]} (unreadable: {exc})"}
    w, h = im.size
    scale = THUMB_SIDE / max(w, h)
    if scale >= 2:  # tiny images (28 x 28): enlarge by a whole factor, pixels kept sharp
        f = int(scale)
        im = im.resize((w * f, h * f), Image.Resampling.NEAREST)
    elif scale < 1:
        im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return {
        "kind": "image",
        "png": base64.b64encode(buf.getvalue()).decode("ascii"),
        "width": im.size[0],
        "height": im.size[1],
    }


def _snippet(text: Any) -> dict[str, Any]:
    s = " ".join(str(text).split())
    cut = s[:SNIPPET_CHARS].rstrip() + ("…" if len(s) > SNIPPET_CHARS else "")
    return {"kind": "text", "text": cut, "chars": len(s)}


def save_errors(
    run_dir: str | Path,
    examples: Examples,
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    k: int = 12,
    *,
    split: str = "test",
) -> Path:
    """Write ``run_dir/errors.json``: the `k` most confidently wrong predictions on `examples`.

    `y_true` are class indices into ``examples.classes`` and `proba` the predicted
    probabilities, one row per example (as :func:`headstart.metrics.classification_metrics`
    takes them). Images get a PNG thumbnail of at most :data:`THUMB_SIDE` pixels (small images
    are enlarged with sharp pixels), texts their first :data:`SNIPPET_CHARS` characters, audio
    its file name. Returns the path written.
    """
    from .metrics import most_confident_errors

    y = np.asarray(y_true)
    p = np.asarray(proba)
    if len(examples) != len(y) or len(y) != len(p):
        raise DataError(
            f"save_errors needs one label and one probability row per example; got "
            f"{len(examples)} examples, {len(y)} labels and {len(p)} rows. Pass the same split's "
            "examples, labels and predict_proba output."
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise DataError(f"k must be a whole number >= 0 (how many errors to keep); got {k!r}.")
    wrong = most_confident_errors(y, p, k=k)
    classes = list(examples.classes)
    rows = []
    for e in wrong:
        i = e["index"]
        if examples.modality == "image":
            shown = _thumbnail(examples.inputs, i)
        elif examples.modality == "text":
            shown = _snippet(examples.inputs[i])
        else:
            shown = {"kind": "file", "text": str(examples.inputs[i])}
        rows.append(
            {
                "index": i,
                "source": examples.source_of(i),
                "true": classes[e["true"]] if e["true"] < len(classes) else str(e["true"]),
                "pred": classes[e["pred"]] if e["pred"] < len(classes) else str(e["pred"]),
                "true_index": e["true"],
                "pred_index": e["pred"],
                "confidence": round(e["confidence"], 6),
                "input": shown,
            }
        )
    doc = {
        "format": _ERRORS_FORMAT,
        "split": split,
        "n": len(y),
        "n_wrong": int((p.argmax(axis=1) != y).sum()),
        "k": k,
        "errors": rows,
    }
    path = Path(run_dir) / ERRORS_FILE
    atomic_write_json(path, doc)
    return path


def load_errors(run_dir: str | Path) -> dict[str, Any] | None:
    """``errors.json`` of a run folder as a dict (a bare list is accepted too), or None."""
    path = Path(run_dir) / ERRORS_FILE
    if not path.exists():
        return None
    doc = _read_json(path)
    if isinstance(doc, list):
        doc = {"format": _ERRORS_FORMAT, "split": "test", "errors": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        raise DataError(
            f"{path} is not an errors file (expected a list under 'errors'). "
            "Delete it, or rewrite it with headstart.report.save_errors."
        )
    return doc


# ------------------------------------------------------------------------------------ plots
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


def plot_history(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> bytes:
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


def plot_rungs(rungs: Sequence[Mapping[str, Any]], chosen: str | None) -> bytes:
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


def plot_per_class(per_class: Mapping[str, Mapping[str, float]]) -> bytes:
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


def plot_reliability(bins: Sequence[Mapping[str, Any]], ece: float) -> bytes:
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


def plot_probe_curve(points: Sequence[Mapping[str, float]]) -> bytes:
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


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], title: str = "") -> bytes:
    """Test accuracy (mean ± std over seeds) against labelled examples, one line per strategy."""
    from .curve import STRATEGY_LABELS

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
        ax.plot(x, m, "o-", color=c, label=STRATEGY_LABELS.get(s, s), linewidth=1.8)
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


# ------------------------------------------------------------------------------------- html
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 color:#1d1d1f;background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.55rem;margin:0 0 4px}h2{font-size:1.2rem;margin:32px 0 10px;padding-top:8px;
 border-top:1px solid #dde1e6}h3{font-size:1rem;margin:18px 0 6px}
.sub{color:#5f6670;margin:0 0 16px}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:1.35rem}.card span{color:#5f6670;font-size:.85rem}
nav{font-size:.9rem;margin:8px 0 0}nav a{margin-right:14px;color:#0b62c4;text-decoration:none}
table{border-collapse:collapse;background:#fff;font-size:.88rem;margin:6px 0 12px}
th,td{border:1px solid #dde1e6;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{display:block;max-width:100%;height:auto;background:#fff;border:1px solid #dde1e6;
 border-radius:6px;margin:8px 0}
pre{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px;overflow-x:auto;
 font-size:.82rem}
.grid{display:flex;flex-wrap:wrap;gap:12px}.err{background:#fff;border:1px solid #dde1e6;
 border-radius:6px;padding:8px;width:150px;font-size:.8rem}
.err img{display:block;margin:0 auto 6px;image-rendering:pixelated;width:96px;height:auto}
.snip{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:8px 12px;margin:8px 0;
 font-size:.85rem}.bad{color:#b42318}.good{color:#067647}.note{color:#5f6670;font-size:.88rem}
.two{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.two>div{flex:1 1 430px;
 min-width:0}.two img.plot{margin-top:0}
.headline{background:#fff;border-left:5px solid #1f77b4;padding:12px 16px;font-size:1.05rem;
 margin:16px 0}details{margin:8px 0}summary{cursor:pointer;color:#0b62c4}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: Any, digits: int = 1) -> str:
    return (
        "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"
    )


def _img(png: bytes, alt: str) -> str:
    return f'<img class="plot" src="{png_data_uri(png)}" alt="{_e(alt)}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        out.append(
            "<tr>"
            + "".join(
                f'<td class="num">{_e(v)}</td>' if j in num else f"<td>{_e(v)}</td>"
                for j, v in enumerate(r)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _page(title: str, body: list[str]) -> str:
    from . import __version__

    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        + "\n".join(body)
        + f'<p class="note">Written by headstart {_e(__version__)} on {_e(stamp)}. This page is '
        "self-contained: every plot is embedded, nothing is fetched.</p></main></body></html>\n"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc}); the run that wrote it was probably "
            "interrupted. Re-run the command that made this folder."
        ) from None


# ------------------------------------------------------------------------------- run report
def _summary_cards(metrics: dict[str, Any], split: str) -> str:
    m = metrics[split]
    cards = [(_pct(m["accuracy"]), f"{split} accuracy"), (_pct(m["macro_f1"]), f"{split} macro-F1")]
    base = metrics.get("baseline", {}).get(split)
    if base:
        d = 100 * (m["accuracy"] - base["accuracy"])
        cards.append(
            (
                _pct(base["accuracy"]),
                f"baseline ({metrics['baseline'].get('name', '')}), {d:+.1f} points for transfer",
            )
        )
    cards.append((f"{100 * m['ece']:.1f}", "calibration error (ECE, points)"))
    if m.get("roc_auc") is not None:
        cards.append((f"{m['roc_auc']:.3f}", "ROC AUC"))
    cards.append(
        (
            f"{metrics.get('n_train', 0):,} / {metrics.get('n_val', 0):,} / "
            f"{metrics.get('n_test', 0):,}",
            "train / val / test examples",
        )
    )
    if "timings" in metrics:
        cards.append((f"{metrics['timings']['total_s']:.0f} s", "total time"))
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in cards)
        + "</div>"
    )


def _config_section(config: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    out = ['<h2 id="config">Configuration and data</h2>']
    data = config.get("data", {})
    if data.get("summary"):
        out.append(f"<pre>{_e(data['summary'])}</pre>")
    counts = data.get("class_counts") or {}
    classes = data.get("classes") or []
    if counts and classes:
        parts = [p for p in ("train", "val", "test") if counts.get(p)]
        rows = [[c, *(counts[p].get(c, 0) for p in parts)] for c in classes[:60]]
        table = _table(["class", *parts], rows, num=range(1, len(parts) + 1))
        more = f" (first 60 of {len(classes)})" if len(classes) > 60 else ""
        out.append(f"<details><summary>Examples per class{more}</summary>{table}</details>")
    bb = config.get("resolved", {}).get("backbone", {})
    if bb:
        w = bb.get("weights", {})
        rows = [
            ["backbone", bb.get("name", "")],
            ["modality", bb.get("modality", "")],
            ["parameters", f"{bb.get('n_params', 0):,}"],
            ["feature dimension", bb.get("feature_dim", "")],
            ["weights", w.get("source", "") if w.get("pretrained") else "random (not pretrained)"],
            ["layer groups", ", ".join(bb.get("layer_groups", []))],
            ["preprocessing", json.dumps(bb.get("preprocess", {}))],
        ]
        out.append(_table(["", ""], rows))
    cfg = config.get("config", {})
    if cfg:
        rows = [[k, json.dumps(v)] for k, v in cfg.items()]
        out.append(
            f"<details><summary>Every setting of this run</summary>{_table(['setting', 'value'], rows)}</details>"
        )
    extra = {k: config[k] for k in ("versions", "machine") if k in config}
    if extra:
        out.append(
            f"<details><summary>Versions and machine</summary><pre>{_e(json.dumps(extra, indent=1))}</pre></details>"
        )
    ex = metrics.get("extraction")
    if ex:
        rows = [
            [
                k,
                v.get("n", ""),
                v.get("engine", ""),
                "yes" if v.get("cached") else "no",
                v.get("seconds", ""),
                v.get("examples_per_s", ""),
            ]
            for k, v in ex.items()
        ]
        out.append(
            "<h3>Feature extraction</h3>"
            + _table(
                ["split", "examples", "engine", "from cache", "seconds", "examples/s"],
                rows,
                num=(1, 4, 5),
            )
        )
    return out


def _decisions_section(decisions: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    out = ['<h2 id="decisions">Decisions: the ladder and the scores behind them</h2>']
    rungs = decisions.get("rungs") or []
    chosen = decisions.get("chosen")
    if decisions.get("reasons"):
        out.append("<ol>" + "".join(f"<li>{_e(r)}</li>" for r in decisions["reasons"]) + "</ol>")
    if rungs:
        rows = [
            [
                r["label"] + (" (chosen)" if r["label"] == chosen else ""),
                r.get("unfreeze", 0),
                _pct(r["val_accuracy"], 2),
                _pct(r.get("val", {}).get("macro_f1"), 2),
                f"{r.get('val', {}).get('log_loss', float('nan')):.4f}",
                f"{r.get('seconds', 0):.1f}",
            ]
            for r in rungs
        ]
        out.append(
            _table(
                [
                    "rung",
                    "groups unfrozen",
                    "val accuracy",
                    "val macro-F1",
                    "val log-loss",
                    "seconds",
                ],
                rows,
                num=(1, 2, 3, 4, 5),
            )
        )
    plots = []
    if len(rungs) > 1:
        plots.append(
            "<h3>Rungs compared (dark: the chosen one)</h3>"
            + _img(plot_rungs(rungs, chosen), "validation accuracy of each rung")
        )
    sel = metrics.get("head_selection") or {}
    if isinstance(sel.get("val_scores"), dict) and sel["val_scores"]:
        plots.append(
            "<h3>Head: regularisation chosen on validation data</h3>"
            + _img(
                plot_head_selection(sel["val_scores"], sel.get("C")),
                "validation log-loss and accuracy against C",
            )
        )
    if plots:
        out.append('<div class="two">' + "".join(f"<div>{p}</div>" for p in plots) + "</div>")
    lc = decisions.get("learning_curve")
    if lc and lc.get("points"):
        out.append(
            f"<h3>Linear-probe learning curve</h3><p>Slope: "
            f"{100 * lc.get('slope_per_doubling', 0):+.2f} points per doubling of the data.</p>"
        )
        out.append(_img(plot_probe_curve(lc["points"]), "linear-probe learning curve"))
    return out


def _training_section(decisions: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    out = ['<h2 id="training">Training and validation curves</h2>']
    hists = {r["label"]: r["history"] for r in decisions.get("rungs", []) if r.get("history")}
    if not hists and metrics.get("finetune", {}).get("history"):
        hists = {"fine-tuning": metrics["finetune"]["history"]}
    if hists:
        out.append(_img(plot_history(hists), "training and validation loss and accuracy per epoch"))
        ft = metrics.get("finetune") or {}
        if ft:
            lrs = ", ".join(f"{k} {v:.2g}" for k, v in (ft.get("lrs") or {}).items())
            out.append(
                f"<p>Best epoch {_e(ft.get('best_epoch'))} of {_e(ft.get('epochs_run'))} "
                f"({_e(ft.get('stopped', ''))}); {ft.get('n_trainable', 0):,} trainable "
                f"parameters; learning rates: {_e(lrs)}; "
                f"{ft.get('examples_per_s', 0):.0f} examples/s.</p>"
            )
    else:
        out.append(
            '<p class="note">No per-epoch curves: this model is feature extraction, whose '
            "logistic head is fitted by L-BFGS to convergence for each C (see the head's "
            "C path above).</p>"
        )
    return out


def _results_section(m: dict[str, Any], split: str, classes: list[str]) -> list[str]:
    out = [f'<h2 id="results">Results on the {_e(split)} split ({m["n"]:,} examples)</h2>']
    out.append(_img(plot_confusion(m["confusion_matrix"], classes), "confusion matrix"))
    pc = m["per_class"]
    left = "<h3>Per-class precision and recall</h3>"
    if len(pc) <= 60:
        left += _img(plot_per_class(pc), "per-class precision and recall")
    rows = [
        [c, _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"]]
        for c, v in pc.items()
    ]
    left += (
        f"<details><summary>Table</summary>"
        f"{_table(['class', 'precision', 'recall', 'F1', 'support'], rows, num=(1, 2, 3, 4))}"
        "</details>"
    )
    right = (
        '<h3 id="calibration">Calibration</h3>'
        "<p>When the model says it is 80% sure, is it right 80% of the time? Bars on the "
        "diagonal mean yes; bars below it mean over-confidence.</p>"
        + _img(plot_reliability(m["reliability"], m["ece"]), "reliability diagram")
    )
    out.append(f'<div class="two"><div>{left}</div><div>{right}</div></div>')
    return out


def _errors_section(errors: dict[str, Any] | None) -> list[str]:
    out = ['<h2 id="errors">Most confidently wrong</h2>']
    if errors is None:
        out.append('<p class="note">No errors.json in this folder: nothing to show.</p>')
        return out
    rows = errors["errors"]
    total = errors.get("n_wrong")
    intro = (
        f"The {len(rows)} {_e(errors.get('split', 'test'))} examples the model was surest of "
        f"and got wrong"
    )
    if total is not None:
        intro += f" (of {total:,} errors in {errors.get('n', 0):,} examples)"
    out.append(f"<p>{intro}. Often these are label mistakes, or classes that look alike.</p>")
    if not rows:
        return out
    cells, texts = [], []
    for r in rows:
        shown = r.get("input") or {}
        caption = (
            f'<span class="bad">predicted {_e(r["pred"])}</span> ({_pct(r["confidence"])})'
            f'<br><span class="good">true {_e(r["true"])}</span>'
            f'<br><span class="note">{_e(r.get("source", r["index"]))}</span>'
        )
        if shown.get("kind") == "image" and shown.get("png"):
            cells.append(
                f'<div class="err"><img src="data:image/png;base64,{_e(shown["png"])}" '
                f'alt="{_e(r.get("source", ""))}">{caption}</div>'
            )
        else:
            texts.append(f'<div class="snip">{caption}<br>{_e(shown.get("text", ""))}</div>')
    if cells:
        out.append('<div class="grid">' + "".join(cells) + "</div>")
    out.extend(texts)
    return out


def _forgetting_section(ft: dict[str, Any]) -> list[str]:
    f = ft.get("forgetting") or {}
    out = ['<h2 id="forgetting">Forgetting: how far fine-tuning moved the pretrained model</h2>']
    rows = [
        [
            "feature CKA, pretrained vs tuned (1 = same representation)",
            f"{f.get('cka', float('nan')):.3f}",
        ]
    ]
    if "source_top1_agreement" in f:
        rows.append(
            [
                "original classifier: share of top-1 predictions unchanged",
                _pct(f["source_top1_agreement"]),
            ]
        )
    rows.append(["probe examples (from the validation split)", f.get("probe_size", "")])
    if "cka_source" in f:
        rows.append(["on natural photos (source domain): feature CKA", f"{f['cka_source']:.3f}"])
    if "source_top1_agreement_source" in f:
        rows.append(
            [
                "on natural photos: original top-1 predictions unchanged",
                _pct(f["source_top1_agreement_source"]),
            ]
        )
    g = ft.get("guard") or {}
    if g:
        rows.append(
            [
                "learning-rate guard (10-100x rule)",
                f"head/backbone ratio {g.get('ratio', 0):.0f}x: {'ok' if g.get('ok') else 'RISKY'}"
                + (f" ({g['message']})" if g.get("message") else ""),
            ]
        )
    out.append(_table(["measure", "value"], rows, num=(1,)))
    if f.get("weight_drift"):
        out.append(_img(plot_weight_drift(f["weight_drift"]), "weight drift per layer group"))
    return out


def _run_report(run_dir: Path) -> str:
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path)
    config = _read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    decisions = (
        _read_json(run_dir / "decisions.json") if (run_dir / "decisions.json").exists() else {}
    )
    errors = load_errors(run_dir)
    split = "test" if "test" in metrics else "val"
    if split not in metrics:
        raise DataError(
            f"{metrics_path} has neither 'test' nor 'val' metrics; it was not written "
            "by `headstart fit`. Re-run the fit."
        )
    m = metrics[split]
    classes = config.get("data", {}).get("classes") or list(m["per_class"])
    data_name = config.get("config", {}).get("data") or config.get("data", {}).get("source", "")
    title = f"{data_name}: {metrics.get('strategy', '')} with {metrics.get('backbone', '')}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Run folder {_e(run_dir.resolve())} · {_e(metrics.get("head", ""))} head</p>',
        '<nav><a href="#config">config &amp; data</a><a href="#decisions">decisions</a>'
        '<a href="#training">training</a><a href="#results">results</a>'
        '<a href="#calibration">calibration</a><a href="#errors">errors</a>'
        + ('<a href="#forgetting">forgetting</a>' if metrics.get("finetune") else "")
        + "</nav>",
        _summary_cards(metrics, split),
    ]
    body += _config_section(config, metrics)
    body += _decisions_section(decisions, metrics)
    body += _training_section(decisions, metrics)
    body += _results_section(m, split, list(classes))
    body += _errors_section(errors)
    if metrics.get("finetune"):
        body += _forgetting_section(metrics["finetune"])
    return _page(f"headstart report: {title}", body)


# ----------------------------------------------------------------------------- curve report
def _study_table(rows: Sequence[Mapping[str, Any]], cell: Any) -> str:
    """Fractions down, strategies across; `cell(row)` is the text of one entry."""
    from .curve import STRATEGY_LABELS

    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    by = {(r["strategy"], r["fraction"]): r for r in rows}
    lines = []
    for f in sorted({r["fraction"] for r in rows}):
        n = next(r["n_labelled"] for r in rows if r["fraction"] == f)
        row = by.get
        lines.append(
            [
                f"{100 * f:g}%",
                f"{n:,}",
                *("–" if row((s, f)) is None else cell(row((s, f))) for s in strategies),
            ]
        )
    head = ["labels", "examples", *(STRATEGY_LABELS.get(s, s) for s in strategies)]
    return _table(head, lines, num=range(1, len(strategies) + 2))


def _curve_report(run_dir: Path) -> str:
    doc = _read_json(run_dir / "curve.json")
    cfg = doc.get("config", {})
    rows = doc.get("rows", [])
    title = f"Data efficiency on {cfg.get('data', '')}: {doc.get('backbone', {}).get('name', '')}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Study folder {_e(run_dir.resolve())} · {len(doc.get("seeds", []))} '
        f"seed(s) · {doc.get('cells', {}).get('done', 0)} of "
        f"{doc.get('cells', {}).get('total', 0)} cells done</p>",
    ]
    if doc.get("headline"):
        body.append(f'<div class="headline">{_e(doc["headline"])}</div>')
    if not doc.get("complete", False):
        body.append(
            '<p class="bad">The study is not finished: run the same command again to '
            "compute the missing cells (finished ones are reused).</p>"
        )
    if rows:
        body.append(_img(plot_learning_curve(rows, title), "learning curve"))
        n_seeds = len(doc.get("seeds", [])) or max(r["n_seeds"] for r in rows)

        def acc(r: Mapping[str, Any]) -> str:
            fewer = f" ({r['n_seeds']} seeds)" if r["n_seeds"] < n_seeds else ""
            return f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}{fewer}"

        body.append(f"<h2>Test accuracy (%), mean ± std over {n_seeds} seed(s)</h2>")
        body.append(_study_table(rows, acc))
        body.append("<h2>Test macro-F1 (%), mean ± std</h2>")
        body.append(
            _study_table(
                rows, lambda r: f"{100 * r['macro_f1_mean']:.1f} ± {100 * r['macro_f1_std']:.1f}"
            )
        )
        body.append("<h2>Seconds per cell (mean; features extracted once, not counted)</h2>")
        body.append(_study_table(rows, lambda r: f"{r['seconds_mean']:.1f}"))
    notes = doc.get("notes") or []
    if notes:
        body.append(
            "<h2>How each strategy was trained</h2><ul>"
            + "".join(f"<li>{_e(n)}</li>" for n in notes)
            + "</ul>"
        )
    data = doc.get("data", {})
    if data.get("summary"):
        vf = cfg.get("val_fraction", 0.2)
        body.append(
            f"<h2>Data</h2><p>The label pool is the training and validation data below together "
            f"({data.get('pool', 0):,} examples: fraction 1.0); each cell takes a stratified "
            f"subset of it and carves {100 * vf:g}% of that for validation. Every cell is scored "
            f"on the same {data.get('n_test', 0):,} test examples.</p>"
            f"<pre>{_e(data['summary'])}</pre>"
        )
    body.append(
        "<details><summary>Every setting of this study</summary>"
        + _table(["setting", "value"], [[k, json.dumps(v)] for k, v in cfg.items()])
        + "</details>"
    )
    extra = {k: doc[k] for k in ("versions", "machine") if k in doc}
    if extra:
        body.append(
            f"<details><summary>Versions and machine</summary><pre>"
            f"{_e(json.dumps(extra, indent=1))}</pre></details>"
        )
    return _page(f"headstart study: {title}", body)


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` for a fit's run folder or a `curve` study folder.

    Reads ``config.json``, ``metrics.json``, ``decisions.json`` and (when present)
    ``errors.json`` of a fit, or ``curve.json`` of a study; writes the page atomically and
    returns its path. Raises :class:`~headstart.errors.DataError` when the folder holds
    neither.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise DataError(
            f"{d} is not a folder. Give the --out folder of `headstart fit` or `headstart curve`."
        )
    if (d / "curve.json").exists():
        page = _curve_report(d)
    elif (d / "metrics.json").exists():
        page = _run_report(d)
    else:
        raise DataError(
            f"{d} holds neither metrics.json (a `headstart fit` run) nor curve.json "
            "(a `headstart curve` study); nothing to report. Give the folder that "
            "the command's --out named, after it finished."
        )
    path = d / REPORT_FILE
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
