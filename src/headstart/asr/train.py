"""Fine-tuning Whisper on (audio, transcript) pairs: :func:`fit_transcription`.

What is trained: the whole decoder except its token and position embeddings (the token
embedding is tied to the output layer, so freezing it keeps every word Whisper can already
write where it was), the top ``unfreeze_encoder_blocks`` encoder blocks (-1: all of them)
and the encoder's final layer norm (see
:func:`headstart.backbones.whisper.tunable_parameter_names`). The rest of the encoder
(always its convolutional stem and positional embeddings) is frozen; its output for each
training clip is computed once and reused every epoch (a frozen block computes the same
thing every time). AdamW with a low learning rate (1e-5 by default), linear warm-up then
cosine decay to 0 (the shared :func:`headstart.strategies.training.adamw_cosine`), gradient clipping,
early stopping on the teacher-forced loss of a validation split carved from the training
table (the best epoch's weights are kept).

The result is a run folder: ``metrics.json``, ``config.json``, ``transcripts.json``
(every reference and hypothesis, before and after) and ``model/``, a transcription bundle
(:mod:`headstart.asr.bundle`). Every file is written atomically.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._env import machine, versions
from .._io import atomic_write_json
from ..backbones.base import state_dict_sha256
from ..backbones.whisper import (
    encode_bottom,
    encoder_depth,
    load_whisper_generator,
    transcription_loss,
    tunable_parameter_names,
)
from ..errors import ConfigError, DataError
from ..strategies.training import adamw_cosine, decay_groups
from .bundle import save_transcription_bundle
from .decode import (
    DEFAULT_ASR_BACKBONE,
    evaluate_transcripts,
    generate_kwargs,
    log_mel_features,
)
from .tables import read_transcripts, resolve_tables
from .text import WERResult

__all__ = ["TranscriptionConfig", "TranscriptionResult", "fit_transcription", "summarise"]

log = logging.getLogger("headstart")


@dataclass
class TranscriptionConfig:
    """How :func:`fit_transcription` trains; saved with the model."""

    backbone: str = DEFAULT_ASR_BACKBONE
    epochs: int = 2
    lr: float = 1e-5
    unfreeze_encoder_blocks: int = 2
    batch_size: int = 8
    warmup: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    patience: int = 2
    seed: int = 0
    target_style: str = "sentence"  # "sentence": capital first letter, final full stop
    language: str = "en"  # used only by multilingual checkpoints
    max_new_tokens: int = 128
    eval_batch_size: int = 8
    time_budget_s: float | None = None

    def validate(self) -> None:
        bad = []
        if self.epochs < 1:
            bad.append(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.lr <= 1e-2:
            bad.append(
                f"lr must be in (0, 0.01], got {self.lr} (for a pretrained Whisper 1e-5 to "
                "5e-5 is the usual range: it forgets fast)"
            )
        if self.unfreeze_encoder_blocks < -1:
            bad.append(
                f"unfreeze_encoder_blocks must be >= -1 (-1: all), got {self.unfreeze_encoder_blocks}"
            )
        if self.batch_size < 1 or self.eval_batch_size < 1:
            bad.append("batch sizes must be >= 1")
        if not 0 <= self.warmup < 1:
            bad.append(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if not 0 < self.val_fraction < 1:
            bad.append(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.patience < 1:
            bad.append(f"patience must be >= 1, got {self.patience}")
        if self.target_style not in ("sentence", "as-is"):
            bad.append(f"target_style must be 'sentence' or 'as-is', got {self.target_style!r}")
        if bad:
            raise ConfigError("Invalid transcription settings: " + "; ".join(bad) + ".")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TranscriptionResult:
    out: Path
    metrics: dict[str, Any]
    summary: str


def _style(text: str, style: str) -> str:
    text = " ".join(str(text).split())
    if style == "as-is" or not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def _labels(
    processor: Any, texts: Sequence[str], style: str, language: str, multilingual: bool
) -> list[list[int]]:
    """Token ids of ``<|startoftranscript|> [lang task] <|notimestamps|> text <|endoftext|>``
    without the start token (the model prepends it when shifting labels right)."""
    tok = processor.tokenizer
    if multilingual:
        tok.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)
    start = processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    out = []
    for t in texts:
        ids = tok(" " + _style(t, style)).input_ids  # Whisper's text starts with a space
        out.append(ids[1:] if ids and ids[0] == start else ids)
    return out


def _pad_labels(batch: list[list[int]]) -> torch.Tensor:
    n = max(len(b) for b in batch)
    out = torch.full((len(batch), n), -100, dtype=torch.long)
    for i, b in enumerate(batch):
        out[i, : len(b)] = torch.tensor(b, dtype=torch.long)
    return out


def _val_loss(
    model: Any, cached: torch.Tensor, labels: list[list[int]], start: int, batch: int
) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(labels), batch):
            lab = _pad_labels(labels[i : i + batch])
            tokens = int((lab != -100).sum())
            total += float(transcription_loss(model, cached[i : i + batch], start, lab)) * tokens
            n += tokens
    return total / max(1, n)


def _split_val(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise DataError(
            f"Fine-tuning needs at least 2 training recordings (one for validation); got {n}."
        )
    order = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, round(n * fraction)))
    return np.sort(order[k:]), np.sort(order[:k])


def fit_transcription(
    train_csv: str | os.PathLike[str],
    *,
    backbone: str = DEFAULT_ASR_BACKBONE,
    out: str | os.PathLike[str],
    test_csv: str | os.PathLike[str] | None = None,
    general_csv: str | os.PathLike[str] | None = None,
    epochs: int = 2,
    lr: float = 1e-5,
    unfreeze_encoder_blocks: int = 2,
    batch_size: int = 8,
    val_fraction: float = 0.1,
    patience: int = 2,
    seed: int = 0,
    audio_column: str | None = None,
    text_column: str | None = None,
    config: TranscriptionConfig | None = None,
    progress: bool = True,
) -> TranscriptionResult:
    """Fine-tune Whisper on the (audio, transcript) rows of ``train_csv``; write ``out``.

    ``train_csv`` may be ``"dictation"`` (the built-in synthetic set; its ``test.csv`` and
    ``general.csv`` are then used unless others are given). WER is measured before and
    after on ``test_csv`` (held-out domain recordings) and ``general_csv`` (general speech:
    forgetting). ``config`` overrides the keyword settings. Returns the metrics and a
    printable summary; see the module docstring for the run folder's contents.
    """
    cfg = config or TranscriptionConfig(
        backbone=backbone, epochs=epochs, lr=lr, unfreeze_encoder_blocks=unfreeze_encoder_blocks,
        batch_size=batch_size, val_fraction=val_fraction, patience=patience, seed=seed,
    )  # fmt: skip
    cfg.validate()
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out_dir = Path(out)
    train_path, test_path, general_path = resolve_tables(train_csv, test_csv, general_csv)
    pool = read_transcripts(train_path, audio_column=audio_column, text_column=text_column)
    evals = {
        name: read_transcripts(p, audio_column=audio_column, text_column=text_column)
        for name, p in (("test", test_path), ("general", general_path))
        if p is not None
    }
    tr_idx, va_idx = _split_val(len(pool), cfg.val_fraction, cfg.seed)
    train = pool.subset(tr_idx.tolist(), f"{pool.name} train")
    val = pool.subset(va_idx.tolist(), f"{pool.name} val")

    model, processor, where, provenance = load_whisper_generator(cfg.backbone)
    base_sha = state_dict_sha256(model)
    multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
    kw = generate_kwargs(model, cfg.language, cfg.max_new_tokens)
    audio_seconds = _seconds(train.paths)

    # Features once; the WER of the pretrained model on every held-out table.
    t0 = time.perf_counter()
    feats = {name: log_mel_features(processor, d.paths) for name, d in evals.items()}
    before: dict[str, tuple[WERResult, list[str], float]] = {}
    for name, d in evals.items():
        before[name] = evaluate_transcripts(
            model, processor, d, feats[name], kw, cfg.eval_batch_size
        )
        log.info("%s WER before: %.4f (%.1f s)", name, before[name][0].wer, before[name][2])
    t_before = time.perf_counter() - t0

    # Frozen bottom of the encoder: computed once for train and val.
    n_enc = encoder_depth(model)
    k = n_enc if cfg.unfreeze_encoder_blocks < 0 else min(cfg.unfreeze_encoder_blocks, n_enc)
    start = n_enc - k  # blocks [0, start) and the stem are frozen: their output is cached
    t0 = time.perf_counter()
    cached = {}
    for name, d in (("train", train), ("val", val)):
        f = log_mel_features(processor, d.paths)
        with torch.inference_mode():
            cached[name] = torch.cat(
                [encode_bottom(model, f[i : i + 8], start) for i in range(0, len(f), 8)]
            )
    t_cache = time.perf_counter() - t0
    labels = {
        name: _labels(processor, d.texts, cfg.target_style, cfg.language, multilingual)
        for name, d in (("train", train), ("val", val))
    }
    too_long = [
        i
        for i, lab in enumerate(labels["train"])
        if len(lab) > model.config.max_target_positions - 1
    ]
    if too_long:
        raise DataError(
            f"{len(too_long)} transcript(s) in {train_path} are longer than Whisper's "
            f"{model.config.max_target_positions} tokens (first: {train.sources[too_long[0]]}). "
            "Split long recordings into shorter clips with their own transcripts."
        )

    # Freeze, then train.
    names = set(tunable_parameter_names(model, k))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    params = dict(model.named_parameters())
    groups = decay_groups(
        [(n, params[n]) for n in sorted(names)], cfg.lr, cfg.weight_decay, "decoder"
    )
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer, scheduler = adamw_cosine(groups, cfg.lr, steps_per_epoch * cfg.epochs, cfg.warmup)
    n_trainable = sum(params[n].numel() for n in names)
    val_loss0 = _val_loss(model, cached["val"], labels["val"], start, cfg.eval_batch_size)
    history: list[dict[str, float]] = [{"epoch": 0, "val_loss": val_loss0}]
    best = {"loss": val_loss0, "epoch": 0, "state": _snapshot(model, names)}
    stopped, bad = "all epochs run", 0
    t_train0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
        loss_sum, tok_sum = 0.0, 0
        bar = _bar(steps_per_epoch, f"fine-tune epoch {epoch + 1}/{cfg.epochs}", progress)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            lab = _pad_labels([labels["train"][j] for j in idx])
            loss = transcription_loss(model, cached["train"][idx], start, lab)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([params[n] for n in names], cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens = int((lab != -100).sum())
            loss_sum += float(loss.detach()) * tokens
            tok_sum += tokens
            bar.update(1)
        bar.close()
        vl = _val_loss(model, cached["val"], labels["val"], start, cfg.eval_batch_size)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(1, tok_sum),
                        "val_loss": vl, "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f", epoch + 1, loss_sum / max(1, tok_sum), vl
        )
        if vl < best["loss"]:
            best, bad = {"loss": vl, "epoch": epoch + 1, "state": _snapshot(model, names)}, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                stopped = f"early stop: validation loss did not improve for {cfg.patience} epochs"
                break
        if cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s:
            stopped = f"time budget of {cfg.time_budget_s:.0f} s spent"
            break
    t_train = time.perf_counter() - t_train0
    model.load_state_dict(best["state"], strict=False)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()

    t0 = time.perf_counter()
    after = {
        name: evaluate_transcripts(model, processor, d, feats[name], kw, cfg.eval_batch_size)
        for name, d in evals.items()
    }
    t_after = time.perf_counter() - t0

    metrics: dict[str, Any] = {
        "task": "transcription",
        "backbone": cfg.backbone,
        "n_train": len(train),
        "n_val": len(val),
        "train_audio_minutes": round(audio_seconds / 60, 3),
        "trainable": {
            "n_params": n_trainable,
            "encoder_blocks": k,
            "decoder": "all blocks",
            "frozen": "token and position embeddings, convolutional stem, lower encoder blocks",
        },
        "training": {
            "best_epoch": best["epoch"],
            "epochs_run": len(history) - 1,
            "stopped": stopped,
            "history": history,
        },
    }
    for name, d in evals.items():
        b, a = before[name][0], after[name][0]
        metrics[name] = {
            "table": str(test_path if name == "test" else general_path),
            "n": len(d),
            "wer_before": round(b.wer, 6),
            "wer_after": round(a.wer, 6),
            "relative_change": round((a.wer - b.wer) / b.wer, 6) if b.wer else None,
            "before": b.to_dict(),
            "after": a.to_dict(),
        }
    metrics["timings"] = {
        "wer_before_s": round(t_before, 2), "encoder_cache_s": round(t_cache, 2),
        "train_s": round(t_train, 2), "wer_after_s": round(t_after, 2),
        "total_s": round(time.perf_counter() - t_start, 2),
    }  # fmt: skip
    transcripts = {
        name: [
            {"audio": pth, "reference": ref, "before": hb, "after": ha}
            for pth, ref, hb, ha in zip(
                d.paths, d.texts, before[name][1], after[name][1], strict=True
            )
        ]
        for name, d in evals.items()
    }
    config_doc = {
        "config": cfg.to_dict(),
        "data": {
            "train": str(train_path),
            "test": str(test_path) if test_path else None,
            "general": str(general_path) if general_path else None,
            "train_fingerprint": train.fingerprint(),
            "val_rows": list(val.sources),
        },
        "base": {"name": cfg.backbone, "folder": where, "source": provenance, "sha256": base_sha},
        "versions": versions(),
        "machine": machine(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_transcription_bundle(
        model, processor, out_dir / "model", {**config_doc, "metrics": _short(metrics)}
    )
    atomic_write_json(out_dir / "config.json", config_doc)
    atomic_write_json(out_dir / "transcripts.json", transcripts)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return TranscriptionResult(out_dir, metrics, summarise(metrics))


def _seconds(paths: Sequence[str]) -> float:
    import soundfile as sf

    return float(sum(sf.info(p).duration for p in paths))


def _snapshot(model: Any, names: set[str]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in names}


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _short(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: metrics[k] for k in ("n_train", "n_val", "train_audio_minutes") if k in metrics
    }
    for name in ("test", "general"):
        if name in metrics:
            out[name] = {k: metrics[name][k] for k in ("n", "wer_before", "wer_after")}
    return out


def summarise(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"transcription: fine-tuned {metrics['backbone']} on {metrics['n_train']} recordings "
        f"({metrics['train_audio_minutes']:.1f} min; {metrics['n_val']} for validation), "
        f"best epoch {metrics['training']['best_epoch']} ({metrics['training']['stopped']})"
    ]
    for name, what in (("test", "held-out domain"), ("general", "general speech")):
        if name in metrics:
            m = metrics[name]
            lines.append(
                f"  WER {what} ({m['n']}): {m['wer_before']:.4f} before -> {m['wer_after']:.4f} after"
            )
    lines.append(f"  time: {metrics['timings']['total_s']:.0f} s")
    return "\n".join(lines)
