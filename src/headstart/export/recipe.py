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
            "steps": [
                f"token ids of the text without special tokens ({tokenizer_dir}/tokenizer.json)",
                "body = max_length - len(prefix_ids) - len(suffix_ids); if the text is longer, "
                + (
                    "keep its first body // 4 tokens and its last body - body // 4 ('head+tail')"
                    if pre.truncation == "head+tail"
                    else "keep its first body tokens ('head')"
                ),
                "prefix_ids + ids + suffix_ids",
                "pad with pad_token_id to the longest of the batch; attention_mask 1 on tokens",
                "input_ids and attention_mask as int64 (batch, sequence)",
            ],
        }
    else:  # pragma: no cover - audio is refused before export
        raise ConfigError(f"no preprocessing recipe for {type(pre).__name__}")
    return recipe


def write_tokenizer(pre: TextPreprocess, dest: Path) -> dict[str, Any]:
    """Save the backbone's tokenizer to ``dest`` (``tokenizer.json`` for the ``tokenizers``
    library, truncation and padding switched off) and return what a plain-Python loader needs
    to build headstart's batches: the special tokens around a text, the pad id.

    Truncation is left to the loader because headstart's default for text models,
    "head+tail", is not one ``tokenizers`` can express (README, "Export to ONNX").
    """
    from tokenizers import Tokenizer

    from ..features.preprocess import get_tokenizer, tokenize

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
    fast.no_truncation()
    fast.no_padding()
    fast.save(str(tok_file))
    # The special tokens headstart puts around a text: those around a one-word body.
    full = tokenize(["x"], pre)[0]
    bare = list(tok("x", add_special_tokens=False)["input_ids"])
    cut = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
    return {
        "prefix_ids": [int(i) for i in full[:cut]],
        "suffix_ids": [int(i) for i in full[cut + len(bare) :]],
        "pad_token_id": int(tok.pad_token_id or 0),
    }
