"""Saved transcription models: writing, recognising and loading them; transcribing with them.

A transcription bundle is a folder that ``WhisperForConditionalGeneration.from_pretrained``
loads directly (config, weights, generation config, processor) plus ``headstart.json``:
``format`` (the same number as classification bundles, :data:`headstart.bundle.BUNDLE_FORMAT`),
``kind`` (``"transcription"``), the base model and its weights hash, the configuration, the
metrics and library versions. Bundles written before the ``kind`` field was unified (kind
``"headstart.Transcriber"``) are still recognised.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backbones.base import state_dict_sha256
from ..backbones.whisper import load_whisper_folder, load_whisper_generator
from ..bundle import BUNDLE_FORMAT, read_meta
from ..errors import DataError
from .decode import (
    DEFAULT_ASR_BACKBONE,
    evaluate_transcripts,
    generate_kwargs,
    log_mel_features,
    transcribe_features,
)
from .tables import builtin_tables, read_transcripts

__all__ = [
    "TRANSCRIBER_KIND",
    "evaluate_transcription",
    "is_transcription_bundle",
    "load_transcription_bundle",
    "save_transcription_bundle",
    "transcribe",
]

log = logging.getLogger("headstart")

#: ``kind`` in the ``headstart.json`` of a transcription bundle.
TRANSCRIBER_KIND = "transcription"
#: Kinds that older versions wrote for the same bundle.
_OLD_KINDS = frozenset({"headstart.Transcriber"})


def save_transcription_bundle(model: Any, processor: Any, dest: Path, meta: dict[str, Any]) -> None:
    """Write ``model`` and ``processor`` to ``dest`` (atomically) with ``headstart.json``
    holding ``meta`` after the format, kind, modality and tuned weights' hash."""
    from ..importers.onnx_bert import write_dir_atomically

    doc = {
        "format": BUNDLE_FORMAT,
        "kind": TRANSCRIBER_KIND,
        "modality": "audio",
        "tuned_sha256": state_dict_sha256(model),
        **meta,
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "headstart.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")

    write_dir_atomically(dest, write)


def is_transcription_bundle(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a model folder written by :func:`~headstart.asr.fit_transcription`."""
    meta = Path(path) / "headstart.json"
    if Path(os.path.realpath(path)) not in Path(os.path.realpath(meta)).parents:
        return False  # a link out of the folder: never opened (the bundle loader refuses it)
    try:
        kind = json.loads(meta.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return False
    return kind == TRANSCRIBER_KIND or kind in _OLD_KINDS


def load_transcription_bundle(path: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(model, processor, headstart.json contents) of a transcription bundle.

    Raises DataError when ``path`` is not one (naming its ``model/`` sub-folder when that is);
    warns when the bundle was written by a newer headstart.
    """
    p = Path(path)
    if not is_transcription_bundle(p):
        sub = p / "model"
        hint = " (did you mean its model/ sub-folder?)" if is_transcription_bundle(sub) else ""
        raise DataError(
            f"{p} is not a transcription model folder: it has no headstart.json of kind "
            f"{TRANSCRIBER_KIND!r}{hint}. Train one with: headstart transcribe fit DATA --out DIR"
        )
    meta = read_meta(p)
    model, processor = load_whisper_folder(p)
    return model, processor, meta


def _load_any(model_or_name: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """A transcription bundle, or a pretrained Whisper by backbone name."""
    p = Path(model_or_name)
    if is_transcription_bundle(p) or (p / "headstart.json").is_file():
        return load_transcription_bundle(p)
    model, processor, _, _ = load_whisper_generator(os.fspath(model_or_name))
    return model, processor, {"config": {"language": "en", "max_new_tokens": 128}}


def transcribe(
    model: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], *, batch_size: int = 8
) -> list[str]:
    """Transcripts of audio files with a transcription bundle or a Whisper backbone name."""
    m, processor, meta = _load_any(model)
    cfg = meta.get("config", {})
    kw = generate_kwargs(m, cfg.get("language", "en"), int(cfg.get("max_new_tokens", 128)))
    feats = log_mel_features(processor, [os.fspath(p) for p in paths])
    return transcribe_features(m, processor, feats, kw, batch_size)


def evaluate_transcription(
    model_dir: str | os.PathLike[str],
    csv: str | os.PathLike[str],
    *,
    baseline: bool = True,
    batch_size: int = 8,
    audio_column: str | None = None,
    text_column: str | None = None,
) -> dict[str, Any]:
    """WER of a transcription bundle on a table; with ``baseline`` also of the base model
    it was tuned from (``wer_before``), so the gain is measured on the same recordings."""
    model, processor, meta = load_transcription_bundle(model_dir)
    spec = os.fspath(csv)
    builtin = builtin_tables(spec)
    table = builtin["test"] if builtin else Path(spec)
    data = read_transcripts(table, audio_column=audio_column, text_column=text_column)
    cfg = meta.get("config", {})
    kw = generate_kwargs(model, cfg.get("language", "en"), int(cfg.get("max_new_tokens", 128)))
    feats = log_mel_features(processor, data.paths)
    after, hyps, secs = evaluate_transcripts(model, processor, data, feats, kw, batch_size)
    result: dict[str, Any] = {
        "table": str(table), "n": len(data), "wer_after": round(after.wer, 6),
        "after": after.to_dict(), "seconds_after": round(secs, 2),
        "transcripts": [{"audio": p, "reference": r, "after": h}
                        for p, r, h in zip(data.paths, data.texts, hyps, strict=True)],
    }  # fmt: skip
    if baseline:
        base = meta.get("base", {})
        try:
            bmodel, bproc, _, _ = load_whisper_generator(base.get("name", DEFAULT_ASR_BACKBONE))
        except Exception as exc:  # the base weights are gone: report the tuned model alone
            log.warning("base model %s not available (%s); no before/after", base.get("name"), exc)
        else:
            if base.get("sha256") and state_dict_sha256(bmodel) != base["sha256"]:
                log.warning("the base weights found differ from those the model was tuned from")
                result["base_weights_differ"] = True
            b, bh, bsecs = evaluate_transcripts(bmodel, bproc, data, feats, kw, batch_size)
            result.update(wer_before=round(b.wer, 6), before=b.to_dict(),
                          seconds_before=round(bsecs, 2))  # fmt: skip
            for row, h in zip(result["transcripts"], bh, strict=True):
                row["before"] = h
    return result
