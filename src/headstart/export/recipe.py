"""The preprocessing recipe written beside an exported graph, and the text tokenizer files.

The graph starts at normalised input, so whoever runs it must prepare inputs exactly as the
backbone's weights expect: this JSON says how, in numbers and plain steps, so it can be
followed without headstart (README, "Export to ONNX").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backbones.base import Backbone, ImagePreprocess, TextPreprocess
from ..errors import ConfigError

__all__ = ["RECIPE_FORMAT", "build_recipe", "write_tokenizer"]

RECIPE_FORMAT = 1


def build_recipe(
    meta: dict[str, Any],
    backbone: Backbone,
    *,
    model_file: str,
    input_names: list[str],
    int8_file: str | None,
    tokenizer_dir: str | None,
) -> dict[str, Any]:
    """The JSON recipe: inputs and output of the graph, labels, and the preprocessing steps."""
    from .. import __version__

    pre = backbone.preprocess
    recipe: dict[str, Any] = {
        "format": RECIPE_FORMAT,
        "model": model_file,
        "model_int8": int8_file,
        "modality": meta["modality"],
        "labels": [str(c) for c in meta["classes"]],
        "output": {
            "name": "probabilities",
            "dtype": "float32",
            "shape": ["batch", len(meta["classes"])],
            "meaning": "class probabilities (softmax), columns in the order of 'labels'",
        },
        "backbone": {
            "name": backbone.name,
            "weights_sha256": backbone.weights.current_sha256,
            "strategy": meta.get("strategy", "extract"),
        },
        "headstart_version": __version__,
    }
    if isinstance(pre, ImagePreprocess):
        s = pre.size
        recipe["inputs"] = [
            {"name": input_names[0], "dtype": "float32", "shape": ["batch", 3, s, s]}
        ]
        recipe["image"] = {
            "resize": pre.resize,
            "size": pre.size,
            "interpolation": pre.interpolation,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "steps": [
                "decode and convert to RGB (grey images: the grey channel three times)",
                f"resize so the shorter side is {pre.resize} px ({pre.interpolation}, antialiased)",
                f"centre-crop {s} x {s}",
                "scale to [0, 1] (divide by 255)"
                + (", clamp to [0, 1]" if pre.interpolation == "bicubic" else ""),
                "per channel: subtract mean, divide by std",
                "layout NCHW, float32",
            ],
        }
    elif isinstance(pre, TextPreprocess):
        recipe["inputs"] = [
            {"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in input_names
        ]
        recipe["text"] = {
            "tokenizer": tokenizer_dir,
            "max_length": pre.max_length,
            "truncation": pre.truncation,
            "padding": "to the longest text of the batch; attention_mask 1 on tokens, 0 on padding",
            "steps": [
                f"tokenize with {tokenizer_dir}/tokenizer.json (special tokens added; "
                f"truncation to {pre.max_length} tokens and padding are set in the file)",
                "input_ids and attention_mask as int64 (batch, sequence)",
            ]
            + (
                [
                    "texts longer than max_length: headstart keeps the first quarter and the "
                    "last three quarters of the window ('head+tail'); tokenizer.json keeps the "
                    "head only"
                ]
                if pre.truncation == "head+tail"
                else []
            ),
        }
    else:  # pragma: no cover - audio is refused before export
        raise ConfigError(f"no preprocessing recipe for {type(pre).__name__}")
    return recipe


def write_tokenizer(pre: TextPreprocess, dest: Path) -> dict[str, Any]:
    """Save the backbone's tokenizer to ``dest`` with truncation and padding set in
    ``tokenizer.json``, so ``tokenizers.Tokenizer.from_file`` alone prepares a batch the way
    headstart does ('head' truncation). Returns the pad token and its id."""
    from tokenizers import Tokenizer

    from ..features.preprocess import get_tokenizer

    tok = get_tokenizer(pre)
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(dest))
    tok_file = dest / "tokenizer.json"
    if not tok_file.is_file():
        raise ConfigError(
            f"the tokenizer of {pre.tokenizer} has no fast (tokenizer.json) form, so the "
            "exported model could not be used with the tokenizers library alone"
        )
    fast = Tokenizer.from_file(str(tok_file))
    pad_token = str(tok.pad_token or "[PAD]")
    pad_id = int(tok.pad_token_id or 0)
    fast.enable_truncation(max_length=pre.max_length)
    fast.enable_padding(pad_id=pad_id, pad_token=pad_token)
    fast.save(str(tok_file))
    return {"pad_token": pad_token, "pad_token_id": pad_id}
