"""Feature extraction: cache hits, atomic shards, resume after a real kill -9, engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import image_examples, text_examples
from headstart.backbones import load_backbone
from headstart.errors import ConfigError
from headstart.features.cache import extract_features

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def vit(tiny_vision_dir):
    return load_backbone(f"local-dir:{tiny_vision_dir}")


def test_second_extraction_reads_the_cache(vit, tmp_path):
    ex = image_examples(50)
    a = extract_features(vit, ex, shard_size=16, engine="torch", cache_dir=tmp_path, progress=False)
    assert a.computed_shards == 4 and a.cached_shards == 0
    b = extract_features(vit, ex, shard_size=16, engine="torch", cache_dir=tmp_path, progress=False)
    assert b.computed_shards == 0 and b.cached_shards == 4 and b.key == a.key
    np.testing.assert_array_equal(a.load(), b.load())
    assert a.load().shape == (50, vit.feature_dim)


def test_cache_key_depends_on_data_and_preprocessing(vit, tiny_vision_dir, tmp_path):
    a = extract_features(
        vit, image_examples(20), engine="torch", cache_dir=tmp_path, progress=False
    )
    b = extract_features(
        vit, image_examples(20, seed=1), engine="torch", cache_dir=tmp_path, progress=False
    )
    other = load_backbone(f"local-dir:{tiny_vision_dir}", image_size=24)
    c = extract_features(
        other, image_examples(20), engine="torch", cache_dir=tmp_path, progress=False
    )
    assert len({a.key, b.key, c.key}) == 3


def test_corrupt_shard_is_detected_and_recomputed(vit, tmp_path):
    ex = image_examples(40)
    a = extract_features(vit, ex, shard_size=16, engine="torch", cache_dir=tmp_path, progress=False)
    ref = a.load()
    shard = a.path / "shard-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the float data
    shard.write_bytes(bytes(raw))
    b = extract_features(vit, ex, shard_size=16, engine="torch", cache_dir=tmp_path, progress=False)
    assert b.computed_shards == 1
    np.testing.assert_array_equal(b.load(), ref)


def test_text_extraction_keeps_input_order_despite_length_sorting(tiny_text_dir, tmp_path):
    bb = load_backbone(f"local-dir:{tiny_text_dir}")
    ex = text_examples(30)
    ex.inputs[3] = " ".join(["good"] * 40)  # one long text changes the sort order
    fs = extract_features(bb, ex, batch_size=4, engine="torch", cache_dir=tmp_path, progress=False)
    from headstart.features.cache import features_in_memory

    single = np.concatenate(
        [features_in_memory(bb, ex.subset([i]), batch_size=1) for i in range(len(ex))]
    )
    np.testing.assert_allclose(fs.load(), single, atol=1e-5)


def test_onnx_engine_matches_torch(vit, tmp_path):
    ex = image_examples(24)
    t = extract_features(vit, ex, engine="torch", cache_dir=tmp_path / "t", progress=False)
    o = extract_features(vit, ex, engine="onnx", cache_dir=tmp_path / "o", progress=False)
    assert o.engine == "onnx"
    np.testing.assert_allclose(o.load(), t.load(), atol=1e-4, rtol=1e-3)


def test_modality_mismatch_is_refused(vit):
    with pytest.raises(ConfigError, match="image backbone but the data is text"):
        extract_features(vit, text_examples(4), progress=False)


SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {src!r}); sys.path.insert(0, {tests!r})
    from conftest import image_examples
    from headstart.backbones import load_backbone
    from headstart.features.cache import extract_features
    bb = load_backbone("local-dir:" + sys.argv[1])
    fs = extract_features(bb, image_examples(3000), shard_size=16, batch_size=16,
                          engine="torch", cache_dir=sys.argv[2], progress=False)
    print(fs.computed_shards, fs.cached_shards)
    """
)


def test_killed_extraction_resumes_with_identical_features(tiny_vision_dir, tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT.format(src=SRC, tests=str(Path(__file__).parent)))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tiny_vision_dir), str(killed)], env=env
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(killed.glob("*/shard-00003.json")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    entry = next(killed.iterdir())
    assert not (entry / "complete.json").exists(), "extraction finished before it could be killed"
    done_before = len(list(entry.glob("shard-*.json")))
    assert 0 < done_before < 188

    out = subprocess.run(
        [sys.executable, str(script), str(tiny_vision_dir), str(killed)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    computed, cached = map(int, out.stdout.split())
    assert cached >= done_before and computed + cached == 188
    subprocess.run(
        [sys.executable, str(script), str(tiny_vision_dir), str(clean)],
        env=env,
        check=True,
        capture_output=True,
    )
    resumed = np.concatenate([np.load(p) for p in sorted(entry.glob("shard-*.npy"))])
    fresh_entry = next(clean.iterdir())
    fresh = np.concatenate([np.load(p) for p in sorted(fresh_entry.glob("shard-*.npy"))])
    np.testing.assert_array_equal(resumed, fresh)
    assert json.loads((entry / "complete.json").read_text())["n"] == 3000


def test_image_files_are_resized_and_cropped_once_as_the_recipe_says(tmp_path: Path):
    """Files go through torchvision's Resize(resize) + CenterCrop(size) once (format 1 of the
    cache cropped twice, a tighter view than a bundle's or an export's recipe states)."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from headstart.backbones.base import ImagePreprocess
    from headstart.features.preprocess import image_batches

    paths = []
    for i, (w, h) in enumerate([(300, 260), (120, 200)]):
        # smooth ramps: a one-pixel rounding difference between conventions moves a value by
        # ~1/100 of the range, a second crop (a 15 % zoom) by ~1/15 at the borders
        yy, xx = np.mgrid[0:h, 0:w]
        im = np.stack([255 * xx / w, 255 * yy / h, 127.5 * (xx / w + yy / h)], axis=-1)
        p = tmp_path / f"im{i}.png"
        Image.fromarray(im.astype(np.uint8)).save(p)
        paths.append(p)
    pre = ImagePreprocess(size=96, resize=110, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    recipe = transforms.Compose(
        [
            transforms.Resize(110),
            transforms.CenterCrop(96),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    expected = torch.stack([recipe(Image.open(p).convert("RGB")) for p in paths])
    got = torch.cat(list(image_batches(paths, pre, batch_size=2)))
    assert got.shape == expected.shape == (2, 3, 96, 96)
    # torchvision truncates the long side and rounds the crop offset; headstart rounds both:
    # at most a pixel apart, i.e. ~3 grey levels on these ramps (a second crop moves ~16)
    assert float((got - expected).abs().max()) <= 6 / 255 / min(pre.std)
