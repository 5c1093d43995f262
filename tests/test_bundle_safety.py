"""Bundles are untrusted input (issue 14, items 1, 2 and 5; acceptance 2).

Crafted bundles (paths escaping the bundle, edited class lists, truncated, missing or foreign
files, wrong dtypes and shapes) are each refused with one clear BundleError, never a traceback,
and references outside the bundle are refused before any file there is opened: an audit hook
(``sys.addaudithook``, event ``open``) in a fresh process records every file opened, and the
escaping targets exist and hold loadable files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import text_examples
from headstart import TransferClassifier, load_model
from headstart.bundle import read_bundle
from headstart.cli.main import main
from headstart.errors import BundleError, ConfigError, HeadstartError
from test_cli import SRC, headstart

TEXTS = ["good great movie", "awful boring plot", "love this film"]


@pytest.fixture(scope="module")
def good(tiny_text_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fitted tiny text model's bundle (self-contained: its backbone is a local folder)."""
    ex = text_examples(60)
    root = tmp_path_factory.mktemp("safety")
    clf = TransferClassifier(
        backbone=f"local-dir:{tiny_text_dir}", engine="torch", cache_dir=str(root / "cache")
    ).fit(ex.inputs, np.array(ex.classes)[ex.labels])
    return clf.save(root / "good" / "model")


def craft(good: Path, dest: Path, edit=None) -> Path:
    """A copy of the good bundle at ``dest``, with ``edit(meta, folder)`` applied."""
    shutil.copytree(good, dest)
    if edit is not None:
        meta = json.loads((dest / "headstart.json").read_text())
        edit(meta, dest)
        (dest / "headstart.json").write_text(json.dumps(meta, indent=2))
    return dest


def unbundle(meta: dict, folder: Path, name: str) -> None:
    """Make the bundle point at ``name`` instead of carrying its backbone."""
    meta["backbone"]["bundled"] = None
    meta["backbone"]["name"] = name
    shutil.rmtree(folder / "backbone")


def outside_model(tiny_text_dir: Path, where: Path) -> Path:
    """A loadable model folder outside every bundle: opening it would be detectable."""
    shutil.copytree(tiny_text_dir, where)
    return where


def test_good_bundle_loads_and_predicts(good: Path) -> None:
    clf = load_model(good)
    assert clf.predict_proba(TEXTS, cache=False).shape == (3, 2)
    assert (good / "backbone" / "weights.safetensors").is_file()


# ------------------------------------------------------------------------- path escapes
ESCAPES = {
    "local-dir-abs": lambda outside, bundle: f"local-dir:{outside}",
    "bare-abs-path": lambda outside, bundle: str(outside),
    "hf-dotdot": lambda outside, bundle: "hf:" + os.path.relpath(outside, bundle),
    "local-dir-dotdot": lambda outside, bundle: "local-dir:" + os.path.relpath(outside, bundle),
    "hf-abs": lambda outside, bundle: f"hf:{outside}",
    "torchvision-path": lambda outside, bundle: "torchvision:../../x",
    "timm-path": lambda outside, bundle: "timm:/etc/passwd",
}

AUDIT = r"""
import json, os, sys
outside = os.path.realpath(sys.argv[1])
opened = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
        p = args[0]
        if isinstance(p, (str, bytes, os.PathLike)):
            p = os.path.realpath(os.fsdecode(p))
            if p == outside or p.startswith(outside + os.sep):
                opened.append(p)
sys.addaudithook(hook)
from headstart.bundle import read_bundle
from headstart.cli.main import main
from headstart.errors import HeadstartError
results, cli = {}, {}
for b in sys.argv[2:]:
    try:
        read_bundle(b)
        results[b] = "loaded"
    except HeadstartError as e:
        results[b] = type(e).__name__ + ": " + str(e)
    cli[b] = main(["predict", b, "good movie", "-q"])  # the command's own path, audited too
before = len(opened)
open(os.path.join(outside, "config.json")).close()  # the hook sees an open outside
print(json.dumps({"results": results, "cli": cli, "opened": opened[:before],
                  "probe": opened[before:]}))
"""


