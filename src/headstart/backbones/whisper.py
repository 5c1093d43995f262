"""Whisper as a whole (encoder and decoder), for speech recognition (:mod:`headstart.asr`).

Everything that knows how a Hugging Face ``WhisperForConditionalGeneration`` is built lives
here, so that fine-tuning code never reaches into the model itself:

* :func:`load_whisper_generator` and :func:`load_whisper_folder` load a model and its processor;
* :func:`tunable_parameter_names` names what fine-tuning trains (the decoder blocks and norm,
  the top encoder blocks and the encoder norm; never the convolutional stem or an embedding);
* :func:`encode_bottom` and :func:`encode_top` split the encoder at a block, so that the
  output of its frozen bottom can be computed once and reused every epoch;
  :func:`transcription_loss` is the teacher-forced loss from the bottom's output.

The encoder alone, as a pooled-feature backbone for classification, is in
:mod:`headstart.backbones.audio`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from ..errors import BackboneError, WeightsNotFoundError

__all__ = [
    "encode_bottom",
    "encode_top",
    "encoder_depth",
    "load_whisper_folder",
    "load_whisper_generator",
    "quiet_transformers",
    "transcription_loss",
    "tunable_parameter_names",
]


def quiet_transformers() -> None:
    """Silence transformers' info messages and progress bars (loading prints many)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_whisper_generator(backbone: str) -> tuple[Any, Any, str, str]:
    """(model, processor, folder or hub id, provenance) of a pretrained Whisper, in eval mode.

    ``backbone`` is ``hf:<repo>`` (the offline package is used when installed),
    ``local-dir:<path>`` or a folder. Raises WeightsNotFoundError (with the offline package's
    install command when there is one) when the weights cannot be loaded, and BackboneError
    when the model is not a Whisper.
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from .audio import resolve_whisper

    quiet_transformers()
    where, provenance, _ = resolve_whisper(backbone, pretrained=True)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(str(where), dtype=torch.float32)
        processor = WhisperProcessor.from_pretrained(str(where))
    except OSError as exc:
        from . import offline

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


def load_whisper_folder(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(model in eval mode, processor) saved in a Hugging Face Whisper folder."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    quiet_transformers()
    model = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), WhisperProcessor.from_pretrained(str(path))


def encoder_depth(model: Any) -> int:
    """Number of transformer blocks in the encoder."""
    return len(model.model.encoder.layers)


def tunable_parameter_names(model: Any, encoder_blocks: int) -> list[str]:
    """Decoder blocks and norm, the top ``encoder_blocks`` encoder blocks (-1: all) and the
    encoder norm, as parameter names of ``model``.

    The convolutional stem and every embedding stay out, whatever ``encoder_blocks``: the
    token embedding is tied to the output layer, so leaving it frozen keeps every word the
    model can already write where it was.
    """
    n_enc = encoder_depth(model)
    first = n_enc - (n_enc if encoder_blocks < 0 else min(encoder_blocks, n_enc))
    always = ("model.encoder.layer_norm.", "model.decoder.layers.", "model.decoder.layer_norm.")
    names = []
    for name, _ in model.named_parameters():
        m = re.match(r"model\.encoder\.layers\.(\d+)\.", name)
        if (m and int(m.group(1)) >= first) or name.startswith(always):
            names.append(name)
    return names


def encode_bottom(model: Any, feats: torch.Tensor, upto: int) -> torch.Tensor:
    """Hidden states after the convolutional stem and encoder blocks ``[0, upto)``."""
    enc = model.model.encoder
    x = torch.nn.functional.gelu(enc.conv1(feats))
    x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[: x.shape[1]]
    for layer in enc.layers[:upto]:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
    return x


def encode_top(model: Any, hidden: torch.Tensor, start: int) -> torch.Tensor:
    """The encoder's output from :func:`encode_bottom`'s (``upto=start``): blocks
    ``[start, depth)`` and the final norm. ``encode_top(m, encode_bottom(m, x, k), k)`` equals
    the whole encoder's output for every ``k``."""
    enc = model.model.encoder
    x = hidden
    if start == 0:  # the encoder's dropout sits between the stem and the first block
        x = torch.nn.functional.dropout(x, p=float(enc.dropout), training=enc.training)
    for layer in enc.layers[start:]:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
    return enc.layer_norm(x)


def transcription_loss(
    model: Any, hidden: torch.Tensor, start: int, labels: torch.Tensor
) -> torch.Tensor:
    """Teacher-forced token cross-entropy from :func:`encode_bottom`'s output (``upto=start``);
    ``labels`` are token ids padded with -100."""
    from transformers.modeling_outputs import BaseModelOutput

    enc_out = encode_top(model, hidden, start)
    return model(encoder_outputs=BaseModelOutput(last_hidden_state=enc_out), labels=labels).loss
