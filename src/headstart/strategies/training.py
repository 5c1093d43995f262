"""Fine-tuning: a new head on top, the top layer groups unfrozen, everything else frozen.

The recipe, as data (see :class:`FinetuneConfig`):

* the head starts from the linear probe trained on cached frozen features ("LP-FT",
  Kumar et al., ICLR 2022): a random head's large early gradients would otherwise wreck
  the pretrained features before the head is any good;
* the top ``unfreeze`` groups of the backbone contract train, at a learning rate ``lr_ratio``
  (default 30, the 10-100x rule) below the head's, optionally decaying by ``layer_decay``
  per group toward the input; every other module is frozen *and kept in inference mode*, so
  BatchNorm statistics and dropout in frozen layers behave exactly as during extraction;
* AdamW (no decay on biases and norms), linear warm-up then cosine, gradient clipping,
  optional label smoothing, gradient accumulation, mixed precision on GPUs;
* ``keep_epoch="best"``: early stopping on validation accuracy (loss breaks ties), best
  epoch restored; ``"last"``: the whole schedule runs and its final weights are kept, so a
  validation score that then decides something else (the ladder's rung choice) has not
  already been maximised over epochs;
* a checkpoint after every epoch (atomic) from which a killed run resumes to the same result.

The loop runs unchanged under ``accelerate launch``: each call builds its own prepared
(distributed) model, so a phase that changes what is frozen gets a fresh wrapper instead of
toggling ``requires_grad`` inside a live one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_open
from ..backbones.base import Backbone, LayerGroup
from ..config import FinetuneConfig
from ..data.base import Examples
from ..errors import ConfigError
from ..forgetting import L2SP, check_learning_rates
from ..tracking import record_live
from .augment import BatchMaker

log = logging.getLogger("headstart")


class TransferModel(nn.Module):
    """backbone → head; ``forward(**inputs)`` returns logits."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(**inputs))


@dataclass
class FinetuneResult:
    val_accuracy: float
    val_loss: float
    best_epoch: int
    epochs_run: int
    unfrozen: list[str]
    n_trainable: int
    lrs: dict[str, float]
    guard: dict[str, Any]
    history: list[dict[str, float]]
    stopped: str
    seconds: float
    examples_per_s: float
    start_val_accuracy: float | None = None  # the starting point's, when keep_start
    kept_start: bool = False  # no epoch beat the starting point: its weights are kept
    resumed_from: int | None = None  # epochs a killed run had finished, when resumed from them
    tuned_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("tuned_state")
        return d


# --------------------------------------------------------------------------- freezing
def select_groups(backbone: Backbone, k: int) -> tuple[list[LayerGroup], list[LayerGroup]]:
    groups = backbone.layer_groups()
    if k < 0 or k >= len(groups):
        return groups, []
    return groups[len(groups) - k :], groups[: len(groups) - k]


def plan_groups(
    backbone: Backbone, cfg: FinetuneConfig
) -> tuple[list[LayerGroup], list[LayerGroup]]:
    """(trainable, frozen) groups: the top ``cfg.unfreeze`` groups, or with ``--peft lora``
    the adapters alone (:func:`headstart.backbones.lora.adapter_groups`: every pretrained
    weight stays frozen, whatever ``unfreeze`` says)."""
    if cfg.peft == "lora":
        from ..backbones.lora import adapter_groups

        return adapter_groups(backbone), []
    return select_groups(backbone, cfg.unfreeze)


def apply_freeze(backbone: Backbone, trainable: list[LayerGroup]) -> set[str]:
    names = {p for g in trainable for p in g.params}
    for n, p in backbone.named_parameters():
        p.requires_grad_(n in names)
    return names


def set_train_mode(model: TransferModel, bn: str = "frozen") -> None:
    """Train mode for trainable parts; inference mode for every fully frozen module.

    Frozen BatchNorm layers would otherwise update their running statistics from the new
    data (measured on mobilenet_v2: refreshing them alone took ImageNet top-1 agreement from
    1.00 to 0.00) and frozen dropout would add noise the head never saw in extraction.

    With ``bn="frozen"`` (the default) *every* BatchNorm layer, trainable or not, normalises
    with its pretrained running statistics; its affine weight and bias still train when its
    group does. Batch statistics would change the features at the first step (the linear
    probe the head starts from was fitted on inference-mode features), which undoes LP-FT's
    warm start: measured on mobilenet_v2, Fashion-MNIST 5,000 at 112 px, the first epoch's
    training loss was 1.7 with batch statistics against the probe's ~0.4. ``bn="train"``
    keeps the usual behaviour for trainable groups (batch statistics, running averages
    updated), for large data sets far from the pretraining domain.
    """
    model.train()
    if bn == "frozen":
        for m in model.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    for m in model.backbone.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()
        elif not params and not any(True for _ in m.children()):
            pass  # parameter-free leaves follow their parent's mode
    # Parameter-free leaves (dropout, activations) directly under a frozen parent were
    # handled by the recursive eval() above.


