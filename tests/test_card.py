"""The model card: a real tiny fit writes ``model/MODEL_CARD.md`` holding the run's figures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from headstart.report.card import CARD_FILE, model_card, wilson_interval
from test_cli import write_image_folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_vision_dir: Path) -> dict[str, Path]:
    from headstart.config import FitConfig
    from headstart.fit import fit_run

    root = tmp_path_factory.mktemp("card")
    data = write_image_folder(root / "pets", per_class=14)
    common = dict(data=str(data), backbone=f"local-dir:{tiny_vision_dir}", engine="torch",
                  cache_dir=str(root / "cache"))  # fmt: skip
    out = {}
    for strategy, extra in (("extract", {}), ("finetune", {"unfreeze": 1, "epochs": 1})):
        cfg = FitConfig.build(out=str(root / strategy), strategy=strategy, **common, **extra)
        out[strategy] = fit_run(cfg, progress=False).out
    return out


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0.5, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = wilson_interval(1.0, 10)  # all right on 10: the interval still admits 72%
    assert round(lo, 4) == 0.7225 and hi == pytest.approx(1.0)
    assert wilson_interval(0.3, 0) == (0.0, 1.0)


def test_a_fit_writes_a_card_with_the_real_figures(runs):
    run = runs["extract"]
    card = (run / "model" / CARD_FILE).read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    test, base = metrics["test"], metrics["baseline"]["test"]
    n, acc = test["n"], test["accuracy"]
    lo, hi = wilson_interval(acc, n)
    row = next(ln for ln in card.splitlines() if ln.startswith("| **this model, test**"))
    assert f"| {n:,} | {acc:.4f} | ± {math.sqrt(acc * (1 - acc) / n):.4f} |" in row
    assert f"[{lo:.4f}, {hi:.4f}]" in row and f"{test['macro_f1']:.4f}" in row
    assert f"{test['accuracy_se']:.4f}" in row  # the s.e. fit reported
    assert (
        f"baseline ({metrics['baseline']['name']}), test | {n:,} | {base['accuracy']:.4f}" in card
    )
    for split, fp in config["data"]["fingerprint"].items():
        assert f"fingerprint ({split}, sha256 of contents and labels): `{fp}`" in card
    counts = config["data"]["class_counts"]
    assert (
        f"| cats | {counts['train']['cats']} | {counts['val']['cats']} | {counts['test']['cats']} |"
        in card
    )
    assert "`cats`, `dogs`" in card  # intended use names the classes
    # the small test split is named as a limitation, with its interval
    assert f"The test split is small ({n:,} examples)" in card and f"{lo:.3f} and {hi:.3f}" in card
    bundle = str(run / "model")
    for how in (f"headstart predict {bundle}", f"headstart export {bundle} --format onnx",
                f"headstart serve {bundle}", f'load_model("{bundle}")'):  # fmt: skip
        assert how in card
    assert "## Forgetting" not in card  # nothing was fine-tuned
    sha = json.loads((run / "model" / "headstart.json").read_text())["backbone"]["weights"][
        "sha256"
    ]
    assert f"weights sha256: `{sha}`" in card
    # the report links the card and shows it
    page = (run / "report.html").read_text()
    assert f'href="model/{CARD_FILE}"' in page and "Transfer over the baseline" in page


def test_a_fine_tuned_card_carries_the_forgetting_measures(runs):
    run = runs["finetune"]
    metrics = json.loads((run / "metrics.json").read_text())
    card = (run / "model" / CARD_FILE).read_text()
    assert metrics["strategy"] == "finetune"
    f = metrics["finetune"]["forgetting"]
    assert "## Forgetting (layers were fine-tuned)" in card
    assert f"feature CKA, pretrained vs tuned (1 = unchanged): {f['cka']:.3f}" in card
    assert f"on {f['probe_size']} validation examples" in card
    probe = metrics["extract_test"]["accuracy"]
    assert re.search(
        rf"linear probe alone \(before fine-tuning\), test \| [\d,]+ \| {probe:.4f}", card
    )


def test_the_card_needs_a_finished_run(tmp_path):
    from headstart.errors import DataError

    with pytest.raises(DataError, match=r"metrics\.json"):
        model_card(tmp_path)
