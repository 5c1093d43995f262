"""Speech-recognition adaptation: fine-tune Whisper on (audio, transcript) pairs, offline.

    result = fit_transcription("dictation/train.csv", backbone="hf:openai/whisper-tiny.en",
                               out="runs/asr", test_csv="dictation/test.csv",
                               general_csv="dictation/general.csv")
    result.metrics["test"]["wer_before"], result.metrics["test"]["wer_after"]
    evaluate_transcription("runs/asr/model", "held_out.csv")
    transcribe("runs/asr/model", ["clip.wav"])

What is trained: the whole decoder except its token and position embeddings (the token
embedding is tied to the output layer, so freezing it keeps every word Whisper can already
write where it was), the top ``unfreeze_encoder_blocks`` encoder blocks (-1: all of them)
and the encoder's final layer norm. The rest of the encoder (always its convolutional stem
and positional embeddings) is frozen; its output for each training clip is
computed once and reused every epoch (a frozen block computes the same thing every time).
AdamW with a low learning rate (1e-5 by default), linear warm-up then cosine decay, gradient
clipping, early stopping on the teacher-forced loss of a validation split carved from the
training table (the best epoch's weights are kept).

Word error rate (:func:`word_error_rate`) is measured before and after on held-out domain
recordings (``test_csv``) and, to measure forgetting, on general English sentences
(``general_csv``). Both sides are normalised alike (:func:`normalize_text`): lower case,
punctuation removed, numbers written as words ("500" → "five hundred").

A table is CSV, TSV or JSON Lines with an audio-path column (``audio``, ``path``, ``file``
...; paths relative to the table's folder) and a transcript column (``transcript``,
``text``, ``sentence`` ...). The built-in ``dictation`` set (synthetic, espeak-ng; see
:mod:`headstart.data.speech`) is named simply ``dictation``.

The result is a run folder: ``metrics.json``, ``config.json``, ``transcripts.json``
(every reference and hypothesis, before and after) and ``model/``, a bundle that
``WhisperForConditionalGeneration.from_pretrained`` loads directly (config, weights,
generation config, processor) plus ``headstart.json`` (kind ``headstart.Transcriber``:
base model and weights hash, configuration, metrics, library versions). Every file is
written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._env import machine, versions
from ._io import atomic_write_json, stable_hash
from .errors import ConfigError, DataError

__all__ = [
    "TRANSCRIBER_KIND",
    "TranscriptionConfig",
    "TranscriptionResult",
    "Transcripts",
    "WERResult",
    "evaluate_transcription",
    "fit_transcription",
    "is_transcription_bundle",
    "normalize_text",
    "number_to_words",
    "read_transcripts",
    "summarise",
    "transcribe",
    "word_error_rate",
]

log = logging.getLogger("headstart")

TRANSCRIBER_KIND = "headstart.Transcriber"
BUNDLE_FORMAT = 1
DEFAULT_ASR_BACKBONE = "hf:openai/whisper-tiny.en"
AUDIO_COLUMNS = ("audio", "audio_path", "path", "file", "filepath", "file_path", "wav", "clip")
TEXT_COLUMNS = ("transcript", "transcription", "text", "sentence", "words", "label")


# ============================================================================ normalising

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int) -> str:
    """``n`` in words as spoken in (British/American) English without "and": 1500 → "one
    thousand five hundred", 250 → "two hundred fifty". Negative numbers get "minus"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + (" " + number_to_words(rest) if rest else "")
    for value, word in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return (
                number_to_words(high) + f" {word}" + (" " + number_to_words(rest) if rest else "")
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _digits_to_words(match: re.Match[str]) -> str:
    text = match.group(0)
    number, suffix = match.group(1), (match.group(2) or "").lower()
    whole, _, frac = number.replace(",", "").partition(".")
    if len(whole) > 15:  # a code or identifier, not a quantity: read digit by digit
        return " ".join(_ONES[int(d)] for d in text if d.isdigit())
    words = number_to_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suffix in ("st", "nd", "rd", "th") and not frac:
        words = _ordinal(words)
    return f" {words} "


_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(st|nd|rd|th)?", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Lower case, numbers as words, punctuation removed, single spaces.

    ``"Take 2.5 mg, twice-daily!"`` → ``"take two point five mg twice daily"``;
    ``"the 3rd of May"`` → ``"the third of may"``; ``"1,000"`` → ``"one thousand"``;
    ``"50%"`` → ``"fifty percent"``; ``"don't"`` → ``"dont"`` (apostrophes are dropped, on
    both sides alike). Units are not expanded ("mg" stays "mg").
    """
    s = str(text).lower()
    s = s.replace("%", " percent ").replace("&", " and ")
    s = re.sub(r"(\d)([a-z])", r"\1 \2", s)  # "500mg" → "500 mg"
    s = re.sub(r"(\d) (st|nd|rd|th)\b", r"\1\2", s)  # ... but keep "3rd" together
    s = _NUMBER.sub(_digits_to_words, s)
    s = re.sub(r"['’`]", "", s)
    s = re.sub(r"[^\w\s]|_", " ", s)
    return " ".join(s.split())


# ================================================================================== WER


@dataclass
class WERResult:
    """Corpus word error rate: (substitutions + deletions + insertions) / reference words."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    n_utterances: int
    utterance_wer: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, utterances: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not utterances:
            d.pop("utterance_wer")
        return d


def _edit_counts(ref: Sequence[str], hyp: Sequence[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum word-level alignment.

    Among alignments with the fewest edits, the one with the most substitutions is chosen
    (as jiwer and sclite do), so that a wrong word counts as one error, not two.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j] = (edits, -substitutions) of ref[:i] vs hyp[:j]; tuples compare lexically.
    prev = [(j, 0, 0, 0, j) for j in range(m + 1)]  # (edits, -subs, S, D, I)
    for i in range(1, n + 1):
        cur = [(i, 0, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                e, ns, s, d, ins = prev[j - 1]
                best = (e + 1, ns - 1, s + 1, d, ins)
            e, ns, s, d, ins = prev[j]
            best = min(best, (e + 1, ns, s, d + 1, ins))
            e, ns, s, d, ins = cur[j - 1]
            best = min(best, (e + 1, ns, s, d, ins + 1))
            cur.append(best)
        prev = cur
    _, _, s, d, ins = prev[m]
    return s, d, ins


def word_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, normalize: bool = True
) -> WERResult:
    """Corpus WER of ``hypotheses`` against ``references`` (same length, same order).

    With ``normalize`` (default) both go through :func:`normalize_text` first. An empty
    reference contributes its hypothesis' words as insertions; the corpus WER is then over
    the other references' words (ConfigError when there are none at all).
    """
    if len(references) != len(hypotheses):
        raise ConfigError(
            f"word_error_rate needs one hypothesis per reference; got {len(references)} "
            f"references and {len(hypotheses)} hypotheses."
        )
    tot = [0, 0, 0, 0]
    per: list[float] = []
    for r, h in zip(references, hypotheses, strict=True):
        rw = (normalize_text(r) if normalize else str(r)).split()
        hw = (normalize_text(h) if normalize else str(h)).split()
        s, d, i = _edit_counts(rw, hw)
        tot[0] += s
        tot[1] += d
        tot[2] += i
        tot[3] += len(rw)
        per.append((s + d + i) / len(rw) if rw else float(len(hw)))
    if tot[3] == 0 and references:
        raise ConfigError("Every reference transcript is empty: word error rate is undefined.")
    wer = (tot[0] + tot[1] + tot[2]) / tot[3] if tot[3] else 0.0
    return WERResult(wer, tot[0], tot[1], tot[2], tot[3], len(references), per)


# ================================================================================ tables


@dataclass
class Transcripts:
    """Audio files and what is said in them, from one table."""

    paths: list[str]
    texts: list[str]
    sources: list[str]
    name: str

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: Sequence[int], name: str | None = None) -> Transcripts:
        return Transcripts(
            [self.paths[i] for i in idx],
            [self.texts[i] for i in idx],
            [self.sources[i] for i in idx],
            name or self.name,
        )

    def fingerprint(self) -> str:
        from ._io import sha256_file

        return stable_hash({"texts": self.texts, "audio": [sha256_file(p) for p in self.paths]})[
            :32
        ]


def _builtin_tables(spec: str) -> dict[str, Path] | None:
    """{"train", "test", "general"} tables of the built-in ``dictation`` set, if ``spec`` names it."""
    text = spec.removeprefix("builtin:")
    if text != "dictation" or (Path(spec).exists() and not spec.startswith("builtin:")):
        return None
    from .data.builtin import dataset_dirs

    for d in dataset_dirs():
        folder = d / "dictation"
        if (folder / "train.csv").is_file():
            return {k: folder / f"{k}.csv" for k in ("train", "test", "general")}
    raise DataError(
        "The built-in data set 'dictation' is not installed (it is generated with espeak-ng). "
        "Install it with: headstart datasets --install dictation"
    )


def _pick(columns: list[str], given: str | None, names: tuple[str, ...], role: str,
          path: Path, arg: str) -> str:  # fmt: skip
    from .errors import did_you_mean

    if given is not None:
        if given in columns:
            return given
        raise DataError(
            f"{path} has no {role} column {given!r}.{did_you_mean(given, columns)} Columns: "
            f"{', '.join(columns)}. Pass the right name as {arg}."
        )
    lower = {c.lower(): c for c in reversed(columns)}
    found = next((lower[n] for n in names if n in lower), None)
    if found is None:
        raise DataError(
            f"Cannot tell which column of {path} holds the {role}: none is named "
            f"{', '.join(names[:4])} ... Columns: {', '.join(columns)}. Pass {arg}."
        )
    return found


def read_transcripts(
    path: str | os.PathLike[str],
    *,
    audio_column: str | None = None,
    text_column: str | None = None,
    check_audio: bool = True,
) -> Transcripts:
    """Read a table of (audio path, transcript) rows; paths relative to the table's folder.

    Raises DataError naming the rows with an empty cell or a missing or unreadable audio
    file (the header of every file is checked when ``check_audio``).
    """
    from .data.audio import audio_problem
    from .data.files import _read_frame, table_format

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"Transcript table not found: {p}. Check the path.")
    fmt = table_format(p)
    if fmt not in ("csv", "tsv", "jsonl", "json", "parquet"):
        raise DataError(
            f"{p.name}: a transcript table is a .csv, .tsv, .jsonl, .json or .parquet file "
            "with an audio-path column and a transcript column."
        )
    df, sources = _read_frame(p, fmt)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if len(df) == 0:
        raise DataError(f"{p} has no rows (columns: {', '.join(columns) or 'none'}).")
    a = _pick(columns, audio_column, AUDIO_COLUMNS, "audio paths", p, "--audio-column")
    t = _pick(columns, text_column, TEXT_COLUMNS, "transcripts", p, "--text-column")
    if a == t:
        raise DataError(f"The audio column and the transcript column of {p} are both {a!r}.")
    paths, texts = [], []
    empty, bad = [], []
    for k, (av, tv) in enumerate(zip(df[a].tolist(), df[t].tolist(), strict=True)):
        av = "" if av is None or (isinstance(av, float) and math.isnan(av)) else str(av).strip()
        tv = "" if tv is None or (isinstance(tv, float) and math.isnan(tv)) else str(tv).strip()
        if not av or not tv:
            empty.append(sources[k])
            continue
        f = Path(av).expanduser()
        f = f if f.is_absolute() else p.parent / f
        if check_audio:
            why = audio_problem(f)
            if why is not None:
                bad.append(f"{sources[k]}: {why}")
        paths.append(str(f))
        texts.append(tv)
    if empty:
        raise DataError(
            f"{len(empty)} row(s) of {p} have an empty audio or transcript cell "
            f"({', '.join(empty[:5])}). Fill them in or remove the rows."
        )
    if bad:
        raise DataError(f"{len(bad)} audio file(s) in {p} cannot be used. First: {bad[0]}")
    return Transcripts(paths, texts, list(sources), str(p))


# ============================================================================ the model


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


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_base(backbone: str) -> tuple[Any, Any, str, str]:
    """(model, processor, folder or hub id, provenance) of a pretrained Whisper."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from .backbones.audio import resolve_whisper
    from .errors import BackboneError, WeightsNotFoundError

    _quiet_hf()
    where, provenance, _ = resolve_whisper(backbone, pretrained=True)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(str(where), dtype=torch.float32)
        processor = WhisperProcessor.from_pretrained(str(where))
    except OSError as exc:
        from .backbones import offline

        off = offline.OFFLINE_SOURCES.get(backbone)
        hint = f" Offline: {off.install_command}." if off else ""
        raise WeightsNotFoundError(
            f"Could not load {backbone} from {where} ({str(exc).splitlines()[0][:200]}).{hint}"
        ) from exc
    except ValueError as exc:
        raise BackboneError(f"{backbone} is not a Whisper model ({exc}).") from exc
    if model.config.model_type != "whisper":
        raise BackboneError(
            f"{backbone} is a {model.config.model_type!r} model; speech recognition needs "
            "Whisper (e.g. hf:openai/whisper-tiny.en)."
        )
    model.eval()
    return model, processor, str(where), provenance


def _generate_kwargs(model: Any, cfg_language: str, max_new_tokens: int) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": 1, "do_sample": False}
    if getattr(model.generation_config, "is_multilingual", False):
        kw.update(language=cfg_language, task="transcribe")
    return kw


def _features(processor: Any, paths: Sequence[str], batch: int = 16) -> torch.Tensor:
    """Log-mel features (N, n_mels, 3000) of audio files, Whisper's 30-second window."""
    from .data.audio import read_audio

    fe = processor.feature_extractor
    out = []
    for i in range(0, len(paths), batch):
        waves = [read_audio(p, int(fe.sampling_rate)) for p in paths[i : i + batch]]
        out.append(
            fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features.float()
        )
    return torch.cat(out) if out else torch.empty(0)


def _transcribe_features(
    model: Any, processor: Any, feats: torch.Tensor, kw: dict[str, Any], batch: int,
    progress: Callable[[int], None] | None = None,
) -> list[str]:  # fmt: skip
    model.eval()
    texts: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(feats), batch):
            ids = model.generate(input_features=feats[i : i + batch], **kw)
            texts += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
            if progress:
                progress(len(ids))
    return texts


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