def param_groups(
    model: TransferModel, trainable: list[LayerGroup], cfg: FinetuneConfig
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    # LoRA adapters are new weights starting from a zero update, like the head: they train at
    # its rate (the LoRA paper's rates are ~10x those of full fine-tuning), not at the 10-100x
    # lower rate that protects pretrained weights
    backbone_lr = cfg.lr if cfg.peft == "lora" else cfg.lr / cfg.lr_ratio
    params = dict(model.named_parameters())
    groups: list[dict[str, Any]] = []
    lrs: dict[str, float] = {"head": cfg.lr}

    head = [(n, p) for n, p in params.items() if n.startswith("head.")]
    groups += decay_groups(head, cfg.lr, cfg.weight_decay, "head")
    for depth, g in enumerate(reversed(trainable)):
        lr = backbone_lr * cfg.layer_decay**depth
        lrs[g.name] = lr
        named = [(f"backbone.{p}", params[f"backbone.{p}"]) for p in g.params]
        groups += decay_groups(named, lr, cfg.weight_decay, g.name)
    return groups, lrs


def decay_groups(
    named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float, label: str
) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices, none on biases and norms."""
    decay = [p for _, p in named if p.ndim > 1]
    no_decay = [p for _, p in named if p.ndim <= 1]
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": label})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": label})
    return groups


def adamw_cosine(
    groups: list[dict[str, Any]], lr: float, total_steps: int, warmup: float
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and transformers' linear warm-up then cosine to zero.

    The one optimiser and schedule of every training loop in headstart (classification
    fine-tuning here, transcription in :mod:`headstart.asr.train`); ``warmup`` is the share
    of ``total_steps`` spent warming up.
    """
    from transformers import get_cosine_schedule_with_warmup

    total_steps = max(1, total_steps)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, max(1, round(total_steps * warmup)), total_steps
    )
    return optimizer, scheduler


def _trained_state(model: TransferModel, trainable: set[str]) -> dict[str, torch.Tensor]:
    """Trainable parameters, the head, and buffers of modules that trained (BN statistics)."""
    sd = model.state_dict()
    keep = {f"backbone.{n}" for n in trainable}
    trained_modules = [
        n
        for n, m in model.backbone.named_modules()
        if any(p.requires_grad for p in m.parameters(recurse=False))
    ]
    for n in trained_modules:
        prefix = f"backbone.{n}." if n else "backbone."
        keep.update(k for k in sd if k.startswith(prefix) and "." not in k[len(prefix) :])
    return {
        k: v.detach().cpu().clone() for k, v in sd.items() if k in keep or k.startswith("head.")
    }


def _indices(n: int) -> Any:
    """Row indices as a map-style dataset: the batch makers turn indices into tensors."""
    return list(range(n))


def _evaluate(
    model: nn.Module, loader: Any, acc: Any, smoothing: float = 0.0
) -> tuple[float, float]:
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.inference_mode():
        for inputs, y in loader:
            logits = model(**inputs)
            logits, y = acc.gather_for_metrics((logits, y))
            loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    return correct / max(1, total), loss_sum / max(1, total)


