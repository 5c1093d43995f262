"""A model bundle is untrusted input: its checks, run before anything in it is loaded.

Anyone can edit ``headstart.json``, so nothing in it is followed blindly:

* the backbone reference must be a registry name (``torchvision:<model>``,
  ``timm:<model>``, ``hf:<org>/<repo>``: names, never paths), weights bundled inside the
  folder (a self-contained bundle), a ``local-dir:`` path *inside* the bundle, or a folder the
  caller trusts explicitly (``trusted_paths``). ``local-dir:/abs/path``, ``hf:../../x`` and
  anything else that points outside is refused by looking at the string alone, before any
  file outside the bundle is opened;
* every file the loader reads must be a regular file inside the bundle (a symbolic link
  leading out is refused);
* the JSON is checked against the format's schema (keys, types, ranges), and the head's
  arrays against it (names, dtypes, shapes, class count, feature dimension), so an edited
  class list cannot silently drop a class.

Each failure is one :class:`~headstart.errors.BundleError` saying what is wrong, where, and
how to fix it.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import BundleError

__all__ = [
    "BUNDLED_DIR",
    "FIX",
    "MAX_SIZE",
    "bundle_file",
    "check_head_arrays",
    "check_json_paths",
    "check_meta",
    "check_summary",
    "inside_bundle",
    "is_outside_path",
    "path_like_values",
    "resolve_reference",
    "safetensors_header",
]

#: The sub-folder of a self-contained bundle that holds the backbone (weights, config,
#: tokenizer/preprocessing files).
BUNDLED_DIR = "backbone"
FIX = (
    "The bundle was edited or damaged: restore it from where it was trained, or save the "
    "model again (headstart fit ... --out DIR, or TransferClassifier.save)."
)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?$")  # torchvision / timm
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MODALITIES = ("image", "text", "audio")
_HEAD_DTYPES = ("F32", "F64")
#: JSON keys that transformers may read as file locations.
_PATH_KEYS = re.compile(r"(?:^|_)(?:file|files|path|dir|name_or_path)$")


def _where(path: Path, key: str) -> str:
    return f"{path / 'headstart.json'}: '{key}'"


def _need(ok: bool, path: Path, key: str, expected: str, got: Any) -> None:
    if not ok:
        shown = repr(got)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise BundleError(f"{_where(path, key)} must be {expected}, got {shown}. {FIX}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: Upper bounds on sizes a bundle may ask for: far above any real model, low enough that an
#: edited value cannot make a prediction allocate without limit.
MAX_SIZE = {"image_size": 8192, "max_length": 131072, "feature_dim": 1 << 20}


def _opt_pos_int(v: Any, key: str) -> bool:
    return v is None or (_is_int(v) and 0 < v <= MAX_SIZE[key])


def check_meta(meta: Any, path: Path) -> None:
    """Check a classification bundle's ``headstart.json`` against the format's schema.

    Only what the loader relies on is required; unknown keys (written by a newer headstart,
    or by other tools such as a LoRA adapter's) are allowed.
    """
    check_summary(meta, path)
    b = meta["backbone"]
    _check_backbone(b, path, meta["modality"])
    _check_head(meta, path)


def check_summary(meta: Any, path: Path) -> None:
    """The keys every reader of ``headstart.json`` indexes before loading anything (format,
    kind, classes, modality, backbone name): :func:`headstart.bundle.read_meta` checks them,
    :func:`check_meta` everything else."""
    _need(isinstance(meta, dict), path, "(top level)", "a JSON object", type(meta).__name__)
    fmt = meta.get("format")
    _need(_is_int(fmt) and fmt >= 1, path, "format", "a positive integer", fmt)
    kind = meta.get("kind", "classification")
    if kind != "classification":
        raise BundleError(
            f"{_where(path, 'kind')} is {kind!r}: this is not a classification model. "
            + (
                "Use: headstart transcribe predict MODEL AUDIO..."
                if kind == "transcription"
                else FIX
            )
        )
    classes = meta.get("classes")
    _need(
        isinstance(classes, list) and len(classes) >= 2,
        path,
        "classes",
        "a list of at least 2 class names",
        classes,
    )
    _need(
        all(isinstance(c, str) and c for c in classes),
        path,
        "classes",
        "non-empty strings",
        classes,
    )
    dup = sorted(c for c, n in Counter(classes).items() if n > 1)
    _need(not dup, path, "classes", "distinct names", dup)
    modality = meta.get("modality")
    _need(modality in _MODALITIES, path, "modality", f"one of {_MODALITIES}", modality)
    _need(
        isinstance(meta.get("strategy", ""), str),
        path,
        "strategy",
        "a string",
        meta.get("strategy"),
    )
    b = meta.get("backbone")
    _need(isinstance(b, dict), path, "backbone", "a JSON object", b)
    name = b.get("name")
    _need(isinstance(name, str) and bool(name), path, "backbone.name", "a backbone name", name)


def _check_head(meta: dict[str, Any], path: Path) -> None:
    classes, b = meta["classes"], meta["backbone"]
    head: Any = meta.get("head")
    _need(isinstance(head, dict), path, "head", "a JSON object", head)
    _need(isinstance(head.get("name"), str), path, "head.name", "a head name", head.get("name"))
    cfg = head.get("config")
    _need(isinstance(cfg, dict), path, "head.config", "a JSON object", cfg)
    _need(
        cfg.get("type") == head["name"],
        path,
        "head.config.type",
        f"{head['name']!r}",
        cfg.get("type"),
    )
    hc = cfg.get("classes")
    _need(isinstance(hc, list) and len(hc) >= 2, path, "head.config.classes", "a list", hc)
    if len(hc) != len(classes):
        raise BundleError(
            f"{_where(path, 'classes')} lists {len(classes)} classes {classes[:10]}, but the "
            f"head was trained with {len(hc)} outputs: labels would be dropped or invented. "
            f"{FIX}"
        )
    nf = cfg.get("n_features_in")
    _need(_is_int(nf), path, "head.config.n_features_in", "an integer", nf)
    if nf != b["feature_dim"]:
        raise BundleError(
            f"{_where(path, 'head.config.n_features_in')} is {nf} but the backbone's "
            f"feature_dim is {b['feature_dim']}: the head does not belong to this backbone. {FIX}"
        )


def _check_backbone(b: dict[str, Any], path: Path, modality: str) -> None:
    name = b.get("name")
    _need(isinstance(name, str) and bool(name), path, "backbone.name", "a backbone name", name)
    _need(
        isinstance(b.get("pretrained"), bool),
        path,
        "backbone.pretrained",
        "true or false",
        b.get("pretrained"),
    )
    w = b.get("weights")
    _need(isinstance(w, dict), path, "backbone.weights", "a JSON object", w)
    if b["pretrained"]:
        sha = w.get("sha256")
        _need(
            isinstance(sha, str) and bool(_SHA256.match(sha)),
            path,
            "backbone.weights.sha256",
            "a sha256 hex digest",
            sha,
        )
    pre = b.get("preprocess")
    _need(isinstance(pre, dict), path, "backbone.preprocess", "a JSON object", pre)
    _need(
        pre.get("kind") == modality,
        path,
        "backbone.preprocess.kind",
        f"{modality!r} (the modality)",
        pre.get("kind"),
    )
    fd = b.get("feature_dim")
    _need(
        _is_int(fd) and 0 < fd <= MAX_SIZE["feature_dim"],
        path,
        "backbone.feature_dim",
        f"a positive integer up to {MAX_SIZE['feature_dim']}",
        fd,
    )
    _need(isinstance(b.get("pooling"), str), path, "backbone.pooling", "a string", b.get("pooling"))
    for key in ("image_size", "max_length"):
        _need(
            _opt_pos_int(b.get(key), key),
            path,
            f"backbone.{key}",
            f"null or a positive integer up to {MAX_SIZE[key]}",
            b.get(key),
        )
    tp = b.get("tuned_params", [])
    _need(
        isinstance(tp, list) and all(isinstance(t, str) for t in tp),
        path,
        "backbone.tuned_params",
        "a list of names",
        tp,
    )
    bundled = b.get("bundled")
    if bundled is not None:
        _need(isinstance(bundled, dict), path, "backbone.bundled", "a JSON object", bundled)
        files = bundled.get("files")
        _need(
            isinstance(files, dict)
            and all(
                isinstance(k, str) and isinstance(v, str) and _SHA256.match(v)
                for k, v in files.items()
            )
            and bundled.get("weights") in files,
            path,
            "backbone.bundled",
            "{'weights': FILE, 'files': {FILE: sha256}} with the weights file among the files",
            bundled,
        )


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def inside_bundle(root: Path, folder: Path) -> None:
    """Refuse a sub-folder of the bundle (e.g. a LoRA ``adapter/``) that is, or holds, a
    link leading outside the bundle."""
    real_root = Path(os.path.realpath(root))
    for p in [folder, *folder.rglob("*")]:
        real = Path(os.path.realpath(p))
        if not _inside(real, real_root):
            raise BundleError(f"{p} leads outside the bundle (to {real}): refused. {FIX}")


def bundle_file(root: Path, rel: str, *, what: str) -> Path:
    """``root/rel`` after checking it is a regular file inside the bundle (no link leading
    out, no ``..``): the only way the loader opens a bundle's files."""
    root_r = Path(os.path.realpath(root))
    if os.path.isabs(rel) or ".." in Path(rel).parts:
        raise BundleError(f"{root}: {what} {rel!r} is not a path inside the bundle. {FIX}")
    p = root / rel
    if not _inside(Path(os.path.realpath(p)), root_r):
        raise BundleError(
            f"{p} ({what}) leads outside the bundle (to {os.path.realpath(p)}): refused. A "
            f"bundle holds its files itself; links out of it are not followed. {FIX}"
        )
    if not p.is_file():
        state = "is missing" if not p.exists() else "is not a regular file"
        raise BundleError(f"{p} ({what}) {state}. {FIX}")
    return p


def resolve_reference(
    name: str, root: Path, *, bundled: bool, trusted_paths: Sequence[str | os.PathLike[str]] = ()
) -> tuple[str, Path | None]:
    """Where the bundle's backbone may come from: ``("bundled", folder)``,
    ``("local-dir", folder)`` (inside the bundle or a trusted folder) or ``("registry", None)``.

    Decided from the strings alone (and, for trusted folders, their real paths): nothing
    outside the bundle is opened before a reference is accepted.
    """
    if bundled:
        # The weights travel inside; the recorded name is provenance and is never resolved.
        return "bundled", root / BUNDLED_DIR
    source, sep, rest = name.partition(":")
    if sep and source in ("torchvision", "timm"):
        if _MODEL_NAME.match(rest):
            return "registry", None
        raise BundleError(
            f"{_where(root, 'backbone.name')} is {name!r}: a {source} model name is letters, "
            f"digits and '_' with an optional '.tag', e.g. '{source}:mobilenet_v2'. {FIX}"
        )
    if sep and source == "hf":
        if _HUB_ID.match(rest) and ".." not in rest:
            return "registry", None
        raise BundleError(
            f"{_where(root, 'backbone.name')} is {name!r}: not a Hugging Face repo id "
            "('hf:<org>/<name>'). A bundle may not point at folders on disk through 'hf:'; "
            f"refused before anything outside the bundle is opened. {FIX}"
        )
    folder = rest if sep and source == "local-dir" else name
    if not os.path.isabs(folder) and not folder.startswith("~"):
        inner = Path(os.path.realpath(root / folder))
        if _inside(inner, Path(os.path.realpath(root))):
            return "local-dir", inner
    else:
        real = Path(os.path.realpath(os.path.expanduser(folder)))
        for t in trusted_paths:
            if _inside(real, Path(os.path.realpath(os.path.expanduser(os.fspath(t))))):
                return "local-dir", real
    raise BundleError(
        f"{_where(root, 'backbone.name')} is {name!r}: a folder outside the bundle, refused "
        "before anything in it is opened (a bundle could otherwise make headstart load any "
        "file on this machine). If you trust that folder, pass it explicitly (--trust-path "
        "FOLDER on predict / evaluate; load_model(..., trusted_paths=[FOLDER])); "
        "better, save the model self-contained where it was trained "
        "(headstart fit --self-contained, or TransferClassifier.save(path, self_contained=True))."
    )


def safetensors_header(path: Path, *, what: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{array name: (dtype, shape)}`` from a safetensors file's header, without loading
    the arrays; a damaged or truncated file is a BundleError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as fh:
            out = {}
            for k in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                sl = fh.get_slice(k)
                out[k] = (str(sl.get_dtype()), tuple(int(s) for s in sl.get_shape()))
            return out
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(
            f"{path} ({what}) cannot be read as safetensors ({exc}): it is truncated or "
            f"damaged. {FIX}"
        ) from exc


def check_head_arrays(header: dict[str, tuple[str, tuple[int, ...]]], path: Path) -> None:
    """Every head array is float32/float64 (the shapes are checked by the head itself)."""
    bad = {k: d for k, (d, _) in header.items() if d not in _HEAD_DTYPES}
    if bad:
        raise BundleError(f"{path}: head arrays must be float32 or float64, found {bad}. {FIX}")


def path_like_values(obj: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of string values under file-location keys (``tokenizer_file``,
    ``_name_or_path``, ...) anywhere in a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from path_like_values(v, str(k))
    elif isinstance(obj, list):
        for v in obj:
            yield from path_like_values(v, key)
    elif isinstance(obj, str) and key and _PATH_KEYS.search(key.lower()):
        yield key, obj


def is_outside_path(value: str) -> bool:
    """Whether a string names an absolute, home-relative or escaping (``..``) location."""
    return (
        os.path.isabs(value)
        or value.startswith("~")
        or bool(re.match(r"^[A-Za-z]:[\\/]", value))
        or ".." in re.split(r"[\\/]", value)
    )


def check_json_paths(files: Iterable[Path]) -> None:
    """Refuse bundled JSON files (model config, tokenizer config) that name a file outside
    the bundle: transformers could follow such a value."""
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{f} is not valid JSON ({exc}). {FIX}") from exc
        for k, v in path_like_values(doc):
            if is_outside_path(v):
                raise BundleError(
                    f"{f}: '{k}' is {v!r}, a location outside the bundle: refused. {FIX}"
                )