def _trainable_names(model: Any, k: int) -> list[str]:
    """Decoder blocks and norm, the top ``k`` encoder blocks (-1: all) and the encoder norm.

    The convolutional stem and every embedding stay frozen, whatever ``k``.
    """
    n_enc = len(model.model.encoder.layers)
    first = n_enc - (n_enc if k < 0 else min(k, n_enc))
    always = ("model.encoder.layer_norm.", "model.decoder.layers.", "model.decoder.layer_norm.")
    names = []
    for name, _ in model.named_parameters():
        m = re.match(r"model\.encoder\.layers\.(\d+)\.", name)
        if (m and int(m.group(1)) >= first) or name.startswith(always):
            names.append(name)
    return names


def _encode_bottom(model: Any, feats: torch.Tensor, upto: int) -> torch.Tensor:
    """Hidden states after the convolutional stem and encoder blocks ``[0, upto)``."""
    enc = model.model.encoder
    x = torch.nn.functional.gelu(enc.conv1(feats))
    x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[: x.shape[1]]
    for layer in enc.layers[:upto]:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
    return x


def _encode_top(model: Any, x: torch.Tensor, start: int) -> torch.Tensor:
    enc = model.model.encoder
    x = (
        torch.nn.functional.dropout(x, p=float(enc.dropout), training=enc.training)
        if start == 0
        else x
    )
    for layer in enc.layers[start:]:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
    return enc.layer_norm(x)


