"""CPU feature extraction through ONNX Runtime, always behind a parity check against PyTorch.

Size (over ~600 lines, on purpose): the exporter, the parity check and the runner are one
guarantee (ONNX Runtime only ever runs what matched PyTorch); most of the length is the
measured reasons for each export choice, kept beside the code they justify.

A feature module (an eval-mode ``nn.Module`` mapping a preprocessed batch to pooled
features ``(N, D)``) is exported once to a self-contained ``.onnx`` file, cached under
``cache_root()/onnx/<key>.onnx``, and run by :class:`OnnxFeatureRunner`. Every time a runner
is handed out, :func:`parity_check` compares its output with eager PyTorch on real inputs;
:func:`get_or_export` returns ``None`` when export or parity fails, so the caller keeps
using PyTorch.

Exporter choice (measured with torch 2.14, onnxscript 0.7, onnxruntime 1.32 on 2 CPU cores;
``benchmarks/bench_onnx_probe.py``): both ``torch.onnx.export(dynamo=True)`` (the default,
built on ``torch.export``) and the legacy TorchScript exporter (``dynamo=False``: still
present, deprecated with a warning) export torchvision mobilenet_v2, timm
tf_efficientnet_lite0 and test_vit, and a mean-pooled BERT (MiniLM-L6) with dynamic batch
and sequence length, all within 1e-5 of eager PyTorch. Dynamo is the default here because:

* it is more robust: where the tracer silently freezes Python values computed from shapes
  (``len(x)``, branches on sizes) to the example's, ``torch.export`` keeps them symbolic,
  raises, or visibly fixes the axis in the graph (rejected here). It also exported timm's
  ViT at a non-native size (bicubic position-embedding resampling), which the TorchScript
  exporter refuses (``aten::_upsample_bicubic2d_aa``);
* its graphs are smaller (onnxscript's optimiser folds shape arithmetic; ONNX Runtime then
  fuses ``SkipLayerNormalization`` in BERT) and run at the same speed: ONNX Runtime
  throughput of the two exporters' graphs is equal within noise for mobilenet_v2 and MiniLM;
* it is the maintained path; the TorchScript exporter warns that it is deprecated.

Its cost is export time, 3-6x longer: 4-11 s against 1-2 s for these models, once per cache
key. ``exporter="auto"`` tries dynamo, then TorchScript when dynamo raises (onnxscript
missing, an unsupported op) or fixes an axis declared dynamic (checked in the written
graph). Every graph, whichever exporter made it, goes through :func:`parity_check` at two
batch sizes before :func:`get_or_export` hands it out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from headstart._io import cache_root
from headstart.errors import CacheError, ConfigError, did_you_mean

__all__ = [
    "IMAGE_DYNAMIC_AXES",
    "TEXT_DYNAMIC_AXES",
    "Exporter",
    "OnnxFeatureRunner",
    "ParityResult",
    "export_onnx",
    "get_or_export",
    "onnx_cache_path",
    "parity_check",
    "physical_cores",
]

logger = logging.getLogger("headstart")

Exporter = Literal["auto", "dynamo", "torchscript"]
_EXPORTERS: tuple[str, ...] = ("auto", "dynamo", "torchscript")

OUTPUT_NAME = "features"

#: ``pixel_values`` float32 (N, 3, H, W) with a dynamic batch.
IMAGE_DYNAMIC_AXES: dict[str, dict[int, str]] = {"pixel_values": {0: "batch"}}
#: ``input_ids`` and ``attention_mask`` int64 (N, L) with dynamic batch and sequence length.
TEXT_DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
}

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")
_TWO_GB = 2**31
_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    input_names: list[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    *,
    exporter: Exporter = "auto",
    opset_version: int | None = None,
    output_name: str = OUTPUT_NAME,
) -> Path:
    """Export an eval-mode feature module to one self-contained ONNX file, atomically.

    Args:
        module: the feature module, in eval mode; ``module(*example_inputs)`` returns one
            tensor ``(N, ...)``.
        example_inputs: real example tensors, one per name in ``input_names``.
        path: where the ``.onnx`` file goes. It is written to a temporary folder beside it
            and moved into place with ``os.replace``: a reader sees no file or a complete
            one, and nothing is left behind when export raises.
        input_names: graph input names, in the order of ``example_inputs`` (images:
            ``["pixel_values"]``; text: ``["input_ids", "attention_mask"]``).
        dynamic_axes: ``{input_name: {axis: symbolic_name}}``, e.g.
            :data:`IMAGE_DYNAMIC_AXES` or :data:`TEXT_DYNAMIC_AXES`. The output
            ``"features"`` gets a dynamic batch axis unless given here.
        exporter: ``"dynamo"`` (``torch.export`` based), ``"torchscript"`` (legacy tracer) or
            ``"auto"``: dynamo, then TorchScript if dynamo raises (see the module docstring).
        opset_version: ONNX opset, or ``None`` for the exporter's default.
        output_name: the graph output's name (``"features"``; :mod:`headstart.export`
            names its output ``"probabilities"``).

    Returns:
        ``path``. Weights are stored inside the file unless the model exceeds 2 GB, in which
        case they go to one ``<name>.data`` file beside it (ONNX protobufs cannot exceed 2 GB).

    Raises:
        ConfigError: the module is in training mode, or names and inputs do not match.
        Exception: whatever the exporter raised (the last one, for ``"auto"``).
    """
    path = Path(path)
    _check_export_args(module, example_inputs, input_names, dynamic_axes, exporter, output_name)
    axes = {name: dict(ax) for name, ax in dynamic_axes.items()}
    axes.setdefault(output_name, {0: "batch"})
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    path.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for i, which in enumerate(order):
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            tmp = tmpdir / path.name
            t0 = time.perf_counter()
            if which == "dynamo":
                _export_dynamo(
                    module, example_inputs, tmp, input_names, axes, opset_version, output_name
                )
            else:
                _export_torchscript(
                    module, example_inputs, tmp, input_names, axes, opset_version, output_name
                )
            _consolidate_external_data(tmp)
            _check_dynamic_axes(tmp, axes)
            _move_into_place(tmpdir, path)
            logger.info(
                "exported %s to ONNX with the %s exporter in %.2f s",
                path.name,
                which,
                time.perf_counter() - t0,
            )
            return path
        except Exception as exc:
            errors.append(f"{which}: {type(exc).__name__}: {_first_line(exc)}")
            if i == len(order) - 1:
                if len(order) > 1:
                    exc.add_note("ONNX export failed with every exporter: " + "; ".join(errors))
                raise
            logger.info(
                "ONNX export with %s failed (%s); trying %s", which, errors[-1], order[i + 1]
            )
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_export_args(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    exporter: str,
    output_name: str = OUTPUT_NAME,
) -> None:
    if exporter not in _EXPORTERS:
        raise ConfigError(
            f"exporter must be one of {', '.join(_EXPORTERS)}. Got {exporter!r} instead."
            + did_you_mean(str(exporter), _EXPORTERS)
        )
    training = [name or type(module).__name__ for name, m in module.named_modules() if m.training]
    if training:
        raise ConfigError(
            f"export_onnx needs an eval-mode module, got {type(module).__name__} with "
            f"{len(training)} submodule(s) in training mode ({', '.join(training[:3])}...): "
            "dropout and batch statistics would be baked into the graph. Call module.eval() first."
        )
    if not isinstance(example_inputs, tuple) or not all(
        isinstance(t, torch.Tensor) for t in example_inputs
    ):
        raise ConfigError(
            "example_inputs must be a tuple of torch.Tensor. "
            f"Got {type(example_inputs).__name__} instead; wrap a single tensor as (x,)."
        )
    if len(input_names) != len(example_inputs):
        raise ConfigError(
            f"input_names has {len(input_names)} names ({list(input_names)}) but "
            f"example_inputs has {len(example_inputs)} tensors; give one name per tensor."
        )
    unknown = [n for n in dynamic_axes if n not in input_names and n != output_name]
    if unknown:
        raise ConfigError(
            f"dynamic_axes names {unknown} are neither inputs {list(input_names)} "
            f"nor the output {output_name!r}."
            + did_you_mean(unknown[0], [*input_names, output_name])
        )


@contextlib.contextmanager
def _warnings_to_log(exporter: str) -> Iterator[None]:
    """Turn the exporters' warnings into DEBUG records on the ``"headstart"`` logger.

    They are advice to the exporter's user (deprecations, dynamic_axes vs dynamic_shapes,
    tracer caveats); whether the graph is right is decided by parity, not by warnings.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("torch.onnx (%s) %s: %s", exporter, w.category.__name__, w.message)


