"""Fine-tuning: freezing, BatchNorm, learning-rate groups, the guard, the ladder, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import image_examples
from headstart.backbones import load_backbone
from headstart.config import FinetuneConfig, LadderConfig
from headstart.errors import ConfigError
from headstart.forgetting import ForgettingWarning, check_learning_rates, linear_cka
from headstart.heads import LogisticHead
from headstart.strategies.ladder import Rung, next_step
from headstart.strategies.training import TransferModel, finetune, param_groups, select_groups

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _probe_head(backbone, ex):
    from headstart.features.cache import features_in_memory

    F = features_in_memory(backbone, ex)
    return LogisticHead(C=1.0, refit=False).fit(F, ex.labels).to_torch()


def test_frozen_parameters_and_batchnorm_statistics_do_not_move():
    torch.manual_seed(0)
    bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
    train, val = image_examples(48), image_examples(16, seed=1)
    head = _probe_head(bb, train)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    trainable, frozen = select_groups(bb, 1)
    cfg = FinetuneConfig(unfreeze=1, epochs=1, batch_size=16, lr=1e-2, patience=5, keep_start=False)
    finetune(bb, head, train, val, cfg, progress=False)
    after = bb.state_dict()
    tuned = {p for g in trainable for p in g.params}
    frozen_names = {p for g in frozen for p in g.params}
    frozen_modules = {n.rsplit(".", 1)[0] for n in frozen_names}
    moved_frozen = [
        k
        for k in before
        if k.rsplit(".", 1)[0] in frozen_modules and not torch.equal(before[k], after[k])
    ]
    assert moved_frozen == []  # weights and BN running stats of frozen groups
    bn_buffers = [
        k for k in before if k.endswith("running_mean") and k.rsplit(".", 1)[0] in frozen_modules
    ]
    assert bn_buffers, "the test needs BatchNorm layers in frozen groups"
    assert any(not torch.equal(before[k], after[k]) for k in tuned)


@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_batchnorm_of_trainable_groups_follows_the_bn_mode(bn: str):
    """bn=frozen: trainable groups' BN keeps its pretrained statistics (affine params still
    train); bn=train: their running statistics follow the new data."""
    torch.manual_seed(0)
    bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
    train, val = image_examples(48), image_examples(16, seed=1)
    head = _probe_head(bb, train)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    trainable, _ = select_groups(bb, 2)
    tuned_modules = {p.rsplit(".", 1)[0] for g in trainable for p in g.params}
    stats = [
        k for k in before if k.endswith("running_var") and k.rsplit(".", 1)[0] in tuned_modules
    ]
    affine = [k.replace("running_var", "weight") for k in stats]  # the same BN layers' scales
    assert stats, "the test needs BatchNorm layers in trainable groups"
    cfg = FinetuneConfig(
        unfreeze=2, epochs=1, batch_size=16, lr=1e-2, patience=5, bn=bn, keep_start=False
    )
    finetune(bb, head, train, val, cfg, progress=False)
    after = bb.state_dict()
    stats_moved = [k for k in stats if not torch.equal(before[k], after[k])]
    assert any(not torch.equal(before[k], after[k]) for k in affine)
    if bn == "frozen":
        assert stats_moved == []
    else:
        assert len(stats_moved) == len(stats)
    with pytest.raises(ConfigError, match="'bn' parameter of finetune must be one of"):
        FinetuneConfig(bn="sync").validate()


def test_fine_tuning_that_only_hurts_hands_back_its_starting_point():
    """LP-FT starts from the probe; when no epoch beats that start on validation (here a
    learning rate that wrecks the network), the start's weights come back, not the wreck."""
    torch.manual_seed(0)
    bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
    train, val = image_examples(48), image_examples(32, seed=1)
    head = _probe_head(bb, train)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    cfg = FinetuneConfig(unfreeze=-1, epochs=2, batch_size=16, lr=30.0, lr_ratio=1.0,
                         grad_clip=0.0, patience=5)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForgettingWarning)
        model, res = finetune(bb, head, train, val, cfg, progress=False)
    assert res.start_val_accuracy is not None and res.start_val_accuracy >= 0.9
    assert max(h["val_accuracy"] for h in res.history) < res.start_val_accuracy
    assert res.kept_start and res.best_epoch == 0 and "starting point" in res.stopped
    assert res.val_accuracy == res.start_val_accuracy
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(head_before[k], v) for k, v in model.head.state_dict().items())


