"""Run reports: errors.json, the HTML page, and what headless Chromium makes of it."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types
import typing
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import image_examples, text_examples
from headstart.errors import DataError
from headstart.report import SNIPPET_CHARS, load_errors, save_errors, schema, write_report

SRC = str(Path(__file__).resolve().parents[1] / "src")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
)  # fmt: skip
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="needs Debian's chromium: apt-get install -y chromium (.ci/run installs it)",
)

# Injected first in <head> of a copy of the page: records script errors, console errors and
# failed resource loads, then (on load) what the browser made of every <img>.
PROBE = """<script>
window.__errs = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  __errs.push(t && t !== window ? "resource failed: " + (t.src || t.href || t.tagName)
                                : "script error: " + e.message);
}, true);
["error", "warn"].forEach(function (k) {
  var f = console[k];
  console[k] = function () { __errs.push(k + ": " + [].join.call(arguments, " "));
                             f.apply(console, arguments); };
});
window.addEventListener("load", function () {
  var imgs = [].map.call(document.images, function (i) {
    var r = i.getBoundingClientRect();
    return {complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
            rw: r.width, rh: r.height, src: i.getAttribute("src").slice(0, 22)};
  });
  var p = document.createElement("pre");
  p.id = "headstart-probe";
  p.textContent = JSON.stringify({imgs: imgs, errors: __errs});
  document.body.appendChild(p);
});
</script>"""


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-profile-{uuid.uuid4().hex[:8]}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def console_lines(stderr: str) -> list[str]:
    """Console messages Chromium logged (script errors, console.log/error calls)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def inspect_page(page: Path, tmp: Path) -> dict:
    """Load `page` in headless Chromium; return its images as rendered, errors and console.

    The page itself is loaded once as it is (its console must stay silent) and once as a
    copy, beside it, with :data:`PROBE` injected to measure every image after load.
    """
    plain = chromium(page, tmp, "--dump-dom")
    assert plain.returncode == 0, plain.stderr[-2000:]
    probed = page.with_name(f"probe-{uuid.uuid4().hex[:8]}.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1))
    try:
        res = chromium(
            probed, tmp, "--dump-dom", "--virtual-time-budget=3000", "--window-size=1200,900"
        )
    finally:
        probed.unlink()
    m = re.search(r'<pre id="headstart-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the probe did not run: {res.stdout[-500:]} {res.stderr[-1500:]}"
    found = json.loads(html.unescape(m.group(1)))
    found["console"] = console_lines(plain.stderr)
    found["dom_imgs"] = len(re.findall(r"<img\b", plain.stdout))
    return found


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (ValueError if it is not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def embedded_pngs(page: str) -> list[tuple[int, int]]:
    """Sizes of every <img>'s data-URI PNG; fails if an <img> has any other source."""
    srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)
    assert len(srcs) == len(re.findall(r"<img\b", page))
    sizes = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        sizes.append(png_size(base64.b64decode(src.split(",", 1)[1], validate=True)))
    return sizes


def assert_self_contained(page: str) -> None:
    assert not re.search(r'(?:src|href)\s*=\s*"(?:https?:)?//', page), "external resource"
    assert "url(http" not in page and "@import" not in page and "<link" not in page


def headstart(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "headstart", *args], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip


def schema_mismatches(value: Any, tp: Any, where: str = "") -> list[str]:
    """Where parsed JSON `value` departs from `tp`, a type of :mod:`headstart.report.schema`:
    missing keys, keys the TypedDict does not name, values of the wrong kind."""
    if tp is Any:
        return []
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected {tp.__name__}"]
        hints = typing.get_type_hints(tp)
        out = [f"{where}.{k}: missing" for k in sorted(tp.__required_keys__ - value.keys())]
        if tp is not schema.DataDescription:  # documented as open: load_data adds more keys
            out += [
                f"{where}.{k}: not in {tp.__name__}" for k in sorted(value.keys() - hints.keys())
            ]
        for k in sorted(value.keys() & hints.keys()):
            out += schema_mismatches(value[k], hints[k], f"{where}.{k}")
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        tries = [schema_mismatches(value, a, where) for a in args]
        return [] if any(t == [] for t in tries) else min(tries, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, expected a list"]
        return [
            m for i, v in enumerate(value) for m in schema_mismatches(v, args[0], f"{where}[{i}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        return [m for k, v in value.items() for m in schema_mismatches(v, args[1], f"{where}.{k}")]
    kinds = {
        float: (int, float),
        int: (int,),
        str: (str,),
        bool: (bool,),
        type(None): (type(None),),
    }
    ok = isinstance(value, kinds[tp]) and (tp is bool or not isinstance(value, bool))
    return [] if ok else [f"{where}: {value!r}, expected {tp.__name__}"]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, tiny_vision_dir: Path) -> Path:
    """A real fine-tuned tiny run; its test folder holds three mislabelled images (dogs filed
    as cats), so the model has confident errors to show."""
    from headstart.data.load import load_data
    from headstart.estimator import load_model
    from test_cli import write_image_folder

    root = tmp_path_factory.mktemp("report")
    data = write_image_folder(root / "pets", per_class=30)
    test = write_image_folder(root / "test", per_class=8)
    for i, f in enumerate(sorted((test / "dogs").glob("*.png"))[:3]):
        f.rename(test / "cats" / f"mislabelled-{i}.png")
    out = root / "run"
    res = headstart("fit", str(data), "--test", str(test), "--backbone", f"local-dir:{tiny_vision_dir}",
                    "--strategy", "finetune", "--epochs", "2", "--patience", "5", "--engine", "torch",
                    "--out", str(out), "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    splits = load_data(str(data), test=str(test))
    assert splits.test is not None
    proba = load_model(out / "model").predict_proba(splits.test)
    save_errors(out, splits.test, splits.test.labels, proba, k=6)
    write_report(out)
    return out


# ----------------------------------------------------------------------------------- tests
def test_errors_json_lists_the_most_confident_mistakes(finetuned: Path):
    doc = load_errors(finetuned)
    assert doc is not None
    metrics = json.loads((finetuned / "metrics.json").read_text())
    n_wrong = round((1 - metrics["test"]["accuracy"]) * metrics["test"]["n"])
    assert doc["n_wrong"] == n_wrong >= 1  # the mislabelled dogs at least
    rows = doc["errors"]
    assert len(rows) == min(6, n_wrong)
    conf = [r["confidence"] for r in rows]
    assert conf == sorted(conf, reverse=True)
    for r in rows:
        assert r["true"] != r["pred"] and r["true"] in ("cats", "dogs")
        assert png_size(base64.b64decode(r["input"]["png"])) == (80, 80)  # 40 px, enlarged x2


def test_the_run_folder_matches_the_schema_the_report_reads(finetuned: Path):
    """What `fit` writes and what the report reads are one definition (report/schema.py)."""
    files = {schema.METRICS_FILE: schema.Metrics, schema.DECISIONS_FILE: schema.Decisions,
             schema.CONFIG_FILE: schema.RunConfig, schema.ERRORS_FILE: schema.ErrorsDoc}  # fmt: skip
    docs = {name: json.loads((finetuned / name).read_text()) for name in files}
    for name, tp in files.items():
        assert schema_mismatches(docs[name], tp) == [], name
    # every optional block was there to be checked: test, fine-tuning, baseline, both rungs
    metrics, decisions = docs[schema.METRICS_FILE], docs[schema.DECISIONS_FILE]
    assert {"test", "finetune", "extract_test", "baseline"} <= metrics.keys()
    assert [("head_selection" in r, "forgetting" in r) for r in decisions["rungs"]] == [
        (True, False),
        (False, True),
    ]
    # and the check does catch a renamed key, a missing one and a value of the wrong kind
    forgetting = metrics["finetune"]["forgetting"]
    forgetting["similarity"] = forgetting.pop("cka")
    del metrics["timings"]
    metrics["n_test"] = "16"
    assert schema_mismatches(metrics, schema.Metrics) == [
        ".timings: missing",
        ".finetune.forgetting.cka: missing",
        ".finetune.forgetting.similarity: not in Forgetting",
        ".n_test: '16', expected int",
    ]


def test_report_has_every_section(finetuned: Path):
    page = (finetuned / "report.html").read_text()
    metrics = json.loads((finetuned / "metrics.json").read_text())
    for anchor in (
        "config",
        "decisions",
        "training",
        "results",
        "calibration",
        "errors",
        "forgetting",
    ):
        assert f'id="{anchor}"' in page, anchor
    assert f"{100 * metrics['test']['accuracy']:.1f}%" in page
    assert "feature CKA" in page and f"{metrics['finetune']['forgetting']['cka']:.3f}" in page
    assert "fine-tuning the top 2 groups (chosen)" in page
    n_errors = len(load_errors(finetuned)["errors"])  # type: ignore[index]
    assert page.count('<div class="err">') == n_errors
    sizes = embedded_pngs(page)
    # C path, rungs, history, confusion, per-class, reliability, weight drift + thumbnails
    assert len(sizes) == 7 + n_errors
    plots = [(w, h) for w, h in sizes if (w, h) != (80, 80)]
    assert len(plots) == 7 and all(w > 300 and h > 200 for w, h in plots)
    assert_self_contained(page)


@needs_chromium
def test_chromium_renders_every_plot_without_console_errors(finetuned: Path, tmp_path: Path):
    page = finetuned / "report.html"
    found = inspect_page(page, tmp_path)
    assert found["console"] == [] and found["errors"] == []
    imgs = found["imgs"]
    assert len(imgs) == found["dom_imgs"] == len(embedded_pngs(page.read_text())) >= 8
    for img in imgs:
        assert img["complete"] and img["src"].startswith("data:image/png")
        assert img["w"] > 0 and img["h"] > 0, img  # decoded by the browser
        assert img["rw"] > 0 and img["rh"] > 0, img  # laid out with a visible size
    shot = tmp_path / "report.png"
    res = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert res.returncode == 0 and png_size(shot.read_bytes()) == (1200, 1600)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # text and plots, not a blank page


@needs_chromium
def test_the_browser_checks_do_catch_a_broken_page(tmp_path: Path):
    """The checks above must be able to fail: a script error, a broken and a missing image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                   '<img src="data:image/png;base64,AAAA"><img src="missing.png">'
                   "<script>notDefined();</script></body></html>")  # fmt: skip
    found = inspect_page(bad, tmp_path)
    assert any("notDefined" in line for line in found["console"])
    assert any("notDefined" in e for e in found["errors"])
    assert sum("resource failed" in e for e in found["errors"]) == 2
    assert [i["w"] for i in found["imgs"]] == [0, 0]


def test_extraction_report_explains_what_is_absent(tmp_path: Path, tiny_vision_dir: Path):
    from test_cli import write_image_folder

    data = write_image_folder(tmp_path / "pets", per_class=10)
    out = tmp_path / "run"
    res = headstart("fit", str(data), "--backbone", f"local-dir:{tiny_vision_dir}", "--strategy",
                    "extract", "--engine", "torch", "--out", str(out), "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    # every fit writes its page and the test set's most confident mistakes
    page = (out / "report.html").read_text()
    errors = load_errors(out)
    assert errors is not None and errors["split"] == "test"
    assert 'id="forgetting"' not in page and "No per-epoch curves" in page
    assert "pixels+logreg" in page  # the baseline beside the transfer result
    assert len(embedded_pngs(page)) == 4 + len(errors["errors"])  # 4 plots + thumbnails
    # `headstart report` rewrites the page from the folder, and says what is missing
    (out / "errors.json").unlink()
    rep = headstart("report", str(out))
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.strip() == str(out / "report.html")
    page = (out / "report.html").read_text()
    assert "No errors.json in this folder" in page
    assert len(embedded_pngs(page)) == 4  # C path, confusion, per-class, reliability


def test_save_errors_thumbnails_and_snippets(tmp_path: Path):
    ex = image_examples(20, size=28)
    proba = np.full((20, 2), 0.5)
    proba[:, 1] = np.linspace(0.05, 0.95, 20)  # confident about class 1 at the end
    proba[:, 0] = 1 - proba[:, 1]
    y = np.zeros(20, dtype=np.int64)  # everything labelled 'left': the 'right' guesses are wrong
    save_errors(tmp_path, ex, y, proba, k=3)
    doc = json.loads((tmp_path / "errors.json").read_text())
    assert [r["index"] for r in doc["errors"]] == [19, 18, 17]
    assert doc["n_wrong"] == 10 and doc["n"] == 20
    assert {r["pred"] for r in doc["errors"]} == {"right"}
    for r in doc["errors"]:
        assert png_size(base64.b64decode(r["input"]["png"])) == (84, 84)  # 28 px x3, sharp

    texts = text_examples(6)
    texts.inputs = list(texts.inputs)
    texts.inputs[5] = "word " * 200
    proba = np.tile([[0.1, 0.9]], (6, 1))
    save_errors(tmp_path, texts, np.zeros(6, dtype=np.int64), proba, k=6)
    rows = load_errors(tmp_path)["errors"]  # type: ignore[index]
    long = next(r for r in rows if r["index"] == 5)["input"]
    assert long["kind"] == "text" and long["chars"] == 999
    assert long["text"].endswith("…") and len(long["text"]) == SNIPPET_CHARS

    with pytest.raises(DataError, match="one label and one probability row per example"):
        save_errors(tmp_path, texts, np.zeros(5, dtype=np.int64), proba)
    with pytest.raises(DataError, match="k must be"):
        save_errors(tmp_path, texts, np.zeros(6, dtype=np.int64), proba, k=-1)


def test_text_errors_show_as_escaped_snippets(finetuned: Path, tmp_path: Path):
    for name in ("config.json", "metrics.json", "decisions.json"):
        shutil.copy(finetuned / name, tmp_path / name)
    texts = text_examples(4)
    texts.inputs = ["<b>not bold</b> & a " + t for t in texts.inputs]
    save_errors(tmp_path, texts, np.zeros(4, dtype=np.int64), np.tile([[0.2, 0.8]], (4, 1)))
    page = write_report(tmp_path).read_text()
    assert page.count('<div class="snip">') == 4 and '<div class="err">' not in page
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; a" in page and "<b>not bold" not in page


def test_write_report_refuses_what_is_not_a_run(tmp_path: Path):
    with pytest.raises(DataError, match="is not a folder"):
        write_report(tmp_path / "nope")
    with pytest.raises(DataError, match=r"neither metrics\.json .* nor curve\.json"):
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text('{"test": ')
    with pytest.raises(DataError, match=r"metrics\.json is not valid JSON"):
        write_report(tmp_path)
    res = headstart("report", str(tmp_path / "nope"))
    assert res.returncode == 2 and "is not a folder" in res.stderr and "Traceback" not in res.stderr
