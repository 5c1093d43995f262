"""A Triton Inference Server model repository for a model exported with ``headstart export``.

    headstart export runs/digits/model --format onnx --out deploy/digits.onnx
    python -m headstart.serving.triton deploy/digits.onnx --repo triton-models
    docker run --rm -p8000:8000 -v $PWD/triton-models:/models \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models

For the day one ``headstart serve`` process is not enough: Triton (NVIDIA's open-source
inference server) runs the same ONNX graph with its ONNX Runtime backend, its own dynamic
batching, several instances per GPU or CPU, and gRPC/HTTP endpoints (the KServe v2
protocol). This module only writes the folder layout Triton reads::

    REPO/NAME/config.pbtxt          inputs and outputs read from the ONNX graph
    REPO/NAME/1/model.onnx          the exported graph, copied
    REPO/NAME/labels.txt            one label per line, in output order
    REPO/NAME/preprocess.json       headstart's preprocessing recipe (clients apply it)

Triton receives normalised tensors, not image files: the client resizes, crops and
normalises as ``preprocess.json`` says (README, "Export to ONNX", shows it in numpy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

#: ONNX TensorProto element types → Triton data types (the ones an export can hold).
_TRITON_TYPES = {
    1: "TYPE_FP32",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    2: "TYPE_UINT8",
    9: "TYPE_BOOL",
}


def _tensors(values: Any, where: str) -> list[dict[str, Any]]:
    """Name, Triton type and per-example dims (batch axis dropped; -1 where dynamic)."""
    out = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in _TRITON_TYPES:
            raise DataError(f"{where} {v.name!r} has ONNX element type {t.elem_type}, not mapped")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] > 0:
            raise DataError(
                f"{where} {v.name!r} has shape {dims}: its first axis must be a dynamic batch "
                "axis (graphs from `headstart export` have one); re-export the model"
            )
        out.append({"name": v.name, "type": _TRITON_TYPES[t.elem_type], "dims": dims[1:]})
    return out


def _block(kind: str, tensors: list[dict[str, Any]], extra: str = "") -> str:
    rows = [
        f'  {{\n    name: "{t["name"]}"\n    data_type: {t["type"]}\n'
        f"    dims: [ {', '.join(str(d) for d in t['dims'])} ]\n{extra}  }}"
        for t in tensors
    ]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def triton_config(
    name: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    *,
    max_batch_size: int,
    max_queue_delay_us: int,
    instances: int,
    kind: str,
    labels: bool,
) -> str:
    """The text of ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""
    label_line = '    label_filename: "labels.txt"\n' if labels else ""
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch_size}\n'
        + _block("input", inputs)
        + _block("output", outputs, label_line)
        + f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        + f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]\n"
    )


def write_triton_repository(
    onnx_file: str | Path,
    repo: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 5000,
    instances: int = 1,
    kind: str = "KIND_CPU",
) -> Path:
    """Write ``repo/NAME/`` for ``onnx_file`` (and its ``.preprocess.json`` when beside it);
    returns the model folder. An existing ``repo/NAME`` is replaced whole."""
    import onnx

    from ..export.onnx_export import sidecars

    onnx_file = Path(onnx_file)
    if not onnx_file.is_file():
        raise DataError(
            f"{onnx_file} does not exist: make it with `headstart export MODEL --format onnx "
            "--out FILE.onnx`"
        )
    if kind not in ("KIND_CPU", "KIND_GPU") or max_batch_size < 1 or instances < 1:
        raise ConfigError(
            f"kind must be KIND_CPU or KIND_GPU and max_batch_size, instances at least 1; got "
            f"{kind!r}, {max_batch_size}, {instances}"
        )
    stem = sidecars(onnx_file)["recipe"].name.removesuffix(".preprocess.json")
    name = name or stem
    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    inputs = _tensors([v for v in graph.input if v.name not in initialisers], "input")
    outputs = _tensors(graph.output, "output")
    recipe_file = sidecars(onnx_file)["recipe"]
    recipe = json.loads(recipe_file.read_text()) if recipe_file.exists() else None
    labels = [str(c) for c in recipe["labels"]] if recipe else []
    if labels and (len(outputs) != 1 or outputs[0]["dims"] != [len(labels)]):
        raise DataError(
            f"{recipe_file} lists {len(labels)} labels but the graph's outputs are {outputs}"
        )
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=repo))
    try:
        (tmp / "1").mkdir()
        shutil.copyfile(onnx_file, tmp / "1" / "model.onnx")
        config = triton_config(
            name,
            inputs,
            outputs,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            instances=instances,
            kind=kind,
            labels=bool(labels),
        )
        (tmp / "config.pbtxt").write_text(config)
        if recipe is not None:
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
            shutil.copyfile(recipe_file, tmp / "preprocess.json")
        tokenizer = sidecars(onnx_file)["tokenizer"]
        if tokenizer.is_dir():
            shutil.copytree(tokenizer, tmp / "tokenizer")
        _swap_in(tmp, repo / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return repo / name


def _swap_in(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` at ``dest``, so a reader never sees half a model."""
    old = dest.with_name(f".{dest.name}.old-{tmp.name[-8:]}")
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m headstart.serving.triton",
        description="Write a Triton Inference Server model repository for an ONNX file made "
        "by `headstart export`.",
    )
    ap.add_argument("onnx_file")
    ap.add_argument("--repo", required=True, help="the model repository folder")
    ap.add_argument("--name", help="model name in the repository (default: the file's stem)")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-queue-delay-us", type=int, default=5000)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--gpu", action="store_true", help="instances on GPU (KIND_GPU)")
    args = ap.parse_args(argv)
    folder = write_triton_repository(
        args.onnx_file,
        args.repo,
        name=args.name,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        kind="KIND_GPU" if args.gpu else "KIND_CPU",
    )
    print(f"wrote {folder}: tritonserver --model-repository={folder.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