# ------------------------------------------------------------------------------ train
def finetune(
    backbone: Backbone,
    head: nn.Module,
    train: Examples,
    val: Examples,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    time_budget_s: float | None = None,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> tuple[TransferModel, FinetuneResult]:
    """Fine-tune ``head`` and the top ``cfg.unfreeze`` groups of ``backbone`` in place.

    ``seed`` fixes the batch order, augmentation and dropout; training stops before an
    epoch that would end past ``time_budget_s`` (at the mean epoch time so far); with
    ``checkpoint`` every epoch is saved atomically and a killed run resumes from the last
    one to the same result.
    """
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    cfg.validate()
    t_start = time.perf_counter()
    # "last": every epoch of the schedule runs and the final weights are kept, so the
    # validation score is not the maximum of many noisy ones ("auto" here means "best": the
    # ladder resolves it to "last" for its rungs, see strategies.finetune)
    keep_last = cfg.keep_epoch == "last"
    trainable_groups, frozen_groups = plan_groups(backbone, cfg)
    if cfg.peft == "lora":  # no pretrained weight trains: the 10-100x rule has nothing to guard
        guard: dict[str, object] = {"ok": True, "message": "LoRA: every pretrained weight frozen"}
    else:
        guard = check_learning_rates(cfg.lr, cfg.lr / cfg.lr_ratio, strict=cfg.strict)
    model = TransferModel(backbone, head)
    trainable = apply_freeze(backbone, trainable_groups)
    for p in head.parameters():
        p.requires_grad_(True)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    groups, lrs = param_groups(model, trainable_groups, cfg)
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    acc = Accelerator(
        mixed_precision=mp,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    l2sp = L2SP([(n, p) for n, p in backbone.named_parameters() if p.requires_grad], cfg.l2sp)
    steps_per_epoch = math.ceil(len(train) / (cfg.batch_size * acc.num_processes * cfg.grad_accum))
    optimizer, scheduler = adamw_cosine(groups, cfg.lr, steps_per_epoch * cfg.epochs, cfg.warmup)
    channels_last = backbone.modality == "image" and not torch.cuda.is_available()
    if channels_last:  # 1.5-2x faster convolutions on CPU (measured on mobilenet_v2)
        model = model.to(memory_format=torch.channels_last)
    model, optimizer = acc.prepare(model, optimizer)
    raw_model: TransferModel = acc.unwrap_model(model)

    augment = cfg.augment if cfg.augment is not None else backbone.modality == "image"
    train_maker = BatchMaker(train, backbone.preprocess, train=True, augment=augment, seed=seed)
    val_maker = BatchMaker(val, backbone.preprocess, train=False, augment=False)
    val_loader = acc.prepare(
        DataLoader(_indices(len(val)), batch_size=cfg.batch_size * 2, collate_fn=val_maker)
    )
    signature = {
        "config": cfg.to_dict(),
        "seed": seed,
        "unfrozen": [g.name for g in trainable_groups],
        "backbone": backbone.name,
        "weights": backbone.weights.sha256,
        "n_train": len(train),
        "n_val": len(val),
    }
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"acc": -1.0, "loss": float("inf"), "epoch": -1, "state": None}
    start_epoch, stopped, bad_epochs = 0, "", 0
    resumed_from: int | None = None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state["signature"] != signature:
            diff = sorted(k for k in signature if state["signature"].get(k) != signature[k])
            raise ConfigError(
                f"The checkpoint {checkpoint} was written by a run with a different {', '.join(diff)} "
                f"(it unfroze {state['signature'].get('unfrozen')}; this run would unfreeze "
                f"{signature['unfrozen']}). Resume with the same settings, or use a new --out."
            )
        raw_model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        start_epoch = state["epoch"] + 1
        stopped = state.get("stopped", "")
        start = state.get("start")
        resumed_from = start_epoch
        log.info("resumed from epoch %d (checkpoint %s)", start_epoch, checkpoint)

    if checkpoint is None or not checkpoint.exists():
        start = None
        if cfg.keep_start:
            s_acc, s_loss = _evaluate(model, val_loader, acc)
            start = {"acc": s_acc, "loss": s_loss, "state": _trained_state(raw_model, trainable)}
            log.info("starting point: val acc %.4f, val loss %.4f", s_acc, s_loss)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    clip_params = [p for p in model.parameters() if p.requires_grad]
    seen, train_time = 0, 0.0
    walls: list[float] = []  # seconds per epoch, validation included (the stop before a late one)
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        torch.manual_seed(seed * 10_007 + epoch)  # dropout: same per epoch, resumed or not
        train_maker.reseed(seed * 10_007 + epoch)
        order: Any = np.random.default_rng([seed, epoch]).permutation(len(train)).tolist()
        loader = acc.prepare(DataLoader(order, batch_size=cfg.batch_size, collate_fn=train_maker))
        set_train_mode(raw_model, cfg.bn)
        loss_sum, n_seen = 0.0, 0
        bar = tqdm(
            total=len(loader),
            desc=f"fine-tune epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress or not acc.is_main_process,
            leave=False,
            dynamic_ncols=True,
        )
        for inputs, y in loader:
            if channels_last:
                inputs = {
                    k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()
                }
            with acc.accumulate(model):
                logits = model(**inputs)
                loss = loss_fn(logits.float(), y)
                if cfg.l2sp:
                    loss = loss + l2sp()
                acc.backward(loss)
                if acc.sync_gradients:
                    if cfg.grad_clip:
                        acc.clip_grad_norm_(clip_params, cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * len(y)
            n_seen += len(y)
            bar.update(1)
        bar.close()
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        seen += n_seen * acc.num_processes
        val_acc, val_loss = _evaluate(model, val_loader, acc)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(1, n_seen),
                "val_accuracy": val_acc,
                "val_loss": val_loss,
                "seconds": epoch_time,
                "lr_head": float(scheduler.get_last_lr()[0]),
            }
        )
        record_live("epoch", history[-1])  # to a tracker listening (--track), as it happens
        log.info(
            "epoch %d: train loss %.4f, val acc %.4f, val loss %.4f (%.1f s)",
            epoch + 1,
            history[-1]["train_loss"],
            val_acc,
            val_loss,
            epoch_time,
        )
        if keep_last or (val_acc, -val_loss) > (best["acc"], -best["loss"]):
            best = {
                "acc": val_acc,
                "loss": val_loss,
                "epoch": epoch + 1,
                "state": _trained_state(raw_model, trainable),
            }
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:  # only under "best": "last" runs the schedule
                stopped = f"early stop: no validation gain for {cfg.patience} epochs"
        walls.append(time.perf_counter() - t0)  # the epoch with its validation pass
        if time_budget_s is not None and not stopped:
            spent = time.perf_counter() - t_start
            upcoming = sum(walls) / len(walls)
            if spent > time_budget_s:
                stopped = f"time budget of {time_budget_s:.0f} s spent"
            elif epoch + 1 < cfg.epochs and spent + upcoming > time_budget_s:
                # stop before an epoch that would end past the budget: what follows the fit
                # (scoring the test split) was promised the rest
                stopped = (
                    f"time budget of {time_budget_s:.0f} s: the next epoch (~{upcoming:.0f} s) "
                    f"would end past it, {time_budget_s - spent:.0f} s before"
                )
        if checkpoint is not None and acc.is_main_process:
            payload = {
                "signature": signature,
                "epoch": epoch,
                "model": _trained_state(raw_model, trainable),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "best": best,
                "bad_epochs": bad_epochs,
                "stopped": stopped,
                "start": start,
            }
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(checkpoint) as fh:
                torch.save(payload, fh)
        acc.wait_for_everyone()
    kept_start = start is not None and (start["acc"], -start["loss"]) > (best["acc"], -best["loss"])
    if kept_start:
        assert start is not None
        best = {**start, "epoch": 0}
        stopped = (stopped or "all epochs run") + (
            f"; no epoch beat the starting point on validation ({start['acc']:.4f}): "
            "its weights are kept"
        )
    if keep_last and not kept_start:
        stopped = (stopped or "all epochs run") + "; the last epoch's weights kept"
    if best["state"] is not None:
        raw_model.load_state_dict(best["state"], strict=False)
    raw_model.eval()
    result = FinetuneResult(
        val_accuracy=best["acc"],
        val_loss=best["loss"],
        best_epoch=best["epoch"],
        epochs_run=len(history),
        unfrozen=[g.name for g in trainable_groups],
        n_trainable=n_trainable,
        lrs=lrs,
        guard=guard,
        history=history,
        stopped=stopped or "all epochs run",
        seconds=time.perf_counter() - t_start,
        examples_per_s=seen / train_time if train_time else 0.0,
        start_val_accuracy=None if start is None else start["acc"],
        kept_start=kept_start,
        resumed_from=resumed_from,
        tuned_state=best["state"] or {},
    )
    for p in raw_model.parameters():
        p.requires_grad_(False)
    del frozen_groups
    return raw_model, result