def _export_dynamo(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    tmp: Path,
    input_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset_version: int | None,
    output_name: str = OUTPUT_NAME,
) -> None:
    # String axis names become torch.export.Dim.DYNAMIC (renamed in the ONNX graph), which
    # may still be specialised without an error: _check_dynamic_axes verifies the result.
    dynamic_shapes = tuple(dynamic_axes.get(name) for name in input_names)
    with _warnings_to_log("dynamo"):
        program = torch.onnx.export(
            module,
            example_inputs,
            None,
            input_names=list(input_names),
            output_names=[output_name],
            dynamic_shapes=dynamic_shapes,
            opset_version=opset_version,
            dynamo=True,
            verbose=False,
            optimize=True,
        )
    if program is None:  # pragma: no cover - torch contract
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    # external_data=None: weights inside the file unless the model exceeds 2 GB.
    program.save(tmp, external_data=None)


def _export_torchscript(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    tmp: Path,
    input_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset_version: int | None,
    output_name: str = OUTPUT_NAME,
) -> None:
    # Deprecated in torch >= 2.9 with a DeprecationWarning; used here on purpose, as fallback.
    with _warnings_to_log("torchscript"):
        torch.onnx.export(
            module,
            example_inputs,
            str(tmp),
            input_names=list(input_names),
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            opset_version=opset_version,
            dynamo=False,
            do_constant_folding=True,
        )