def _pad_labels(batch: list[list[int]]) -> torch.Tensor:
    n = max(len(b) for b in batch)
    out = torch.full((len(batch), n), -100, dtype=torch.long)
    for i, b in enumerate(batch):
        out[i, : len(b)] = torch.tensor(b, dtype=torch.long)
    return out


def _schedule(total: int, warmup: float) -> Callable[[int], float]:
    warm = max(1, round(total * warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _loss(model: Any, hidden: torch.Tensor, start: int, labels: torch.Tensor) -> torch.Tensor:
    from transformers.modeling_outputs import BaseModelOutput

    enc_out = _encode_top(model, hidden, start)
    return model(encoder_outputs=BaseModelOutput(last_hidden_state=enc_out), labels=labels).loss


def _val_loss(
    model: Any, cached: torch.Tensor, labels: list[list[int]], start: int, batch: int
) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(labels), batch):
            lab = _pad_labels(labels[i : i + batch])
            tokens = int((lab != -100).sum())
            total += float(_loss(model, cached[i : i + batch], start, lab)) * tokens
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


def _evaluate(
    model: Any,
    processor: Any,
    data: Transcripts,
    feats: torch.Tensor,
    kw: dict[str, Any],
    batch: int,
) -> tuple[WERResult, list[str], float]:
    t0 = time.perf_counter()
    hyps = _transcribe_features(model, processor, feats, kw, batch)
    return word_error_rate(data.texts, hyps), hyps, time.perf_counter() - t0


def _resolve_tables(
    train_csv: str | os.PathLike[str], test_csv: Any, general_csv: Any
) -> tuple[Path, Path | None, Path | None]:
    builtin = _builtin_tables(os.fspath(train_csv))
    if builtin is not None:
        return (
            builtin["train"],
            Path(test_csv) if test_csv is not None else builtin["test"],
            Path(general_csv) if general_csv is not None else builtin["general"],
        )
    return (
        Path(train_csv),
        Path(test_csv) if test_csv is not None else None,
        Path(general_csv) if general_csv is not None else None,
    )


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
    train_path, test_path, general_path = _resolve_tables(train_csv, test_csv, general_csv)
    pool = read_transcripts(train_path, audio_column=audio_column, text_column=text_column)
    evals = {
        name: read_transcripts(p, audio_column=audio_column, text_column=text_column)
        for name, p in (("test", test_path), ("general", general_path))
        if p is not None
    }
    tr_idx, va_idx = _split_val(len(pool), cfg.val_fraction, cfg.seed)
    train = pool.subset(tr_idx.tolist(), f"{pool.name} train")
    val = pool.subset(va_idx.tolist(), f"{pool.name} val")

    model, processor, where, provenance = _load_base(cfg.backbone)
    from .backbones.base import state_dict_sha256

    base_sha = state_dict_sha256(model)
    multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
    kw = _generate_kwargs(model, cfg.language, cfg.max_new_tokens)
    audio_seconds = _seconds(train.paths)

    # Features once; the WER of the pretrained model on every held-out table.
    t0 = time.perf_counter()
    feats = {name: _features(processor, d.paths) for name, d in evals.items()}
    before: dict[str, tuple[WERResult, list[str], float]] = {}
    for name, d in evals.items():
        before[name] = _evaluate(model, processor, d, feats[name], kw, cfg.eval_batch_size)
        log.info("%s WER before: %.4f (%.1f s)", name, before[name][0].wer, before[name][2])
    t_before = time.perf_counter() - t0

    # Frozen bottom of the encoder: computed once for train and val.
    n_enc = len(model.model.encoder.layers)
    k = n_enc if cfg.unfreeze_encoder_blocks < 0 else min(cfg.unfreeze_encoder_blocks, n_enc)
    start = n_enc - k  # blocks [0, start) and the stem are frozen: their output is cached
    t0 = time.perf_counter()
    cached = {}
    for name, d in (("train", train), ("val", val)):
        f = _features(processor, d.paths)
        with torch.inference_mode():
            cached[name] = torch.cat(
                [_encode_bottom(model, f[i : i + 8], start) for i in range(0, len(f), 8)]
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
    names = set(_trainable_names(model, k))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    params = dict(model.named_parameters())
    decay = [params[n] for n in sorted(names) if params[n].ndim > 1]
    no_decay = [params[n] for n in sorted(names) if params[n].ndim <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(steps_per_epoch * cfg.epochs, cfg.warmup)
    )
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
            loss = _loss(model, cached["train"][idx], start, lab)
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
        name: _evaluate(model, processor, d, feats[name], kw, cfg.eval_batch_size)
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
    _save_bundle(model, processor, out_dir / "model", {**config_doc, "metrics": _short(metrics)})
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


# ============================================================================== bundles


def _save_bundle(model: Any, processor: Any, dest: Path, meta: dict[str, Any]) -> None:
    from .backbones.base import state_dict_sha256
    from .importers.onnx_bert import write_dir_atomically

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
    """True when ``path`` is a model folder written by :func:`fit_transcription`."""
    meta = Path(path) / "headstart.json"
    try:
        return json.loads(meta.read_text()).get("kind") == TRANSCRIBER_KIND
    except (OSError, ValueError):
        return False


def _load_bundle(path: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    p = Path(path)
    if not is_transcription_bundle(p):
        sub = p / "model"
        hint = " (did you mean its model/ sub-folder?)" if is_transcription_bundle(sub) else ""
        raise DataError(
            f"{p} is not a transcription model folder: it has no headstart.json of kind "
            f"{TRANSCRIBER_KIND}{hint}. Train one with: headstart transcribe fit DATA --out DIR"
        )
    _quiet_hf()
    meta = json.loads((p / "headstart.json").read_text())
    model = WhisperForConditionalGeneration.from_pretrained(str(p), dtype=torch.float32).eval()
    return model, WhisperProcessor.from_pretrained(str(p)), meta


def _load_any(model_or_name: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """A transcription bundle, or a pretrained Whisper by backbone name."""
    p = Path(model_or_name)
    if is_transcription_bundle(p) or (p / "headstart.json").is_file():
        return _load_bundle(p)
    model, processor, _, _ = _load_base(os.fspath(model_or_name))
    return model, processor, {"config": {"language": "en", "max_new_tokens": 128}}


def transcribe(
    model: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], *, batch_size: int = 8
) -> list[str]:
    """Transcripts of audio files with a transcription bundle or a Whisper backbone name."""
    m, processor, meta = _load_any(model)
    cfg = meta.get("config", {})
    kw = _generate_kwargs(m, cfg.get("language", "en"), int(cfg.get("max_new_tokens", 128)))
    feats = _features(processor, [os.fspath(p) for p in paths])
    return _transcribe_features(m, processor, feats, kw, batch_size)


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
    model, processor, meta = _load_bundle(model_dir)
    spec = os.fspath(csv)
    builtin = _builtin_tables(spec)
    table = builtin["test"] if builtin else Path(spec)
    data = read_transcripts(table, audio_column=audio_column, text_column=text_column)
    cfg = meta.get("config", {})
    kw = _generate_kwargs(model, cfg.get("language", "en"), int(cfg.get("max_new_tokens", 128)))
    feats = _features(processor, data.paths)
    after, hyps, secs = _evaluate(model, processor, data, feats, kw, batch_size)
    result: dict[str, Any] = {
        "table": str(table), "n": len(data), "wer_after": round(after.wer, 6),
        "after": after.to_dict(), "seconds_after": round(secs, 2),
        "transcripts": [{"audio": p, "reference": r, "after": h}
                        for p, r, h in zip(data.paths, data.texts, hyps, strict=True)],
    }  # fmt: skip
    if baseline:
        base = meta.get("base", {})
        try:
            bmodel, bproc, _, _ = _load_base(base.get("name", DEFAULT_ASR_BACKBONE))
        except Exception as exc:  # the base weights are gone: report the tuned model alone
            log.warning("base model %s not available (%s); no before/after", base.get("name"), exc)
        else:
            from .backbones.base import state_dict_sha256

            if base.get("sha256") and state_dict_sha256(bmodel) != base["sha256"]:
                log.warning("the base weights found differ from those the model was tuned from")
                result["base_weights_differ"] = True
            b, bh, bsecs = _evaluate(bmodel, bproc, data, feats, kw, batch_size)
            result.update(wer_before=round(b.wer, 6), before=b.to_dict(),
                          seconds_before=round(bsecs, 2))  # fmt: skip
            for row, h in zip(result["transcripts"], bh, strict=True):
                row["before"] = h
    return result
