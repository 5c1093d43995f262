"""Fine-tuning step time against a plain PyTorch loop, and headstart beside HF Trainer.

    python benchmarks/bench_finetune.py            # 1,024 images x 5 rounds; 2,000 reviews x 2 epochs
    python benchmarks/bench_finetune.py --quick    # 1,024 images x 3 rounds; 1,000 reviews x 1 epoch
    python benchmarks/bench_finetune.py --only images --threads 1   # one section, 1 torch thread

On a shared machine pass ``--threads 1``: with other jobs on the cores, two OpenMP threads
stall at every barrier (steps about 2x slower and erratic), which hides a 5% difference.
Text is the long part: the whole --quick run took 13 minutes on 2 busy cores (1 thread).

Both sides of each section run in the same process, and the ratios are the figures to read:

1. images (step time): torchvision mobilenet_v2 (ImageNet weights, offline) on Fashion-MNIST at
   112 px, batch 32, the top 4 layer groups (features.11-18) and a new linear head trainable,
   AdamW (head lr 1e-3, backbone lr 1e-3/30, no decay on biases and norms), warm-up + cosine,
   gradient clipping at 1.0, random resized crop (scale 0.5-1) + horizontal flip.
   headstart's ``finetune()`` (one epoch per call) vs a plain hand-written loop on the same
   torchvision model with the same parameters frozen and the frozen layers in eval mode
   (so frozen BatchNorm keeps its statistics), per-image ``torchvision.transforms.v2`` in a
   ``DataLoader``, channels_last like headstart on CPU; a plain NCHW variant for information.
   Calls alternate (headstart, plain, plain NCHW; the order rotates every round) after one
   warm-up call each. A step is timed from one training forward to the next (forward,
   backward, clipping, optimiser and scheduler step, then loading and augmenting the next
   batch); the medians over all steps are compared, and epoch seconds / steps beside them.
   Trainable BatchNorm layers run in training mode on both sides (``FinetuneConfig.bn="train"``
   where that setting exists); headstart's own default BatchNorm mode, if different, is timed
   beside for information. Each pipeline's time to build one augmented batch is measured on
   its own too (headstart's batched ``roi_align`` crop vs per-image ``transforms.v2``).
2. text (accuracy and wall time): sentence-transformers/all-MiniLM-L6-v2 (offline weights),
   mean pooling + a linear head, all layers trainable, batch 16, at most 256 tokens, on IMDB
   reviews (train / 128 validation / test, disjoint, seed 0). Hugging Face ``Trainer`` on
   ``AutoModel`` + masked mean pooling + ``nn.Linear`` (the same architecture and initial head
   as headstart's), given AdamW with the same two learning rates (``optimizers=``), its own
   ``lr_scheduler_type="cosine"`` with 10% warm-up, ``max_grad_norm=1.0``, dynamic padding
   (``DataCollatorWithPadding``), evaluation on the validation set every epoch like
   headstart's; against headstart's ``finetune(unfreeze=-1)``. Reports the training wall time
   (tokenisation included on both sides) and accuracy on the same held-out test reviews.

Nothing touches the network: HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set, ``report_to=[]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

IMAGE_BACKBONE = "torchvision:mobilenet_v2"
TEXT_BACKBONE = "hf:sentence-transformers/all-MiniLM-L6-v2"
HEAD_LR, LR_RATIO, WEIGHT_DECAY, WARMUP, CLIP = 1e-3, 30.0, 0.01, 0.1, 1.0


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def warmup_cosine(total_steps: int, warmup: float = WARMUP):
    """The usual linear warm-up then cosine decay, as a LambdaLR factor."""
    warm = max(1, round(total_steps * warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (
            1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm)))
        )

    return f


def adamw_groups(head: nn.Module, body: list[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """Head at HEAD_LR, trainable backbone at HEAD_LR / LR_RATIO; no decay on biases/norms."""
    groups = []
    for params, lr in ((list(head.named_parameters()), HEAD_LR), (body, HEAD_LR / LR_RATIO)):
        decay = [p for _, p in params if p.ndim > 1]
        no_decay = [p for _, p in params if p.ndim <= 1]
        groups.append({"params": decay, "lr": lr, "weight_decay": WEIGHT_DECAY})
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


class StepClock:
    """Forward pre-hook: wall and CPU time of every training forward; None marks a break
    (evaluation, a new epoch). Consecutive marks bound one full training step."""

    def __init__(self, module: nn.Module) -> None:
        self.marks: list[tuple[float, float] | None] = []
        self.bn_training: int | None = None  # BatchNorm layers in training mode at step 1
        self.tokens: list[int] = []  # text: padded length of each training batch
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        if module.training:
            ids = kwargs.get("input_ids")
            if ids is not None:
                self.tokens.append(int(ids.shape[-1]))
            if self.bn_training is None:
                bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
                self.bn_training = sum(m.training for m in bns)
            self.marks.append((time.perf_counter(), time.process_time()))
        elif self.marks and self.marks[-1] is not None:
            self.marks.append(None)

    def close(self) -> tuple[list[float], list[float]]:
        """(wall seconds, CPU seconds) of each timed step."""
        self.handle.remove()
        wall, cpu = [], []
        for a, b in zip(self.marks, self.marks[1:], strict=False):
            if a is not None and b is not None:
                wall.append(b[0] - a[0])
                cpu.append(b[1] - a[1])
        return wall, cpu


class DataTimer:
    """Wall time spent building training batches (inside the timed steps)."""

    def __init__(self) -> None:
        self.seconds, self.batches = 0.0, 0

    def add(self, t0: float) -> None:
        self.seconds += time.perf_counter() - t0
        self.batches += 1

    def ms_per_batch(self) -> float:
        return 1000 * self.seconds / max(1, self.batches)

    def iterate(self, loader):
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.add(t0)
            yield item


# ------------------------------------------------------------------------------- images
def pristine_mobilenet() -> tuple[Any, nn.Module]:
    """headstart's backbone and a plain torchvision mobilenet_v2, same ImageNet weights."""
    from torchvision.models import mobilenet_v2

    from headstart.backbones import load_backbone
    from headstart.backbones.offline import locate_raw

    bb = load_backbone(IMAGE_BACKBONE, image_size=112)
    tv = mobilenet_v2(weights=None)
    tv.load_state_dict(torch.load(locate_raw(IMAGE_BACKBONE), weights_only=True))
    return bb, tv


