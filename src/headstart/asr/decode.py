"""Turning audio files into transcripts with a Whisper model, and scoring them.

Shared by fine-tuning (:mod:`headstart.asr.train`), which measures the word error rate
before and after, and by saved models (:mod:`headstart.asr.bundle`). Decoding is greedy
(one beam, no sampling), so a transcript is reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .tables import Transcripts
from .text import WERResult, word_error_rate

__all__ = [
    "DEFAULT_ASR_BACKBONE",
    "evaluate_transcripts",
    "generate_kwargs",
    "log_mel_features",
    "transcribe_features",
]

DEFAULT_ASR_BACKBONE = "hf:openai/whisper-tiny.en"


def generate_kwargs(model: Any, language: str, max_new_tokens: int) -> dict[str, Any]:
    """Greedy decoding settings; ``language`` is used by multilingual checkpoints only."""
    kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": 1, "do_sample": False}
    if getattr(model.generation_config, "is_multilingual", False):
        kw.update(language=language, task="transcribe")
    return kw


def log_mel_features(processor: Any, paths: Sequence[str], batch: int = 16) -> torch.Tensor:
    """Log-mel features (N, n_mels, 3000) of audio files, Whisper's 30-second window."""
    from ..data.audio import read_audio

    fe = processor.feature_extractor
    out = []
    for i in range(0, len(paths), batch):
        waves = [read_audio(p, int(fe.sampling_rate)) for p in paths[i : i + batch]]
        out.append(
            fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features.float()
        )
    return torch.cat(out) if out else torch.empty(0)


def transcribe_features(
    model: Any, processor: Any, feats: torch.Tensor, kw: dict[str, Any], batch: int,
    progress: Callable[[int], None] | None = None,
) -> list[str]:  # fmt: skip
    """Transcripts of log-mel features, ``batch`` at a time; ``progress(n)`` after each batch."""
    model.eval()
    texts: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(feats), batch):
            ids = model.generate(input_features=feats[i : i + batch], **kw)
            texts += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
            if progress:
                progress(len(ids))
    return texts


def evaluate_transcripts(
    model: Any,
    processor: Any,
    data: Transcripts,
    feats: torch.Tensor,
    kw: dict[str, Any],
    batch: int,
) -> tuple[WERResult, list[str], float]:
    """(WER against ``data``'s transcripts, the hypotheses, seconds taken)."""
    t0 = time.perf_counter()
    hyps = transcribe_features(model, processor, feats, kw, batch)
    return word_error_rate(data.texts, hyps), hyps, time.perf_counter() - t0