def test_keep_epoch_last_runs_the_schedule_and_keeps_its_final_weights():
    """``last`` ignores patience and scores the final weights (the ladder's rungs: their
    validation score then decides between rungs without having chosen the epoch); "best"
    restores the best validation epoch."""
    from headstart.features.cache import features_in_memory
    from headstart.strategies.finetune import Finetune

    train, val = image_examples(48), image_examples(32, seed=1)
    runs = {}
    for keep in ("last", "best"):
        torch.manual_seed(0)
        bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
        head = _probe_head(bb, train)
        cfg = FinetuneConfig(unfreeze=1, epochs=4, batch_size=16, lr=5e-2, patience=1,
                             keep_start=False, keep_epoch=keep)  # fmt: skip
        model, res = finetune(bb, head, train, val, cfg, progress=False)
        accs = [h["val_accuracy"] for h in res.history]
        with torch.no_grad():  # the weights handed back are the ones scored
            logits = model.head(torch.as_tensor(features_in_memory(model.backbone, val)))
        assert res.val_accuracy == pytest.approx(
            float((logits.argmax(1).numpy() == val.labels).mean())
        )
        runs[keep] = (res, accs)
    last, accs = runs["last"]
    assert last.epochs_run == 4 and last.best_epoch == 4 and "early stop" not in last.stopped
    assert "last epoch" in last.stopped
    assert last.val_accuracy == accs[-1]
    best, accs = runs["best"]
    assert best.val_accuracy == max(accs) and accs[best.best_epoch - 1] == max(accs)
    assert runs["best"][1] == runs["last"][1][: best.epochs_run]  # same seed, same epochs
    # "auto": last for a ladder rung (budgeted), best for --strategy finetune
    assert Finetune(FinetuneConfig(), budgeted=True).config.keep_epoch == "last"
    assert Finetune(FinetuneConfig()).config.keep_epoch == "best"
    assert Finetune(FinetuneConfig(keep_epoch="best"), budgeted=True).config.keep_epoch == "best"


def test_a_budgeted_run_does_not_start_an_epoch_that_would_end_past_its_budget():
    """The time after the budget belongs to what follows the fit (scoring the test split):
    with room for half an epoch more, the second epoch is not started."""
    train, val = image_examples(96), image_examples(16, seed=1)

    def run(epochs: int, budget: float | None):
        torch.manual_seed(0)
        bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
        cfg = FinetuneConfig(unfreeze=1, epochs=epochs, batch_size=16, keep_start=False,
                             keep_epoch="last")  # fmt: skip
        return finetune(bb, _probe_head(bb, train), train, val, cfg, progress=False,
                        time_budget_s=budget)[1]  # fmt: skip

    one = run(1, None)
    budget = one.seconds + 0.5 * one.history[0]["seconds"]
    res = run(3, budget)
    assert res.epochs_run == 1, res.stopped
    assert "next epoch" in res.stopped or "spent" in res.stopped
    assert run(3, None).epochs_run == 3  # unbudgeted, the same run goes on


def test_learning_rate_groups_follow_ratio_and_layer_decay():
    bb = load_backbone("timm:test_efficientnet", pretrained=False)
    head = torch.nn.Linear(bb.feature_dim, 3)
    model = TransferModel(bb, head)
    trainable, _ = select_groups(bb, 3)
    cfg = FinetuneConfig(lr=1e-3, lr_ratio=20, layer_decay=0.5)
    groups, lrs = param_groups(model, trainable, cfg)
    assert lrs["head"] == 1e-3
    names = [g.name for g in reversed(trainable)]  # top first
    assert [lrs[n] for n in names] == pytest.approx([5e-5, 2.5e-5, 1.25e-5])
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert all(
        id(p) in in_groups
        for n, p in bb.named_parameters()
        if any(n in g.params for g in trainable)
    )
    assert all(g["weight_decay"] == 0.0 for g in groups if g["params"][0].ndim <= 1)