class FashionTrain(torch.utils.data.Dataset):
    """Grey uint8 (N,28,28) images → augmented, normalised (3,112,112) float tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, mean, std) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        self.tf = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).unsqueeze(0).expand(3, -1, -1)
        return self.tf(x), int(self.labels[i])


def plain_image_epoch(
    tv: nn.Module, head_state: dict, ex, pre, batch: int, channels_last: bool, seed: int
) -> dict[str, Any]:
    """One epoch of a hand-written fine-tuning loop; returns step times and epoch seconds."""
    torch.manual_seed(seed)
    model = copy.deepcopy(tv)
    model.classifier[1] = nn.Linear(1280, 10)
    model.classifier[1].load_state_dict(head_state)
    for p in model.features[:11].parameters():  # freeze all but the top 4 stages
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    body = [(n, p) for n, p in model.features.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(adamw_groups(model.classifier, body))
    loader = torch.utils.data.DataLoader(
        FashionTrain(ex.inputs, ex.labels, pre.size, pre.mean, pre.std),
        batch_size=batch,
        shuffle=True,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(len(loader)))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    model.features[:11].eval()  # frozen BatchNorm keeps its ImageNet statistics
    clock, data = StepClock(model), DataTimer()
    t0 = time.perf_counter()
    loss_sum = 0.0
    for x, y in data.iterate(loader):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        sched.step()
        loss_sum += loss.item() * len(y)
    seconds = time.perf_counter() - t0
    wall, cpu = clock.close()
    return {
        "steps": wall,
        "cpu_steps": cpu,
        "data_ms": data.ms_per_batch(),
        "bn_training": clock.bn_training,
        "epoch_s": seconds,
        "n_steps": len(loader),
        "train_loss": loss_sum / len(ex),
        "trainable": sorted(
            f"trunk.features.{n}" for n, p in model.features.named_parameters() if p.requires_grad
        ),
    }


def headstart_image_epoch(
    bb, head_state: dict, ex, val, batch: int, seed: int, bn: str | None
) -> dict[str, Any]:
    """One ``finetune()`` call of one epoch; ``bn`` is FinetuneConfig.bn where it exists."""
    from dataclasses import fields

    import headstart.strategies.training as F
    from headstart.config import FinetuneConfig
    from headstart.strategies.training import finetune

    extra = {"bn": bn} if bn and "bn" in {f.name for f in fields(FinetuneConfig)} else {}
    data = DataTimer()

    class TimedBatchMaker(F.BatchMaker):  # measures only: the same batches, timed
        def __call__(self, idx):
            t0 = time.perf_counter()
            out = super().__call__(idx)
            if self.train:
                data.add(t0)
            return out

    torch.manual_seed(seed)
    backbone = copy.deepcopy(bb)
    head = nn.Linear(1280, 10)
    head.load_state_dict(head_state)
    cfg = FinetuneConfig(
        unfreeze=4,
        epochs=1,
        lr=HEAD_LR,
        lr_ratio=LR_RATIO,
        weight_decay=WEIGHT_DECAY,
        warmup=WARMUP,
        grad_clip=CLIP,
        batch_size=batch,
        augment=True,
        **extra,
    )
    clock, original = StepClock(backbone), F.BatchMaker
    F.BatchMaker = TimedBatchMaker
    try:
        _, res = finetune(backbone, head, ex, val, cfg, seed=seed, progress=False)
    finally:
        F.BatchMaker = original
    wall, cpu = clock.close()
    return {
        "steps": wall,
        "cpu_steps": cpu,
        "data_ms": data.ms_per_batch(),
        "bn_training": clock.bn_training,
        "epoch_s": res.history[0]["seconds"],
        "n_steps": math.ceil(len(ex) / batch),
        "train_loss": res.history[0]["train_loss"],
        "trainable": sorted(
            n
            for g in backbone.layer_groups()
            if g.name in res.unfrozen
            for n in g.params  # the backbone's own names
        ),
    }


def data_pipeline(ex, pre, batch: int) -> dict[str, float]:
    """Milliseconds to build one augmented training batch, each pipeline on its own."""
    from headstart.strategies.augment import BatchMaker

    out = {}
    for name in ("headstart_BatchMaker", "plain_torchvision_v2", "headstart_BatchMaker_again"):
        if name.startswith("headstart"):
            maker = BatchMaker(ex, pre, train=True, augment=True, seed=0)
            batches: Any = (
                maker(range(i, min(i + batch, len(ex)))) for i in range(0, len(ex), batch)
            )
        else:
            batches = torch.utils.data.DataLoader(
                FashionTrain(ex.inputs, ex.labels, pre.size, pre.mean, pre.std),
                batch_size=batch,
                shuffle=True,
            )
        t, k = time.perf_counter(), 0
        for _ in batches:
            k += 1
        out[name] = round(1000 * (time.perf_counter() - t) / k, 1)
    return out


def bench_images(n: int, rounds: int, batch: int = 32) -> dict[str, Any]:
    from headstart.data import load_builtin

    pool, _ = load_builtin("fashion-mnist")
    ex, val = pool.subset(range(n)), pool.subset(range(n, n + 64))
    bb, tv = pristine_mobilenet()
    pre = bb.preprocess
    torch.manual_seed(0)
    head_state = nn.Linear(1280, 10).state_dict()
    # Primary: headstart with trainable BatchNorm in training mode, as in the plain loop (where
    # FinetuneConfig has a ``bn`` setting, "train"); for information its own default beside it.
    from dataclasses import fields

    from headstart.config import FinetuneConfig

    has_bn = "bn" in {f.name for f in fields(FinetuneConfig)}
    runners = {
        "headstart": lambda seed, data: headstart_image_epoch(
            bb, head_state, data, val, batch, seed, "train"
        ),
        "plain_channels_last": lambda seed, data: plain_image_epoch(
            tv, head_state, data, pre, batch, True, seed
        ),
        "plain_nchw": lambda seed, data: plain_image_epoch(
            tv, head_state, data, pre, batch, False, seed
        ),
    }
    if has_bn:
        default_bn = FinetuneConfig().bn
        if default_bn != "train":
            runners[f"headstart_bn_{default_bn}"] = lambda seed, data: headstart_image_epoch(
                bb, head_state, data, val, batch, seed, default_bn
            )
    names = list(runners)
    warm = pool.subset(range(4 * batch))
    # Warm-up (allocator, kernels, lazy imports), and a check that both train the same tensors.
    warmed = {name: runners[name](0, warm) for name in names}
    same = all(w["trainable"] == warmed["headstart"]["trainable"] for w in warmed.values())
    bn_training = {name: w["bn_training"] for name, w in warmed.items()}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
    loads = [load_avg()]
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            res = runners[name](r + 1, ex)
            res.pop("trainable")
            runs[name].append(res)
            print(
                f"  round {r + 1} {name}: median step "
                f"{1000 * statistics.median(res['steps']):.0f} ms (CPU "
                f"{1000 * statistics.median(res['cpu_steps']):.0f} ms, data "
                f"{res['data_ms']:.0f} ms), epoch {res['epoch_s']:.1f} s, "
                f"load {load_avg()}",
                flush=True,
            )
        loads.append(load_avg())
    table = {}
    for name, rs in runs.items():
        steps = [s for r in rs for s in r["steps"]]
        data_ms = statistics.mean(r["data_ms"] for r in rs)
        table[name] = {
            "median_step_ms": round(1000 * statistics.median(steps), 1),
            "median_step_cpu_ms": round(
                1000 * statistics.median(s for r in rs for s in r["cpu_steps"]), 1
            ),
            "data_ms_per_batch_in_loop": round(data_ms, 1),
            "median_step_minus_data_ms": round(1000 * statistics.median(steps) - data_ms, 1),
            "epoch_s_per_step_ms": round(
                1000 * sum(r["epoch_s"] for r in rs) / sum(r["n_steps"] for r in rs), 1
            ),
            "per_round_median_ms": [round(1000 * statistics.median(r["steps"]), 1) for r in rs],
            "train_loss": [round(r["train_loss"], 3) for r in rs],
            "n_steps_timed": len(steps),
        }
    hs, pl = table["headstart"], table["plain_channels_last"]
    return {
        "n_images": n,
        "batch": batch,
        "image_size": pre.size,
        "rounds": rounds,
        "same_trainable_parameters": same,
        "batchnorm_layers_in_train_mode": bn_training,
        "data_ms_per_batch": data_pipeline(ex, pre, batch),
        "load_avg_per_round": loads,
        **table,
        "ratio_median_step": round(hs["median_step_ms"] / pl["median_step_ms"], 3),
        "ratio_median_step_cpu": round(hs["median_step_cpu_ms"] / pl["median_step_cpu_ms"], 3),
        "ratio_epoch_time": round(hs["epoch_s_per_step_ms"] / pl["epoch_s_per_step_ms"], 3),
        "ratio_step_minus_data": round(
            hs["median_step_minus_data_ms"] / pl["median_step_minus_data_ms"], 3
        ),
        "ratio_vs_plain_nchw": round(
            hs["median_step_ms"] / table["plain_nchw"]["median_step_ms"], 3
        ),
    }


# --------------------------------------------------------------------------------- text
def imdb_splits(n_train: int, n_val: int, n_test: int):
    from headstart.data import load_builtin

    pool, _ = load_builtin("imdb")
    perm = np.random.default_rng(0).permutation(len(pool))
    cut = np.cumsum([n_train, n_val, n_test])
    return (
        pool.subset(perm[: cut[0]], name="imdb train"),
        pool.subset(perm[cut[0] : cut[1]], name="imdb val"),
        pool.subset(perm[cut[1] : cut[2]], name="imdb test"),
    )


def headstart_text(train, val, test, epochs: int, batch: int, head_state: dict) -> dict[str, Any]:
    from headstart.backbones import load_backbone
    from headstart.config import FinetuneConfig
    from headstart.strategies.augment import BatchMaker
    from headstart.strategies.training import finetune

    load0 = load_avg()
    bb = load_backbone(TEXT_BACKBONE, max_length=256)
    head = nn.Linear(bb.feature_dim, 2)
    head.load_state_dict(head_state)
    cfg = FinetuneConfig(
        unfreeze=-1,
        epochs=epochs,
        lr=HEAD_LR,
        lr_ratio=LR_RATIO,
        weight_decay=WEIGHT_DECAY,
        warmup=WARMUP,
        grad_clip=CLIP,
        batch_size=batch,
        patience=epochs + 1,  # run every epoch, as Trainer does
    )
    clock = StepClock(bb)
    t, c = time.perf_counter(), time.process_time()
    model, res = finetune(bb, head, train, val, cfg, seed=0, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    steps, cpu_steps = clock.close()
    maker = BatchMaker(test, bb.preprocess, train=False, augment=False)
    t = time.perf_counter()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(test), 2 * batch):
            inputs, _ = maker(range(i, min(i + 2 * batch, len(test))))
            preds.append(model(**inputs).argmax(1))
    test_s = time.perf_counter() - t
    acc = float((torch.cat(preds).numpy() == test.labels).mean())
    return {
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "train_loop_s": round(sum(h["seconds"] for h in res.history), 1),
        **step_summary(steps, cpu_steps, clock.tokens),
        "val_accuracy_per_epoch": [round(h["val_accuracy"], 4) for h in res.history],
        "best_epoch": res.best_epoch,
        "test_accuracy": round(acc, 4),
        "test_predict_s": round(test_s, 1),
        "truncation": bb.preprocess.truncation,
        "load_avg": [load0, load_avg()],
    }


class MeanPoolClassifier(nn.Module):
    """AutoModel → masked mean pooling → Linear: the sentence-transformers recipe."""

    def __init__(self, path: str, n_classes: int) -> None:
        from transformers import AutoModel

        super().__init__()
        self.encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
        self.head = nn.Linear(self.encoder.config.hidden_size, n_classes)

    def forward(self, input_ids, attention_mask, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        logits = self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def trainer_text(train, val, test, epochs: int, batch: int, head_state: dict) -> dict[str, Any]:
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from headstart.backbones.offline import locate

    hf_logging.set_verbosity_error()
    load0 = load_avg()
    path = str(locate(TEXT_BACKBONE))
    torch.manual_seed(0)
    model = MeanPoolClassifier(path, 2)
    model.head.load_state_dict(head_state)
    clock = StepClock(model)
    t, c = time.perf_counter(), time.process_time()  # from here: tokenise, build, train
    tok = AutoTokenizer.from_pretrained(path)

    def encode(ex) -> list[dict[str, Any]]:
        enc = tok(
            [str(x) for x in ex.inputs],
            truncation=True,
            max_length=256,
            return_token_type_ids=False,
        )
        return [
            {"input_ids": ids, "attention_mask": am, "labels": int(y)}
            for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], ex.labels, strict=True)
        ]

    body = list(model.encoder.named_parameters())
    opt = torch.optim.AdamW(adamw_groups(model.head, body))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=2 * batch,
            lr_scheduler_type="cosine",
            warmup_steps=WARMUP,  # < 1: a fraction of the steps
            max_grad_norm=CLIP,
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="epoch",
            report_to=[],
            disable_tqdm=True,
            use_cpu=True,
            seed=0,
            dataloader_pin_memory=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=encode(train),
            eval_dataset=encode(val),
            data_collator=DataCollatorWithPadding(tok),
            optimizers=(opt, None),
            compute_metrics=lambda p: {
                "accuracy": float((p.predictions.argmax(1) == p.label_ids).mean())
            },
        )
        trainer.train()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        steps, cpu_steps = clock.close()
        val_accs = [
            round(h["eval_accuracy"], 4) for h in trainer.state.log_history if "eval_accuracy" in h
        ]
        t = time.perf_counter()
        pred = trainer.predict(encode(test))
        test_s = time.perf_counter() - t
    acc = float((pred.predictions.argmax(1) == test.labels).mean())
    return {
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        **step_summary(steps, cpu_steps, clock.tokens),
        "val_accuracy_per_epoch": val_accs,
        "test_accuracy": round(acc, 4),
        "test_predict_s": round(test_s, 1),
        "truncation": "head (tokenizer truncation=True)",
        "load_avg": [load0, load_avg()],
    }


def step_summary(steps: list[float], cpu_steps: list[float], tokens: list[int]) -> dict[str, Any]:
    return {
        "median_step_s": round(statistics.median(steps), 3),
        "median_step_cpu_s": round(statistics.median(cpu_steps), 3),
        "mean_padded_tokens": round(statistics.mean(tokens), 1),
        "n_steps_timed": len(steps),
    }


def warm_text(batch: int) -> None:
    """Two training steps of a throwaway copy, so neither side pays first-use costs."""
    from headstart.backbones.offline import locate

    model = MeanPoolClassifier(str(locate(TEXT_BACKBONE)), 2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 20000, (batch, 256))
    for _ in range(2):
        out = model(ids, torch.ones_like(ids), labels=torch.zeros(batch, dtype=torch.long))
        out.loss.backward()
        opt.step()
        opt.zero_grad()


def bench_text(n_train: int, n_test: int, epochs: int, batch: int = 16) -> dict[str, Any]:
    train, val, test = imdb_splits(n_train, 128, n_test)
    warm_text(batch)
    torch.manual_seed(0)
    head_state = nn.Linear(384, 2).state_dict()
    ours = headstart_text(train, val, test, epochs, batch, head_state)
    print(json.dumps({"headstart": ours}), flush=True)
    theirs = trainer_text(train, val, test, epochs, batch, head_state)
    print(json.dumps({"hf_trainer": theirs}), flush=True)
    return {
        "n_train": n_train,
        "n_val": len(val),
        "n_test": n_test,
        "epochs": epochs,
        "batch": batch,
        "headstart": ours,
        "hf_trainer": theirs,
        "wall_ratio_headstart_over_trainer": round(
            ours["train_wall_s"] / theirs["train_wall_s"], 3
        ),
        "cpu_ratio_headstart_over_trainer": round(ours["train_cpu_s"] / theirs["train_cpu_s"], 3),
        "median_step_cpu_ratio": round(ours["median_step_cpu_s"] / theirs["median_step_cpu_s"], 3),
        "accuracy_difference": round(ours["test_accuracy"] - theirs["test_accuracy"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=["images", "text"])
    ap.add_argument("--images", type=int, help="training images (default 1024)")
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 3)")
    ap.add_argument("--reviews", type=int, help="training reviews (default 2000, quick 1000)")
    ap.add_argument("--test", type=int, default=1000, help="held-out test reviews")
    ap.add_argument("--epochs", type=int, help="text epochs (default 2, quick 1)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import accelerate
    import torchvision
    import transformers

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_start": load_avg(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        }
    }
    if "images" in args.only:
        n = args.images or 1024
        rounds = args.rounds or (3 if args.quick else 5)
        results["images"] = bench_images(n, rounds)
        print(json.dumps({"images": results["images"]}), flush=True)
    if "text" in args.only:
        n = args.reviews or (1000 if args.quick else 2000)
        epochs = args.epochs or (1 if args.quick else 2)
        results["text"] = bench_text(n, args.test, epochs)
    results["machine"]["load_avg_end"] = load_avg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