def _consolidate_external_data(tmp: Path) -> None:
    """If the exporter wrote weights beside the model (> 2 GB), gather them in one file."""
    extra = [p for p in tmp.parent.iterdir() if p != tmp]
    if not extra:
        return
    import onnx

    data_name = f"{tmp.name}.data"
    if len(extra) == 1 and extra[0].name == data_name:
        return
    model = onnx.load(str(tmp), load_external_data=True)
    for p in extra:
        p.unlink()
    onnx.save_model(
        model,
        str(tmp),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )


def _check_dynamic_axes(model_path: Path, dynamic_axes: Mapping[str, Mapping[int, str]]) -> None:
    """Raise if an axis declared dynamic came out as a fixed size in the ONNX graph.

    Both exporters can specialise a dimension silently (a traced ``x.shape[0]`` used as a
    Python int, ``Dim.DYNAMIC`` resolved to a constant); such a graph only runs at the
    example's shape.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    fixed = []
    for value in [*graph.input, *graph.output]:
        for axis in dynamic_axes.get(value.name, {}):
            dims = value.type.tensor_type.shape.dim
            if axis < len(dims) and not dims[axis].dim_param:
                fixed.append(f"{value.name}[{axis}]={dims[axis].dim_value}")
    if fixed:
        raise RuntimeError(
            f"axes declared dynamic were exported with a fixed size: {', '.join(fixed)}; "
            "the module's forward probably turns a shape into a Python number"
        )


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _move_into_place(tmpdir: Path, path: Path) -> None:
    """Move the model (and its external data, first) from `tmpdir` to `path`."""
    model = tmpdir / path.name
    if not model.is_file():
        raise CacheError(f"the ONNX exporter wrote no file at {model}; nothing to move to {path}")
    data = tmpdir / f"{path.name}.data"
    if data.exists():
        size = data.stat().st_size
        logger.info(
            "%s has %.1f GB of weights: stored beside it in %s", path.name, size / 1e9, data.name
        )
        _fsync(data)
        os.replace(data, path.parent / data.name)
    elif model.stat().st_size >= _TWO_GB:  # pragma: no cover - protobuf cannot write this
        raise CacheError(f"{model} is over 2 GB without external data; ONNX cannot load it")
    _fsync(model)
    os.replace(model, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:300]


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads not counted), at least 1."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        allowed = list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (
                    (topo / "physical_package_id").read_text().strip(),
                    (topo / "core_id").read_text().strip(),
                )
            )
        except OSError:
            return max(1, len(allowed))
    return max(1, len(cores) or len(allowed))


class OnnxFeatureRunner:
    """Run an exported feature model with ONNX Runtime on CPU.

    The session uses ``CPUExecutionProvider``, all graph optimisations (``ORT_ENABLE_ALL``),
    sequential execution and ``num_threads`` intra-op threads (default: physical cores, as
    hyper-threads slow down GEMM-bound inference).

    Example::

        runner = OnnxFeatureRunner("mobilenet_v2.onnx")
        feats = runner(pixel_values=batch)  # (N, 1280) float32
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}; export one with export_onnx()")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ConfigError(
                f"num_threads must be a positive int or None (physical cores). Got {num_threads!r} instead."
            )
        self.num_threads = num_threads or physical_cores()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names: list[str] = list(self._inputs)
        self.output_name: str = self.session.get_outputs()[0].name

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        """Features for one batch; inputs are cast to the graph's dtypes (e.g. int32 → int64)."""
        missing = [n for n in self.input_names if n not in inputs]
        unknown = [n for n in inputs if n not in self._inputs]
        if missing or unknown:
            hint = did_you_mean(unknown[0], self.input_names) if unknown else ""
            raise ConfigError(
                f"{self.path.name} takes inputs {self.input_names}; got {sorted(inputs)} "
                f"(missing {missing}, unknown {unknown}).{hint}"
            )
        feeds = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            dtype = _ORT_TO_NUMPY.get(self._inputs[name].type)
            feeds[name] = np.ascontiguousarray(value, dtype=dtype)
        return self.session.run([self.output_name], feeds)[0]

    def __repr__(self) -> str:
        return (
            f"OnnxFeatureRunner(path={str(self.path)!r}, num_threads={self.num_threads}, "
            f"inputs={self.input_names})"
        )