def test_guard_flags_a_backbone_rate_near_the_heads():
    with pytest.warns(ForgettingWarning, match="10-100x"):
        verdict = check_learning_rates(1e-3, 5e-4)
    assert verdict["ok"] is False and verdict["ratio"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="--strict"):
        check_learning_rates(1e-3, 1e-3, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_learning_rates(1e-3, 1e-3 / 30)["ok"] is True


def test_linear_cka_is_one_for_the_same_space_and_low_for_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 16))) < 0.2


# ------------------------------------------------------------------------------ ladder
def _decide(scores, n=5000, per_class_min=400, n_groups=9, n_val=1000, **kw):
    rungs = [Rung(u, s, 10.0) for u, s in scores]
    return next_step(
        rungs,
        n_labelled=n,
        min_class_count=per_class_min,
        n_classes=10,
        n_groups=n_groups,
        n_val=n_val,
        cfg=LadderConfig(**kw),
    )


def test_ladder_decisions_on_scripted_scores():
    assert _decide([]).action == "extract"
    d = _decide([(0, 0.84)])
    assert (d.action, d.unfreeze) == ("finetune", 2) and "0.840" in d.reason
    small = _decide([(0, 0.70)], n=100, per_class_min=10, n_val=20)
    assert small.action == "stop" and "1,000" in small.reason and "noise" in small.reason
    assert _decide([(0, 0.997)]).action == "stop"
    d = _decide([(0, 0.84), (2, 0.90)])
    assert (d.action, d.unfreeze) == ("finetune", 4)
    d = _decide([(0, 0.84), (2, 0.90), (4, 0.903)])
    assert d.action == "stop" and "less than 0.5 points" in d.reason
    d = _decide([(0, 0.84), (2, 0.82)])
    assert d.action == "stop" and "fell" in d.reason and "feature extraction" in d.reason
    d = _decide([(0, 0.5), (2, 0.6), (4, 0.7), (6, 0.8)])
    assert d.action == "stop" and "3 fine-tuning rungs" in d.reason
    assert _decide([(0, 0.84), (8, 0.9)], n_groups=9, step=2).unfreeze == 9
    assert _decide([(0, 0.84), (9, 0.9)], n_groups=9).action == "stop"
    assert _decide([(0, 0.84)], n_groups=9, first_unfreeze=-1).unfreeze == 9


def test_ladder_keeps_the_cheaper_rung_when_the_lead_is_within_the_noise():
    from headstart.strategies.ladder import choose

    rungs = [Rung(0, 0.840, 1.0), Rung(2, 0.870, 9.0), Rung(4, 0.855, 20.0)]
    keep, why = choose(rungs, n_val=200, cfg=LadderConfig())  # 2 SE at 0.87, n=200: 4.8 points
    assert keep.unfreeze == 0 and "within the noise" in why and "feature extraction" in why
    keep, why = choose(rungs, n_val=5000, cfg=LadderConfig())  # 2 SE: 1.0 point
    assert keep.unfreeze == 2 and why is None
    keep, _ = choose(rungs, n_val=200, cfg=LadderConfig(noise_z=0))
    assert keep.unfreeze == 2
    # within the noise of the best, the first (cheapest) qualifying rung wins
    keep, why = choose([Rung(0, 0.80, 1.0), Rung(2, 0.90, 9.0), Rung(4, 0.91, 20.0)], n_val=1000,
                       cfg=LadderConfig())  # fmt: skip
    assert keep.unfreeze == 2 and "top 4" in why


