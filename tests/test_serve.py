"""`headstart serve`: a real server process on a free port, a real HTTP client (httpx).

Tiny random backbones (conftest) keep the models small; the servers are started once per
module, an image one and a text one, and every bad request is followed by a health check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import image_examples, text_examples
from headstart import TransferClassifier

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="pip install 'headstart[serve]'")

MAX_INPUTS = 4
MAX_BODY = 50 * 1024  # --max-body-mb 0.048828125


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(model: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "headstart", "serve", str(model), "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}:\n{out}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"server at {url} not healthy after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _png_files(folder: Path, n: int, seed: int) -> list[Path]:
    from PIL import Image

    ex = image_examples(n, size=28, seed=seed)
    paths = []
    for i, arr in enumerate(ex.inputs):
        p = folder / f"img{seed}_{i}.png"
        img = Image.fromarray(arr)
        # a few RGB images of another size: the server must resize them like predict does
        (img.convert("RGB").resize((40, 34)) if i % 3 == 0 else img).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def servers(tiny_vision_dir, tiny_text_dir, tmp_path_factory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("serve")
    ex = image_examples(40)
    image_model = TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}", engine="torch", cache_dir=str(root / "c")
    ).fit(ex.inputs, np.array(ex.classes)[ex.labels])
    image_model.save(root / "image-model")
    tx = text_examples(40)
    TransferClassifier(
        backbone=f"local-dir:{tiny_text_dir}", engine="torch", cache_dir=str(root / "c")
    ).fit(tx.inputs, np.array(tx.classes)[tx.labels]).save(root / "text-model")
    limits = ["--max-inputs", str(MAX_INPUTS), "--max-body-mb", str(MAX_BODY / 2**20)]
    texts = list(text_examples(10, seed=9).inputs)
    imgs = root / "images"
    imgs.mkdir()
    pngs = _png_files(imgs, 12, seed=11)
    cli = {  # `headstart predict` on the same inputs, run while the servers start
        "image": _predict_cli(root / "image-model", [str(p) for p in pngs]),
        "text": _predict_cli(root / "text-model", texts),
    }
    image_proc, image_url = _start(root / "image-model", "--max-wait-ms", "30", *limits)
    text_proc, text_url = _start(root / "text-model", "--max-batch", "8", *limits)
    try:
        _wait_healthy(image_proc, image_url)
        _wait_healthy(text_proc, text_url)
        yield {
            "root": root,
            "image": image_url,
            "text": text_url,
            "procs": [image_proc, text_proc],
            "pngs": pngs,
            "texts": texts,
            "cli": {k: _read_cli(p) for k, p in cli.items()},
        }
    finally:
        _stop(image_proc)
        _stop(text_proc)


def _predict_cli(model: Path, inputs: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "headstart", "predict", str(model), *inputs]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_cli(proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def _concurrent(url: str, requests: list[dict[str, object]]) -> list[object]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        responses = await asyncio.gather(*(client.post("/predict", **r) for r in requests))
    assert [r.status_code for r in responses] == [200] * len(requests), [r.text for r in responses]
    return [p for r in responses for p in r.json()["predictions"]]


def _assert_same(served: list[dict[str, object]], cli: list[dict[str, object]]) -> None:
    assert [s["label"] for s in served] == [c["label"] for c in cli]
    for s, c in zip(served, cli, strict=True):
        assert isinstance(s["probabilities"], dict) and isinstance(c["probabilities"], dict)
        assert s["probabilities"].keys() == c["probabilities"].keys()
        for label, p in c["probabilities"].items():
            assert s["probabilities"][label] == pytest.approx(p, abs=2e-6)  # predict rounds to 1e-6


def test_health_metadata_and_openapi_docs(servers):
    url = servers["image"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok"
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["labels"] == ["left", "right"]
    assert meta["modality"] == "image" and meta["input_field"] == "images"
    assert "tiny-dinov2" in meta["backbone"]["name"]
    assert meta["preprocessing"]["size"] == 32 and len(meta["preprocessing"]["mean"]) == 3
    assert meta["versions"]["serving"]["headstart"] == meta["versions"]["trained_with"]["headstart"]
    assert meta["serving"]["max_inputs"] == MAX_INPUTS
    spec = httpx.get(f"{url}/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "/health" in spec["paths"] and "/metadata" in spec["paths"]
    assert httpx.get(f"{url}/docs").status_code == 200


def test_concurrent_image_requests_match_headstart_predict(servers):
    url, pngs = servers["image"], servers["pngs"]
    cli = servers["cli"]["image"]
    # 7 requests at once, alternately multipart files and base64 JSON, 1 or 2 images each
    requests: list[dict[str, object]] = []
    order: list[int] = []
    i = 0
    while i < len(pngs):
        group = pngs[i : i + 1 + (i % 2)]
        order += list(range(i, i + len(group)))
        if len(requests) % 2:
            requests.append(
                {"json": {"images": [base64.b64encode(p.read_bytes()).decode() for p in group]}}
            )
        else:
            requests.append(
                {"files": [("files", (p.name, p.read_bytes(), "image/png")) for p in group]}
            )
        i += len(group)
    before = httpx.get(f"{url}/health").json()["batching"]
    served = asyncio.run(_concurrent(url, requests))
    _assert_same(served, [cli[k] for k in order])
    assert served[0]["input"] == pngs[0].name
    after = httpx.get(f"{url}/health").json()["batching"]
    assert after["requests"] - before["requests"] == len(requests)
    # micro-batching did group requests: fewer forward passes than requests
    assert after["batches"] - before["batches"] < len(requests)


def test_concurrent_text_requests_match_headstart_predict(servers):
    texts, cli = servers["texts"], servers["cli"]["text"]
    requests = [{"json": {"texts": list(texts[i : i + 2])}} for i in range(0, 10, 2)]
    served = asyncio.run(_concurrent(servers["text"], requests))
    _assert_same(served, cli)


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _bad_requests(pngs: list[Path]) -> dict[str, tuple[str, dict[str, object], int, str, str]]:
    png = pngs[0].read_bytes()
    b64 = base64.b64encode(png).decode()
    big = np.random.default_rng(0).bytes(MAX_BODY + 1000)
    json_header = {"content-type": "application/json"}
    return {
        # name: (server, request, status, error code, a word the message must hold)
        "undecodable image": ("image", {"files": {"files": ("x.png", b"not an image", "image/png")}}, 422, "undecodable_image", "x.png"),
        "truncated png": ("image", {"files": {"files": ("cut.png", png[: len(png) // 2], "image/png")}}, 422, "undecodable_image", "cut.png"),
        "empty file": ("image", {"files": {"files": ("e.png", b"", "image/png")}}, 422, "empty_file", "e.png"),
        "invalid base64": ("image", {"json": {"images": ["@@@not base64"]}}, 422, "invalid_base64", "images[0]"),
        "texts to an image model": ("image", {"json": {"texts": ["hello"]}}, 422, "wrong_modality", "image"),
        "files to a text model": ("text", {"files": {"files": ("a.png", png, "image/png")}}, 422, "wrong_modality", "texts"),
        "images to a text model": ("text", {"json": {"images": [b64]}}, 422, "wrong_modality", "texts"),
        "empty body": ("image", {"headers": json_header}, 400, "empty_body", "empty"),
        "invalid json": ("text", {"content": b"{not json", "headers": json_header}, 400, "invalid_json", "JSON"),
        "no inputs": ("text", {"json": {"texts": []}}, 422, "no_inputs", "no inputs"),
        "blank text": ("text", {"json": {"texts": ["ok", "  "]}}, 422, "empty_text", "texts[1]"),
        "not a list": ("text", {"json": {"texts": "one text"}}, 422, "invalid_body", "list"),
        "too many texts": ("text", {"json": {"texts": ["good"] * (MAX_INPUTS + 1)}}, 413, "too_many_inputs", "--max-inputs"),
        "too many files": ("image", {"files": [("files", (f"{i}.png", png, "image/png")) for i in range(MAX_INPUTS + 1)]}, 413, "too_many_inputs", "--max-inputs"),
        "oversized payload": ("image", {"files": {"files": ("big.png", big, "image/png")}}, 413, "payload_too_large", "--max-body-mb"),
        "oversized chunked payload": ("text", {"content": _chunks(big), "headers": json_header}, 413, "payload_too_large", "--max-body-mb"),
        "unsupported content type": ("text", {"content": b"good film", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", "application/json"),
    }  # fmt: skip


BAD = list(_bad_requests([Path(__file__)]).keys())


@pytest.mark.parametrize("case", BAD)
def test_bad_request_gets_a_4xx_json_error_and_the_server_stays_up(servers, case):
    which, request, status, code, word = _bad_requests(servers["pngs"])[case]
    url = servers[which]
    r = httpx.post(f"{url}/predict", timeout=30, **request)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    assert word in body["detail"]
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    assert all(p.poll() is None for p in servers["procs"])


def test_unknown_route_and_method_are_json_errors(servers):
    url = servers["text"]
    r = httpx.get(f"{url}/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = httpx.get(f"{url}/predict")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_serve_refuses_a_missing_bundle_and_bad_flags(tmp_path, capsys):
    from headstart.cli.main import main

    assert main(["serve", str(tmp_path)]) == 2
    assert "not a headstart model bundle" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def _toy_predict(calls: list[int]):
    def predict(items: list[object]) -> np.ndarray:
        calls.append(len(items))
        if "bad" in items:
            raise ValueError("bad input")
        return np.array([[float(x), 1.0] for x in items])  # type: ignore[arg-type]

    return predict


async def _submit_all(max_batch: int, requests: list[list[object]], calls: list[int]):
    from headstart.serving import MicroBatcher

    batcher = MicroBatcher(_toy_predict(calls), max_batch=max_batch, max_wait_s=0.05)
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit(r) for r in requests), return_exceptions=True
        )
    finally:
        await batcher.stop()
    return results, batcher.stats


def test_micro_batcher_groups_requests_pads_them_and_isolates_a_failing_one():
    requests: list[list[object]] = [[i, i + 100] for i in range(5)] + [["bad"]]
    calls: list[int] = []
    results, stats = asyncio.run(_submit_all(4, requests, calls))
    for i in range(5):
        np.testing.assert_array_equal(results[i][:, 0], [i, i + 100])
    assert isinstance(results[5], ValueError)
    # two requests of two per forward pass; the failing batch of three was padded to four,
    # then retried request by request
    assert calls == [4, 4, 4, 2, 1]
    assert stats.requests == 5 and stats.failed_requests == 1
    # batching off: every request runs alone
    calls_off: list[int] = []
    results, stats = asyncio.run(_submit_all(1, requests[:5], calls_off))
    assert calls_off == [2] * 5 and stats.batches == 5


def test_micro_batcher_refuses_bad_settings():
    from headstart.errors import ConfigError
    from headstart.serving import MicroBatcher

    with pytest.raises(ConfigError, match="--max-batch"):
        MicroBatcher(_toy_predict([]), max_batch=0)
    with pytest.raises(ConfigError, match="--max-wait-ms"):
        MicroBatcher(_toy_predict([]), max_wait_s=-1)


def test_triton_repository_for_an_exported_model(servers, tmp_path):
    """`write_triton_repository` on a real `headstart export` graph: the layout Triton reads,
    a config whose inputs/outputs match the graph, and a model.onnx that still runs."""
    ort = pytest.importorskip("onnxruntime")
    from headstart.errors import DataError
    from headstart.export import export_bundle
    from headstart.serving.triton import write_triton_repository

    onnx_file = tmp_path / "tiny.onnx"
    export_bundle(servers["root"] / "image-model", onnx_file, examples=image_examples(8))
    folder = write_triton_repository(onnx_file, tmp_path / "repo", max_batch_size=8)
    assert folder == tmp_path / "repo" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == [
        "1",
        "config.pbtxt",
        "labels.txt",
        "preprocess.json",
    ]
    assert (folder / "labels.txt").read_text().split() == ["left", "right"]
    config = (folder / "config.pbtxt").read_text()
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert config.startswith('name: "tiny"\nbackend: "onnxruntime"\nmax_batch_size: 8\n')
    assert f'name: "{inp.name}"\n    data_type: TYPE_FP32\n    dims: [ 3, 32, 32 ]' in config
    assert f'name: "{out.name}"\n    data_type: TYPE_FP32\n    dims: [ 2 ]\n' in config
    assert 'label_filename: "labels.txt"' in config and "max_queue_delay_microseconds" in config
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    (proba,) = session.run(None, {inp.name: x})
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    # writing again replaces the folder whole; a missing file is a clear error
    write_triton_repository(onnx_file, tmp_path / "repo", max_batch_size=4)
    assert "max_batch_size: 4\n" in (folder / "config.pbtxt").read_text()
    with pytest.raises(DataError, match="headstart export"):
        write_triton_repository(tmp_path / "missing.onnx", tmp_path / "repo")