# --------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityResult:
    """How closely ONNX Runtime matches eager PyTorch on the same inputs.

    ``max_rel_diff`` is ``max |ort - torch| / max(|torch|, atol)`` over elements (bounded for
    near-zero entries); ``cosine_min`` the smallest per-row cosine similarity; ``ok`` is
    ``numpy.allclose(ort, torch, rtol, atol)`` with equal shapes and finite values.
    """

    max_abs_diff: float
    max_rel_diff: float
    cosine_min: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_check(
    module: torch.nn.Module,
    runner: OnnxFeatureRunner,
    example_inputs: tuple[torch.Tensor, ...],
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> ParityResult:
    """Compare ``module(*example_inputs)`` (eager, inference mode) with ``runner`` on the same data.

    Inputs are matched to the runner's graph inputs by position. Use real inputs (a batch of
    images or sentences with padding), not zeros: a constant input hides most errors.
    """
    if len(example_inputs) != len(runner.input_names):
        raise ConfigError(
            f"{runner.path.name} takes {len(runner.input_names)} inputs {runner.input_names}; "
            f"got {len(example_inputs)} example tensors."
        )
    with torch.inference_mode():
        ref_t = module(*example_inputs)
    if not isinstance(ref_t, torch.Tensor):
        raise ConfigError(
            f"parity_check needs a module returning one tensor; {type(module).__name__} "
            f"returned {type(ref_t).__name__}."
        )
    ref = ref_t.detach().float().cpu().numpy()
    out = runner(
        **{
            n: t.detach().cpu().numpy()
            for n, t in zip(runner.input_names, example_inputs, strict=True)
        }
    )
    out = out.astype(np.float32, copy=False)
    if out.shape != ref.shape:
        logger.info("ONNX output shape %s differs from PyTorch %s", out.shape, ref.shape)
        return ParityResult(float("inf"), float("inf"), -1.0, False)
    finite = bool(np.isfinite(out).all() and np.isfinite(ref).all())
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref), atol)).max()) if diff.size else 0.0
    rows_out = out.reshape(out.shape[0] if out.ndim else 1, -1).astype(np.float64)
    rows_ref = ref.reshape(ref.shape[0] if ref.ndim else 1, -1).astype(np.float64)
    norms = np.linalg.norm(rows_out, axis=1) * np.linalg.norm(rows_ref, axis=1)
    dots = (rows_out * rows_ref).sum(axis=1)
    cos = dots / np.where(norms > 0, norms, 1.0)
    # Two all-zero rows agree (cosine 1); one zero row against a non-zero one does not (0).
    zero_out = ~rows_out.any(axis=1)
    zero_ref = ~rows_ref.any(axis=1)
    cos = np.where(zero_out & zero_ref, 1.0, cos)
    cosine_min = float(cos.min()) if cos.size else 1.0
    ok = finite and bool(np.allclose(out, ref, rtol=rtol, atol=atol))
    if not finite:
        max_abs = max_rel = float("nan")
    return ParityResult(max_abs, max_rel, cosine_min, ok)


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------


