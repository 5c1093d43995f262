"""Run reports: one self-contained static HTML page per run folder (and per `curve` study).

Size (over ~600 lines, on purpose): the page's sections, one function each, read top to
bottom in the order the page shows them and share the small HTML helpers at the top; the
plots and the file schema already live apart.

:func:`write_report` reads what a run left in its folder and writes ``report.html`` beside it
(atomically):

* a fit's folder (``config.json``, ``metrics.json``, ``decisions.json``, optional
  ``errors.json``): the config and data summary, the ladder's decisions with the scores
  behind them, training/validation curves, the confusion matrix, per-class precision and
  recall, a reliability (calibration) diagram, the examples the model got most confidently
  wrong, and the forgetting measures when layers were fine-tuned;
* a study's folder (``curve.json``, written by :mod:`headstart.curve`): the headline, the
  table (mean ± std over seeds) and the learning curve.

The files are read through the structures of :mod:`headstart.report.schema`. Plots
(:mod:`headstart.report.plots`) are embedded as ``data:image/png`` URIs; the page has no
script and no external resource, so it opens from disk with no server and no network.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from .._io import atomic_write_bytes
from ..errors import DataError
from .errors import load_errors
from .plots import (
    plot_confusion,
    plot_head_selection,
    plot_history,
    plot_learning_curve,
    plot_per_class,
    plot_probe_curve,
    plot_reliability,
    plot_rungs,
    plot_weight_drift,
    png_data_uri,
)
from .schema import (
    CONFIG_FILE,
    CURVE_FILE,
    DECISIONS_FILE,
    METRICS_FILE,
    REPORT_FILE,
    CurveDoc,
    CurveRow,
    Decisions,
    EpochRecord,
    ErrorsDoc,
    FinetuneDetail,
    Metrics,
    RunConfig,
    Rung,
    SplitMetrics,
    read_json,
    strategy_label,
)

__all__ = ["write_report"]

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
    from .. import __version__

    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        + "\n".join(body)
        + f'<p class="note">Written by headstart {_e(__version__)} on {_e(stamp)}. This page is '
        "self-contained: every plot is embedded, nothing is fetched.</p></main></body></html>\n"
    )


# ------------------------------------------------------------------------------- run report
#: What the report assumes when a run folder has no decisions.json: no rungs, no reasons.
_NO_DECISIONS: Decisions = {"strategy": "", "rungs": [], "reasons": [], "chosen": ""}


def _summary_cards(metrics: Metrics, split: str, m: SplitMetrics) -> str:
    cards = [(_pct(m["accuracy"]), f"{split} accuracy"), (_pct(m["macro_f1"]), f"{split} macro-F1")]
    baseline = metrics.get("baseline")
    if baseline is not None:
        base = baseline.get("test") if split == "test" else baseline.get("val")
        if base:
            d = 100 * (m["accuracy"] - base["accuracy"])
            cards.append(
                (
                    _pct(base["accuracy"]),
                    f"baseline ({baseline.get('name', '')}), {d:+.1f} points for transfer",
                )
            )
    predictor = metrics.get("predictor", "transfer")
    alone = metrics.get("transfer_test") if split == "test" else None
    if predictor != "transfer" and alone:
        # say plainly that transfer alone did not pay: the kept model is not transfer alone
        cards.append(
            (
                _pct(alone["accuracy"]),
                f"transfer alone; the {predictor} was kept "
                f"({100 * (m['accuracy'] - alone['accuracy']):+.1f} points)",
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


def _config_section(config: RunConfig | None, metrics: Metrics) -> list[str]:
    out = ['<h2 id="config">Configuration and data</h2>']
    if config is not None:
        out += _config_tables(config)
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


def _config_tables(config: RunConfig) -> list[str]:
    """The data summary, the backbone, every setting, versions and machine."""
    out = []
    data = config.get("data", {})
    if data.get("summary"):
        out.append(f"<pre>{_e(data['summary'])}</pre>")
    counts = data.get("class_counts") or {}
    classes = data.get("classes") or []
    if counts and classes:
        parts = [p for p in ("train", "val", "test") if counts.get(p)]
        rows = [[c, *((counts.get(p) or {}).get(c, 0) for p in parts)] for c in classes[:60]]
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
    extra: dict[str, Any] = {}
    if "versions" in config:
        extra["versions"] = config["versions"]
    if "machine" in config:
        extra["machine"] = config["machine"]
    if extra:
        out.append(
            f"<details><summary>Versions and machine</summary><pre>{_e(json.dumps(extra, indent=1))}</pre></details>"
        )
    return out


def _epochs(rung: Rung) -> str:
    """'7 (of 8)': the epochs a fine-tuning rung ran and the ones it planned."""
    if "epochs_run" not in rung:
        return ""
    planned = rung.get("epochs")
    return f"{rung['epochs_run']}" + (f" (of {planned})" if planned is not None else "")


def _decisions_section(decisions: Decisions, metrics: Metrics) -> list[str]:
    out = ['<h2 id="decisions">Decisions: the ladder and the scores behind them</h2>']
    rungs = decisions.get("rungs") or []
    chosen = decisions.get("chosen")
    if decisions.get("reasons"):
        out.append("<ol>" + "".join(f"<li>{_e(r)}</li>" for r in decisions["reasons"]) + "</ol>")
    steps = decisions.get("steps") or []
    if steps:
        budget = (decisions.get("budget") or {}).get("time_budget_s")
        out.append(
            f"<h3>Time per step{f' (budget {budget:g} s)' if budget else ''}</h3>"
            + _table(
                ["step", "done", "seconds", "estimated cost (s)", "why", "runs it"],
                [
                    [
                        st["name"],
                        st["action"],
                        "" if "seconds" not in st else f"{st['seconds']:.1f}",
                        "" if "estimated_s" not in st else f"{st['estimated_s']:.0f}",
                        st["reason"],
                        st.get("flag", ""),
                    ]
                    for st in steps
                ],
            )
        )
    if rungs:
        rows = [
            [
                r["label"] + (" (chosen)" if r["label"] == chosen else ""),
                r.get("unfreeze", 0),
                f"head / {r['lr_ratio']:g}" if "lr_ratio" in r else "",
                _epochs(r),
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
                    "backbone LR",
                    "epochs run (of)",
                    "val accuracy",
                    "val macro-F1",
                    "val log-loss",
                    "seconds",
                ],
                rows,
                num=(1, 4, 5, 6, 7),
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


def _training_section(decisions: Decisions, metrics: Metrics) -> list[str]:
    out = ['<h2 id="training">Training and validation curves</h2>']
    hists: dict[str, list[EpochRecord]] = {
        r["label"]: r["history"] for r in decisions.get("rungs", []) if r.get("history")
    }
    ft = metrics.get("finetune")
    if not hists and ft and ft.get("history"):
        hists = {"fine-tuning": ft["history"]}
    if hists:
        out.append(_img(plot_history(hists), "training and validation loss and accuracy per epoch"))
        if ft:
            lrs = ", ".join(f"{k} {v:.2g}" for k, v in (ft.get("lrs") or {}).items())
            out.append(
                f"<p>Kept epoch {_e(ft.get('best_epoch'))} of {_e(ft.get('epochs_run'))} "
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


def _results_section(m: SplitMetrics, split: str, classes: list[str]) -> list[str]:
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


def _errors_section(errors: ErrorsDoc | None) -> list[str]:
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
    cells: list[str] = []
    texts: list[str] = []
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


def _forgetting_section(ft: FinetuneDetail) -> list[str]:
    f = ft.get("forgetting") or {}
    out = ['<h2 id="forgetting">Forgetting: how far fine-tuning moved the pretrained model</h2>']
    rows: list[list[Any]] = [
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


def _card_section(run_dir: Path) -> list[str]:
    """The model card (``model/MODEL_CARD.md``), linked and shown as written."""
    from .card import CARD_FILE, model_card

    if not (run_dir / "model" / "headstart.json").exists():
        return []
    text = model_card(run_dir, run_dir / "model")
    link = f'<a href="model/{CARD_FILE}">model/{CARD_FILE}</a>'
    return [
        '<h2 id="card">Model card</h2>',
        f'<p class="note">What a user of the model reads first; in the bundle as {link}.</p>',
        f"<details><summary>Show the card</summary><pre>{_e(text)}</pre></details>",
    ]


def _run_report(run_dir: Path) -> str:
    metrics_path = run_dir / METRICS_FILE
    metrics = cast(Metrics, read_json(metrics_path))
    config_path, decisions_path = run_dir / CONFIG_FILE, run_dir / DECISIONS_FILE
    config = cast(RunConfig, read_json(config_path)) if config_path.exists() else None
    decisions = (
        cast(Decisions, read_json(decisions_path)) if decisions_path.exists() else _NO_DECISIONS
    )
    errors = load_errors(run_dir)
    if "test" in metrics:
        split, m = "test", metrics["test"]
    elif "val" in metrics:
        split, m = "val", metrics["val"]
    else:
        raise DataError(
            f"{metrics_path} has neither 'test' nor 'val' metrics; it was not written "
            "by `headstart fit`. Re-run the fit."
        )
    classes: list[str] = list(m["per_class"])
    data_name = ""
    if config is not None:
        classes = config.get("data", {}).get("classes") or classes
        data_name = config.get("config", {}).get("data") or config.get("data", {}).get("source", "")
    title = f"{data_name}: {metrics.get('strategy', '')} with {metrics.get('backbone', '')}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Run folder {_e(run_dir.resolve())} · {_e(metrics.get("head", ""))} head</p>',
        '<nav><a href="#config">config &amp; data</a><a href="#decisions">decisions</a>'
        '<a href="#training">training</a><a href="#results">results</a>'
        '<a href="#calibration">calibration</a><a href="#errors">errors</a>'
        + ('<a href="#forgetting">forgetting</a>' if metrics.get("finetune") else "")
        + ('<a href="#card">model card</a>' if (run_dir / "model").is_dir() else "")
        + "</nav>",
        _summary_cards(metrics, split, m),
    ]
    body += _config_section(config, metrics)
    body += _decisions_section(decisions, metrics)
    body += _training_section(decisions, metrics)
    body += _results_section(m, split, list(classes))
    body += _errors_section(errors)
    ft = metrics.get("finetune")
    if ft:
        body += _forgetting_section(ft)
    body += _card_section(run_dir)
    return _page(f"headstart report: {title}", body)


# ----------------------------------------------------------------------------- curve report
def _study_table(
    rows: Sequence[CurveRow], cell: Callable[[CurveRow], str], modality: str | None = None
) -> str:
    """Fractions down, strategies across; `cell(row)` is the text of one entry."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    by = {(r["strategy"], r["fraction"]): r for r in rows}
    lines = []
    for f in sorted({r["fraction"] for r in rows}):
        n = next(r["n_labelled"] for r in rows if r["fraction"] == f)
        found = [by.get((s, f)) for s in strategies]
        lines.append([f"{100 * f:g}%", f"{n:,}", *("–" if r is None else cell(r) for r in found)])
    head = ["labels", "examples", *(strategy_label(s, modality) for s in strategies)]
    return _table(head, lines, num=range(1, len(strategies) + 2))