def measure_step(
    backbone: Backbone,
    head: nn.Module,
    train: Examples,
    cfg: FinetuneConfig,
    *,
    steps: int = 2,
    seed: int = 0,
) -> tuple[float, float]:
    """The cost-model probe of a fine-tuning rung: (training seconds per example, evaluation
    milliseconds per example), timed on ``steps`` batches after one warm-up batch.

    ``backbone`` and ``head`` are copied: the probe trains the copies (the same groups
    unfrozen, the same batch, augmentation and precision as :func:`finetune`) and throws
    them away, so it never changes the rung it measures.
    """
    import copy

    backbone = copy.deepcopy(backbone)
    model = TransferModel(backbone, copy.deepcopy(head))
    trainable_groups, _ = plan_groups(backbone, cfg)
    apply_freeze(backbone, trainable_groups)
    groups, _ = param_groups(model, trainable_groups, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    channels_last = backbone.modality == "image" and not torch.cuda.is_available()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = cfg.augment if cfg.augment is not None else backbone.modality == "image"
    maker = BatchMaker(train, backbone.preprocess, train=True, augment=augment, seed=seed)
    eval_maker = BatchMaker(train, backbone.preprocess, train=False, augment=False)
    n = min(cfg.batch_size, len(train))
    idx = list(range(n))
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        inputs, y = maker(idx)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        set_train_mode(model, cfg.bn)
        loss = loss_fn(model(**inputs).float(), y.to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def eval_step() -> None:
        inputs, _ = eval_maker(idx)
        model.eval()
        with torch.inference_mode():
            model(**{k: v.to(device) for k, v in inputs.items()})

    train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    eval_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / (steps * n), 1000 * (t2 - t1) / n