def onnx_cache_path(key: str) -> Path:
    """``cache_root()/onnx/<key>.onnx``.

    ``key`` must identify everything that changes the graph or its outputs (backbone name,
    weights hash, input size, library versions...), e.g. ``stable_hash({...})[:24]``.
    """
    if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
        raise ConfigError(
            "ONNX cache key must be 1-200 characters of letters, digits and ._+=- starting "
            f"with a letter or digit (it becomes a file name). Got {key!r} instead; "
            "hash a longer description with headstart._io.stable_hash."
        )
    return cache_root() / "onnx" / f"{key}.onnx"


def get_or_export(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    key: str,
    input_names: list[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    *,
    num_threads: int | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    exporter: Exporter = "auto",
) -> OnnxFeatureRunner | None:
    """A parity-checked ONNX Runtime runner for `module`, or ``None`` to keep using PyTorch.

    Loads ``onnx_cache_path(key)`` if present, else exports it. Parity with eager PyTorch is
    checked every time, on ``example_inputs`` and on their first row alone (a second batch
    size, which catches a batch dimension frozen into the graph). A cached file that fails
    is exported again once; a fresh export that fails is deleted. Each failure is logged on
    the ``"headstart"`` logger with its reason.

    ``input_names`` and ``dynamic_axes`` default to the image layout (one input,
    ``pixel_values``) for one example tensor and the text layout (``input_ids``,
    ``attention_mask``) for two.
    """
    path = onnx_cache_path(key)
    if input_names is None:
        if len(example_inputs) == 1:
            input_names = ["pixel_values"]
        elif len(example_inputs) == 2:
            input_names = ["input_ids", "attention_mask"]
        else:
            raise ConfigError(
                f"input_names is needed for {len(example_inputs)} example inputs "
                "(defaults exist for 1: images, and 2: text)."
            )
    if dynamic_axes is None:
        known = {**IMAGE_DYNAMIC_AXES, **TEXT_DYNAMIC_AXES}
        dynamic_axes = {n: known.get(n, {0: "batch"}) for n in input_names}

    checks = [example_inputs]
    if example_inputs and example_inputs[0].ndim and example_inputs[0].shape[0] > 1:
        checks.append(tuple(t[:1] for t in example_inputs))

    for attempt in ("cached", "fresh"):
        if attempt == "cached" and not path.is_file():
            continue
        if attempt == "fresh":
            try:
                export_onnx(
                    module, example_inputs, path, input_names, dynamic_axes, exporter=exporter
                )
            except Exception as exc:
                logger.warning(
                    "ONNX export of %s failed, using PyTorch instead: %s: %s",
                    key,
                    type(exc).__name__,
                    _first_line(exc),
                )
                return None
        try:
            runner = OnnxFeatureRunner(path, num_threads=num_threads)
            results = [parity_check(module, runner, ex, rtol=rtol, atol=atol) for ex in checks]
        except Exception as exc:
            logger.warning(
                "ONNX model %s (%s) could not be run: %s: %s",
                path,
                attempt,
                type(exc).__name__,
                _first_line(exc),
            )
            results = None
        if results is not None and all(r.ok for r in results):
            return runner
        if results is not None:
            worst = max(results, key=lambda r: r.max_abs_diff)
            logger.warning(
                "ONNX model %s (%s) fails parity with PyTorch (max abs diff %.3g, max rel diff "
                "%.3g, min cosine %.6f; rtol=%g, atol=%g)%s",
                path.name,
                attempt,
                worst.max_abs_diff,
                worst.max_rel_diff,
                worst.cosine_min,
                rtol,
                atol,
                ": exporting it again" if attempt == "cached" else ": using PyTorch instead",
            )
        _remove_model(path)
    return None


def _remove_model(path: Path) -> None:
    for p in (path, path.parent / f"{path.name}.data"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
