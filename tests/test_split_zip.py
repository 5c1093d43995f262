"""The split-zip importer (all-mpnet-base-v2 ships as one zip cut into five pip packages)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import BackboneError
from headstart.importers.split_zip import ConcatenatedFile, import_split_zip


def _split(data: bytes, folder: Path, n: int) -> list[Path]:
    step = -(-len(data) // n)
    parts = []
    for i in range(n):
        p = folder / f"model.zip.{i + 1:03d}"
        p.write_bytes(data[i * step : (i + 1) * step])
        parts.append(p)
    return parts


def test_concatenated_file_reads_and_seeks_across_pieces(tmp_path):
    data = bytes(range(256)) * 7
    parts = _split(data, tmp_path, 3)
    with ConcatenatedFile(parts) as f:
        assert f.read() == data
        f.seek(600)
        assert f.read(300) == data[600:900]  # spans the first boundary (598 bytes a piece)
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]


def test_import_keeps_only_the_model_files_and_never_writes_outside(tmp_path):
    buf = io.BytesIO()
    weights = np.random.default_rng(0).bytes(50_000)  # incompressible, so the pieces split it
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/config.json", json.dumps({"model_type": "mpnet"}))
        z.writestr("m/model.safetensors", weights)
        z.writestr("m/1_Pooling/config.json", "{}")
        z.writestr("m/desktop.ini", "junk")
        z.writestr("m/../../escape.txt", "outside")
        z.writestr("m/run.py", "print('never run')")
    parts = _split(buf.getvalue(), tmp_path, 4)
    dest = import_split_zip(parts, tmp_path / "out" / "hf")
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == [
        "1_Pooling/config.json",
        "config.json",
        "headstart_import.json",
        "model.safetensors",
    ]
    assert (dest / "model.safetensors").read_bytes() == weights
    assert not list(tmp_path.rglob("escape.txt"))
    record = json.loads((dest / "headstart_import.json").read_text())
    assert record["pieces"] == [p.name for p in parts]


def test_a_missing_piece_or_a_non_model_archive_is_a_clear_error(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/readme.txt", "no model here")
    parts = _split(buf.getvalue(), tmp_path, 2)
    with pytest.raises(BackboneError, match="no Hugging Face model folder"):
        import_split_zip(parts, tmp_path / "out")
    with pytest.raises(BackboneError, match="missing"):
        import_split_zip([*parts, tmp_path / "model.zip.003"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_real_mpnet_loads_offline_and_embeds_paraphrases_close(tmp_path):
    from headstart.backbones.offline import MPNET, OFFLINE_SOURCES, locate
    from headstart.backbones.registry import load_backbone
    from headstart.data.base import Examples
    from headstart.features.cache import features_in_memory

    if locate(MPNET) is None:
        pytest.skip(f"all-mpnet-base-v2 is not installed: {OFFLINE_SOURCES[MPNET].install_command}")
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell sharply."]
    ex = Examples("text", texts, np.zeros(3, dtype=int), ["x"], name="paraphrases")
    emb = features_in_memory(load_backbone(MPNET), ex, batch_size=3)
    assert emb.shape == (3, 768)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2  # a paraphrase closer than an unrelated line