# --------------------------------------------------------------------- resume and DDP
def _fit_cmd(data: Path, backbone: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "headstart",
        "fit",
        str(data),
        "--backbone",
        backbone,
        "--strategy",
        "finetune",
        "--unfreeze",
        "2",
        "--epochs",
        "4",
        "--patience",
        "9",
        "--engine",
        "torch",
        "--no-baseline",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    from test_cli import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("ft") / "pets", per_class=40)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def more_pets(tmp_path_factory):
    from test_cli import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("ft2") / "pets", per_class=400)


def test_kill_during_epoch_two_then_resume_equals_an_uninterrupted_run(
    more_pets, tiny_vision_dir, tmp_path
):
    bb = f"local-dir:{tiny_vision_dir}"
    pets = more_pets
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        _fit_cmd(pets, bb, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = killed / "checkpoints" / "rung-2.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # during epoch 2: epoch 1's checkpoint was just written
    proc.wait()
    assert ckpt.exists() and not (killed / "metrics.json").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0
    subprocess.run(_fit_cmd(pets, bb, killed), env=_env(), check=True, capture_output=True)
    subprocess.run(_fit_cmd(pets, bb, clean), env=_env(), check=True, capture_output=True)
    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((clean / "metrics.json").read_text())

    def curve(m):
        return [
            (h["epoch"], h["train_loss"], h["val_loss"], h["val_accuracy"])
            for h in m["finetune"]["history"]
        ]

    assert len(curve(a)) == 4 and curve(a) == curve(b)
    assert (
        a["test"]["accuracy"] == b["test"]["accuracy"]
        and a["test"]["log_loss"] == b["test"]["log_loss"]
    )
    from safetensors.numpy import load_file

    ha, hb = (
        load_file(killed / "model" / "head.safetensors"),
        load_file(clean / "model" / "head.safetensors"),
    )
    assert all(np.array_equal(ha[k], hb[k]) for k in ha)


def test_a_changed_freezing_plan_is_refused_on_resume(pets, tiny_vision_dir, tmp_path):
    bb = f"local-dir:{tiny_vision_dir}"
    out = tmp_path / "run"
    subprocess.run(
        _fit_cmd(pets, bb, out, "--epochs", "1"), env=_env(), check=True, capture_output=True
    )
    (out / "checkpoints" / "rung-1.pt").write_bytes(
        (out / "checkpoints" / "rung-2.pt").read_bytes()
    )
    res = subprocess.run(
        _fit_cmd(pets, bb, out, "--epochs", "1", "--unfreeze", "1"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "different" in res.stderr and "unfro" in res.stderr


def test_accelerate_two_processes_match_one(pets, tiny_vision_dir, tmp_path):
    bb = f"local-dir:{tiny_vision_dir}"
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_fit_cmd(pets, bb, one), env=_env(), check=True, capture_output=True)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--cpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        *_fit_cmd(pets, bb, two)[2:],
    ]
    res = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((one / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    assert b["strategy"] == "finetune" and b["finetune"]["epochs_run"] == 4
    n_test = a["n_test"]
    assert abs(a["test"]["accuracy"] - b["test"]["accuracy"]) <= max(0.1, 3 / n_test)


def test_source_forgetting_is_one_for_the_same_model_and_lower_after_a_change():
    import copy

    from headstart.forgetting import source_forgetting, source_probe_images

    x = source_probe_images(8)
    assert x.shape == (8, 160, 160, 3) and x.dtype == np.uint8
    assert np.array_equal(x, source_probe_images(8)) and x.std() > 10  # seeded, not blank
    torch.manual_seed(0)
    bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=64).eval()
    same = source_forgetting(bb, copy.deepcopy(bb), n=16)
    assert same["cka_source"] == pytest.approx(1.0, abs=1e-6)
    moved = copy.deepcopy(bb)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.5 * torch.randn_like(p) * p.std().clamp(min=1e-3))
    changed = source_forgetting(bb, moved, n=16)
    assert changed["cka_source"] < 0.99
    if "source_top1_agreement_source" in same:
        assert same["source_top1_agreement_source"] == 1.0
