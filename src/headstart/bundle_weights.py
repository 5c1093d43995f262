"""Self-contained bundles: the backbone's weights and files travel inside the bundle.

A bundle normally names its backbone (``torchvision:mobilenet_v2``) and finds the weights
where they are installed (a weights package, a cache, a download). A self-contained bundle
also carries, in its ``backbone/`` sub-folder,

* ``weights.safetensors`` — every parameter and buffer of the backbone as trained (the
  pristine weights under a LoRA adapter, which stays in ``adapter/``);
* for Hugging Face models, the files that rebuild the architecture and its inputs:
  ``config.json``, the tokenizer files, ``preprocessor_config.json``,
  ``sentence_bert_config.json`` (JSON values naming locations outside are dropped);

so it predicts on a machine that has headstart (torch, torchvision, timm, transformers: the
architectures are code) but no weights package and no network. Every bundled file's sha256 is
recorded in ``headstart.json`` and checked before loading: a truncated copy is refused with a
message, not half-loaded.

A backbone from a local folder (``local-dir:``) is always bundled: its path means nothing on
another machine, and a bundle may not point at folders outside itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._io import sha256_file
from .backbones.base import Backbone, ImagePreprocess, TextPreprocess
from .bundle_schema import (
    BUNDLED_DIR,
    FIX,
    MAX_SIZE,
    bundle_file,
    check_json_paths,
    inside_bundle,
    is_outside_path,
    path_like_values,
    resolve_reference,
)
from .errors import BundleError, ConfigError, HeadstartError

__all__ = ["HF_FOLDER", "bundle_backbone", "is_registry_name", "load_bundled", "needs_bundling"]

#: ``bundled.architecture`` of a Hugging Face model rebuilt from the bundled ``config.json``.
HF_FOLDER = "hf-folder"
WEIGHTS_FILE = "weights.safetensors"
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ckpt"}
_KEEP_SUFFIXES = {".json", ".txt", ".model"}  # configs, vocabularies, sentencepiece models
_MAX_FILE = 64 << 20
_LORA = ".lora_"  # PEFT's adapter parameters: ...query.lora_A.default.weight


def is_registry_name(name: str) -> bool:
    """A name another machine resolves the same way (not a path)."""
    try:
        return resolve_reference(name, Path("."), bundled=False)[0] == "registry"
    except BundleError:
        return False


def needs_bundling(backbone: Backbone) -> bool:
    """A backbone read from a local folder: its path would not resolve elsewhere."""
    return not is_registry_name(backbone.name) or backbone.weights.source.startswith(
        "local directory"
    )


def _pristine_state(backbone: Backbone) -> dict[str, Any]:
    """The backbone's tensors, under a LoRA adapter the base weights with their plain names
    (the adapter is saved on its own and applied again on load)."""
    state = backbone.state_dict()
    if any(_LORA in k for k in state):  # PEFT wraps the encoder: base_model.model.*.base_layer
        state = {
            k.replace("encoder.base_model.model.", "encoder.", 1).replace(".base_layer.", "."): v
            for k, v in state.items()
            if _LORA not in k
        }
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _hf_source_dir(backbone: Backbone) -> Path:
    where = backbone.weights.file
    if where and Path(where).is_dir():
        return Path(where)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(backbone.name.removeprefix("hf:"), local_files_only=True))
    except Exception as exc:  # the hub raises many types for "not cached"
        raise ConfigError(
            f"Cannot make a self-contained bundle of {backbone.name}: its files ({where!r}) "
            f"are not in a local folder or the Hugging Face cache ({type(exc).__name__})."
        ) from exc


def _copy_config_files(src: Path, dest: Path) -> None:
    for f in sorted(src.iterdir()):
        if (
            not f.is_file()
            or f.suffix not in _KEEP_SUFFIXES
            or f.suffix in _WEIGHT_SUFFIXES
            or f.name.endswith(".index.json")
            or f.stat().st_size > _MAX_FILE
        ):
            continue
        if f.suffix != ".json":
            shutil.copyfile(f, dest / f.name)
            continue
        try:
            doc = json.loads(f.read_text())
        except ValueError:
            continue  # not loadable here either
        _drop_outside_paths(doc)
        (dest / f.name).write_text(json.dumps(doc, indent=2) + "\n")


def _drop_outside_paths(doc: Any) -> None:
    """Remove values such as ``"_name_or_path": "/home/me/models/x"``: provenance on the
    training machine, and a location the reader would refuse."""
    if isinstance(doc, dict):
        for k in [k for k, v in doc.items() if isinstance(v, str)]:
            if any(is_outside_path(v) for _, v in path_like_values({k: doc[k]})):
                del doc[k]
        for v in doc.values():
            _drop_outside_paths(v)
    elif isinstance(doc, list):
        for v in doc:
            _drop_outside_paths(v)


def bundle_backbone(backbone: Backbone, bundle: Path) -> dict[str, Any]:
    """Copy ``backbone`` into ``bundle/backbone/``; returns ``headstart.json``'s
    ``backbone.bundled`` entry (architecture, weights file, every file's sha256)."""
    from safetensors.torch import save_file

    dest = bundle / BUNDLED_DIR
    dest.mkdir()
    if is_registry_name(backbone.name) and backbone.name.split(":", 1)[0] in (
        "torchvision",
        "timm",
    ):
        architecture = backbone.name  # the architecture is code in torchvision / timm
    else:
        architecture = HF_FOLDER
        _copy_config_files(_hf_source_dir(backbone), dest)
        if not (dest / "config.json").is_file():
            raise ConfigError(
                f"Cannot make a self-contained bundle of {backbone.name}: its folder has no "
                "config.json."
            )
    save_file(_pristine_state(backbone), str(dest / WEIGHTS_FILE))
    files = {
        p.relative_to(dest).as_posix(): sha256_file(p)
        for p in sorted(dest.rglob("*"))
        if p.is_file()
    }
    return {"architecture": architecture, "weights": WEIGHTS_FILE, "files": files}


def _check_bundled_files(root: Path, bundled: dict[str, Any]) -> Path:
    folder = root / BUNDLED_DIR
    listed = bundled["files"]
    if not folder.is_dir():
        raise BundleError(
            f"{folder} is missing: this self-contained bundle lost its backbone. {FIX}"
        )
    inside_bundle(root, folder)
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel not in listed:
            raise BundleError(
                f"{p} is not one of the files headstart.json lists for the bundled backbone. {FIX}"
            )
    for rel, sha in listed.items():
        f = bundle_file(root, f"{BUNDLED_DIR}/{rel}", what="bundled backbone file")
        if sha256_file(f) != sha:
            raise BundleError(
                f"{f} does not match the sha256 recorded in headstart.json: it is truncated, "
                f"damaged or was replaced. {FIX}"
            )
    check_json_paths(sorted(folder.rglob("*.json")))
    return folder


def _image_preprocess(pre: dict[str, Any], root: Path) -> ImagePreprocess:
    try:
        p = ImagePreprocess(
            size=int(pre["size"]),
            resize=int(pre["resize"]),
            mean=tuple(float(v) for v in pre["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in pre["std"]),  # type: ignore[arg-type]
            interpolation=str(pre.get("interpolation", "bilinear")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{root / 'headstart.json'}: backbone.preprocess is invalid ({exc}). {FIX}"
        ) from exc
    if (
        min(p.size, p.resize) <= 0
        or max(p.size, p.resize) > MAX_SIZE["image_size"]
        or len(p.mean) != 3
        or len(p.std) != 3
        or min(p.std) <= 0
        or p.interpolation not in ("bilinear", "bicubic", "nearest")
    ):
        raise BundleError(
            f"{root / 'headstart.json'}: backbone.preprocess is invalid: {pre}. {FIX}"
        )
    return p


def _build(root: Path, folder: Path, arch: Any, b: dict[str, Any]) -> Backbone:
    """The architecture, randomly initialised (the bundled weights are loaded next); a text
    backbone's tokenizer is loaded now, so a damaged one is refused here, not mid-predict."""
    from .backbones.registry import load_backbone

    pre = b["preprocess"]
    if arch == HF_FOLDER:
        max_length = b.get("max_length") or pre.get("max_length")
        backbone = load_backbone(
            f"local-dir:{folder}",
            pretrained=False,
            image_size=b.get("image_size"),
            max_length=max_length if isinstance(max_length, int) else None,
            pooling=b["pooling"],
        )
        if isinstance(backbone.preprocess, TextPreprocess):
            from .features.preprocess import get_tokenizer

            get_tokenizer(backbone.preprocess)
        return backbone
    if isinstance(arch, str) and is_registry_name(arch) and arch.split(":")[0] != "hf":
        return load_backbone(arch, pretrained=False, image_size=b.get("image_size"))
    raise BundleError(
        f"{root / 'headstart.json'}: backbone.bundled.architecture is {arch!r}; expected "
        f"{HF_FOLDER!r} or a torchvision:/timm: model name. {FIX}"
    )


def load_bundled(root: Path, b: dict[str, Any]) -> Backbone:
    """The backbone of a self-contained bundle, built from its own files only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .backbones.base import state_dict_sha256

    bundled = b["bundled"]
    arch = bundled.get("architecture")
    folder = _check_bundled_files(root, bundled)
    pre = b["preprocess"]
    try:
        backbone = _build(root, folder, arch, b)
    except HeadstartError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # transformers refusing a bundled config.json / tokenizer (unknown model type, ...)
        raise BundleError(
            f"{folder}: the bundled backbone's files cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}). {FIX}"
        ) from exc
    weights = folder / bundled["weights"]
    try:
        state = load_file(str(weights))
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except (SafetensorError, RuntimeError) as exc:
        raise BundleError(
            f"{weights} does not fit the {arch} architecture ({str(exc)[:300]}). {FIX}"
        ) from exc
    if missing or unexpected:
        raise BundleError(
            f"{weights} does not fit the {arch} architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}. {FIX}"
        )
    if backbone.modality == "image":
        backbone.preprocess = _image_preprocess(pre, root)
    w = b["weights"]
    backbone.name = b["name"]
    backbone.weights = replace(
        backbone.weights,
        pretrained=bool(b["pretrained"]),
        source=f"bundled in {folder} (trained with: {w.get('source', '?')})",
        sha256=str(w["sha256"]) if b["pretrained"] else state_dict_sha256(backbone),
        tag=str(w.get("tag", "")),
        file=str(weights),
    )
    return backbone