def _curve_report(run_dir: Path) -> str:
    doc = cast(CurveDoc, read_json(run_dir / CURVE_FILE))
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
        modality = doc.get("data", {}).get("modality")
        body.append(_img(plot_learning_curve(rows, title, modality), "learning curve"))
        n_seeds = len(doc.get("seeds", [])) or max(r["n_seeds"] for r in rows)

        def acc(r: CurveRow) -> str:
            fewer = f" ({r['n_seeds']} seeds)" if r["n_seeds"] < n_seeds else ""
            return f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}{fewer}"

        body.append(f"<h2>Test accuracy (%), mean ± std over {n_seeds} seed(s)</h2>")
        body.append(_study_table(rows, acc, modality))
        body.append("<h2>Test macro-F1 (%), mean ± std</h2>")
        body.append(
            _study_table(
                rows,
                lambda r: f"{100 * r['macro_f1_mean']:.1f} ± {100 * r['macro_f1_std']:.1f}",
                modality,
            )
        )
        body.append("<h2>Seconds per cell (mean; features extracted once, not counted)</h2>")
        body.append(_study_table(rows, lambda r: f"{r['seconds_mean']:.1f}", modality))
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
    if (d / CURVE_FILE).exists():
        page = _curve_report(d)
    elif (d / METRICS_FILE).exists():
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