def test_references_outside_the_bundle_are_refused_before_anything_there_is_opened(
    good: Path, tiny_text_dir: Path, tmp_path: Path
) -> None:
    outside = outside_model(tiny_text_dir, tmp_path / "elsewhere" / "model")
    bundles = []
    for case, name in ESCAPES.items():
        dest = tmp_path / "b" / case / "model"
        ref = name(outside, dest)
        bundles.append(craft(good, dest, lambda m, f, ref=ref: unbundle(m, f, ref)))
    # a symbolic link out of the bundle, in place of the head's file
    link = craft(good, tmp_path / "b" / "link" / "model")
    (link / "head.safetensors").unlink()
    (link / "head.safetensors").symlink_to(outside / "model.safetensors")
    bundles.append(link)
    # the description itself a link out (to a valid bundle description elsewhere)
    meta_link = craft(good, tmp_path / "b" / "meta-link" / "model")
    shutil.copy(meta_link / "headstart.json", outside / "headstart.json")
    (meta_link / "headstart.json").unlink()
    (meta_link / "headstart.json").symlink_to(outside / "headstart.json")
    bundles.append(meta_link)
    res = subprocess.run(
        [sys.executable, "-c", AUDIT, str(outside), *map(str, bundles)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["probe"], "the audit hook must see an open outside the bundle"
    assert out["opened"] == [], f"files outside the bundle were opened: {out['opened']}"
    assert set(out["cli"].values()) == {2}, out["cli"]  # `headstart predict` exits 2 on each
    for b in bundles:
        msg = out["results"][str(b)]
        assert msg.startswith("BundleError: "), msg
        assert "Traceback" not in msg
        assert (
            "outside the bundle" in msg
            or "not a Hugging Face repo id" in msg
            or ("model name is letters" in msg)
        ), msg


def test_a_trusted_folder_is_accepted_and_predicts_as_before(
    good: Path, tiny_text_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = outside_model(tiny_text_dir, tmp_path / "trusted" / "model")
    dest = craft(good, tmp_path / "m", lambda m, f: unbundle(m, f, f"local-dir:{outside}"))
    with pytest.raises(BundleError, match="--trust-path FOLDER"):
        read_bundle(dest)
    with pytest.raises(BundleError, match="outside the bundle"):
        read_bundle(dest, trusted_paths=[tmp_path / "other"])  # a sibling is not trusted
    clf = load_model(dest, trusted_paths=[outside.parent])
    expected = load_model(good).predict_proba(TEXTS, cache=False)
    np.testing.assert_allclose(clf.predict_proba(TEXTS, cache=False), expected, atol=1e-6)
    # the same through the CLI flag
    capsys.readouterr()
    assert main(["predict", str(dest), *TEXTS, "--trust-path", str(outside), "-q"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [clf.classes_[i] for i in expected.argmax(1)]
    assert main(["predict", str(dest), *TEXTS, "-q"]) == 2
    assert "--trust-path" in capsys.readouterr().err


def test_an_hf_name_is_not_read_from_a_folder_in_the_working_directory(
    good: Path, tiny_text_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside_model(tiny_text_dir, tmp_path / "cwd" / "acme" / "model")
    dest = craft(good, tmp_path / "m", lambda m, f: unbundle(m, f, "hf:acme/model"))
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(BundleError, match="relative to the current directory"):
        read_bundle(dest)


def test_a_local_folder_backbone_cannot_be_saved_as_a_reference(good: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local folder"):
        load_model(good).save(tmp_path / "m", self_contained=False)


# ------------------------------------------------------------------------ crafted files
def _set(path: str, value):
    def edit(meta: dict, folder: Path) -> None:
        *keys, last = path.split(".")
        d = meta
        for k in keys:
            d = d[k]
        d[last] = value

    return edit


def _rewrite_head(change):
    def edit(meta: dict, folder: Path) -> None:
        from safetensors.numpy import load_file, save_file

        state = load_file(str(folder / "head.safetensors"))
        change(state)
        save_file(state, str(folder / "head.safetensors"))

    return edit


def _truncate(rel: str, keep: float = 0.5):
    def edit(meta: dict, folder: Path) -> None:
        f = folder / rel
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * keep)])

    return edit


def _delete(rel: str):
    def edit(meta: dict, folder: Path) -> None:
        p = folder / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return edit


def _rewrite_bundled(rel: str, write):
    """Replace a bundled file and record its new hash (an attacker can edit both)."""

    def edit(meta: dict, folder: Path) -> None:
        from headstart._io import sha256_file

        f = folder / "backbone" / rel
        write(f)
        meta["backbone"]["bundled"]["files"][rel] = sha256_file(f)

    return edit


def _json_edit(**changes):
    def write(f: Path) -> None:
        f.write_text(json.dumps({**json.loads(f.read_text()), **changes}))

    return write


def _other_weights(f: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"encoder.embeddings.word_embeddings.weight": torch.zeros(3, 3)}, str(f))


def _tokenizer_pointing_out(meta: dict, folder: Path) -> None:
    """An attacker who also updates the recorded hash: the JSON value itself is refused."""
    from headstart._io import sha256_file

    f = folder / "backbone" / "tokenizer_config.json"
    doc = json.loads(f.read_text())
    doc["tokenizer_file"] = "/etc/passwd"
    f.write_text(json.dumps(doc))
    meta["backbone"]["bundled"]["files"]["tokenizer_config.json"] = sha256_file(f)


CRAFTED = {
    "three-classes-two-outputs": (_set("classes", ["neg", "pos", "extra"]), "lists 3 classes"),
    "one-class": (_set("classes", ["neg"]), "at least 2 class names"),
    "duplicate-classes": (_set("classes", ["neg", "neg"]), "distinct names"),
    "missing-head": (
        _delete("head.safetensors"),
        "head.safetensors (the head's weights) is missing",
    ),
    "truncated-head": (_truncate("head.safetensors"), "truncated or damaged"),
    "truncated-backbone": (
        _truncate("backbone/weights.safetensors", 0.9),
        "does not match the sha256",
    ),
    "missing-backbone-folder": (_delete("backbone"), "lost its backbone"),
    "int-head-arrays": (
        _rewrite_head(lambda s: s.update(coef=s["coef"].astype(np.int64))),
        "float32 or float64",
    ),
    "wrong-head-shape": (
        _rewrite_head(lambda s: s.update(coef=np.zeros((2, 7)))),
        "does not match headstart.json",
    ),
    "nan-head": (
        _rewrite_head(lambda s: s.update(intercept=np.full_like(s["intercept"], np.nan))),
        "NaN or infinite",
    ),
    "feature-dim": (_set("backbone.feature_dim", 99), "feature_dim is 99"),
    "huge-max-length": (_set("backbone.max_length", 10**12), "positive integer up to"),
    "format-string": (_set("format", "1"), "not a headstart bundle description"),
    "bad-modality": (_set("modality", "video"), "'modality' must be one of"),
    "pretrained-not-bool": (_set("backbone.pretrained", "yes"), "true or false"),
    "unknown-head": (_set("head.name", "forest"), "head.config.type"),
    "tokenizer-file-outside": (_tokenizer_pointing_out, "a location outside the bundle"),
    "unknown-model-type": (
        _rewrite_bundled("config.json", _json_edit(model_type="evil")),
        "cannot be loaded",
    ),
    "damaged-tokenizer": (
        _rewrite_bundled("tokenizer.json", lambda f: f.write_text('{"model": 3}')),
        "cannot be loaded",
    ),
    "other-architecture": (
        lambda m, f: (
            unbundle(m, f, "torchvision:mobilenet_v3_small"),
            m["backbone"].update(pretrained=False),
        ),
        "features here",
    ),
    "foreign-weights": (_rewrite_bundled("weights.safetensors", _other_weights), "does not fit"),
    "extra-bundled-file": (
        lambda m, f: (f / "backbone" / "pytorch_model.bin").write_bytes(b"x"),
        "is not one of the files",
    ),
    "transcription-kind": (_set("kind", "transcription"), "headstart transcribe predict"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_bundles_are_refused_with_one_clear_message(
    good: Path, tmp_path: Path, case: str
) -> None:
    edit, expected = CRAFTED[case]
    dest = craft(good, tmp_path / "model", edit)
    with pytest.raises(BundleError) as info:
        read_bundle(dest)
    msg = str(info.value)
    assert expected in msg, msg
    assert str(dest) in msg  # says where


def test_broken_json_is_one_clear_message(good: Path, tmp_path: Path) -> None:
    dest = craft(good, tmp_path / "model")
    (dest / "headstart.json").write_text('{"format": 1, "classes": ["a", ')
    with pytest.raises(BundleError, match="is not valid JSON"):
        read_bundle(dest)


@pytest.mark.parametrize("key", ["modality", "classes", "backbone"])
def test_a_missing_key_is_a_message_from_every_command(
    good: Path, tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = craft(good, tmp_path / "model", lambda m, f: m.pop(key))
    for argv in (
        ["predict", str(dest), "good movie", "-q"],
        ["export", str(dest), "--out", str(tmp_path / "m.onnx")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"'{key}' must be" in err and "Traceback" not in err, err


# -------------------------------------------------------------------- the CLI, for real
def test_headstart_predict_prints_the_message_without_a_traceback(
    good: Path, tiny_text_dir: Path, tmp_path: Path
) -> None:
    three = craft(good, tmp_path / "three", _set("classes", ["neg", "pos", "extra"]))
    outside = outside_model(tiny_text_dir, tmp_path / "elsewhere")
    escape = craft(
        good,
        tmp_path / "escape",
        lambda m, f: unbundle(m, f, "hf:" + os.path.relpath(outside, tmp_path / "escape")),
    )
    for bundle, expected in [(three, "lists 3 classes"), (escape, "not a Hugging Face repo id")]:
        res = headstart("predict", str(bundle), "good movie")
        assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, res.stderr[-3000:]
        assert res.stderr.startswith("headstart predict: error:"), res.stderr[-2000:]
        assert expected in res.stderr and res.stdout == ""


def test_every_refusal_is_a_headstart_error() -> None:
    assert issubclass(BundleError, HeadstartError) and issubclass(BundleError, ValueError)
