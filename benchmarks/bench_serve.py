"""`headstart serve` under load: micro-batching on vs off, same model, same run.

    python benchmarks/bench_serve.py [--model DIR] [--clients 32] [--duration 60]

Starts ``headstart serve MODEL`` as a real process twice on a free port, first with
``--max-batch 1`` (batching off: the baseline) and then with ``--max-batch 32 --max-wait-ms 5``
(on), and drives each with ``--clients`` concurrent HTTP clients (httpx, one asyncio task
each, one digits image per multipart request) for ``--duration`` seconds. Reports requests/s,
p50/p99 latency, errors (a non-200 answer, a transport error, or a label that differs from
the one the same server gave that image alone before the load), the mean inputs per forward
pass, and the server's resident memory (VmRSS) after a ``--warmup`` of the same load, every
10 s, and at the end.

Without ``--model`` it trains the model the acceptance names, once, into
``--work`` (default /tmp/headstart-bench-serve):
``headstart fit digits --strategy extract --backbone torchvision:mobilenet_v2 --no-baseline``.
The clients run on the same machine as the server, so they take CPU from it: the figures
are a lower bound on what the server alone does, equal for both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _model(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    run = Path(args.work) / "run"
    if not (run / "model" / "headstart.json").exists():
        cmd = [sys.executable, "-m", "headstart", "fit", "digits", "--strategy", "extract"]
        cmd += ["--backbone", "torchvision:mobilenet_v2", "--no-baseline", "--out", str(run)]
        print("training the benchmark model:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)
    return run / "model"


def _images(n: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for img in digits.images[:n]:
        buf = io.BytesIO()
        Image.fromarray((img * 16).clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def _load(url: str, images: list[bytes], clients: int, duration: float) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(k: int) -> httpx.Response:
            files = {"files": (f"{k}.png", images[k], "image/png")}
            return await client.post("/predict", files=files)

        expected = []
        for k in range(len(images)):  # each image alone, before the load: the reference
            expected.append((await one(k)).json()["predictions"][0]["label"])
        latencies: list[float] = []
        errors: dict[str, int] = {}
        stop = time.monotonic() + duration

        async def worker(w: int) -> None:
            k = w
            while time.monotonic() < stop:
                k = (k + 1) % len(images)
                t0 = time.perf_counter()
                try:
                    r = await one(k)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[f"http {r.status_code}"] = errors.get(f"http {r.status_code}", 0) + 1
                elif r.json()["predictions"][0]["label"] != expected[k]:
                    errors["wrong label"] = errors.get("wrong label", 0) + 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.monotonic() - t0
        health = (await client.get("/health")).json()["batching"]
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "seconds": round(wall, 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "mean_batch_inputs": health["mean_batch_inputs"],
        "largest_batch": health["largest_batch"],
    }


def _serve(model: Path, flags: list[str], args: argparse.Namespace, images: list[bytes]) -> dict:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "headstart", "serve", str(model), "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 180:
                raise SystemExit("server did not start in 180 s")
            time.sleep(0.3)
        asyncio.run(_load(url, images, args.clients, args.warmup))
        rss = [_rss_mib(proc.pid)]
        done: dict[str, Any] = {}

        async def sample() -> None:
            task = asyncio.create_task(_load(url, images, args.clients, args.duration))
            while not task.done():
                await asyncio.sleep(0.5)
                if len(rss) < 1 + int((time.monotonic() - t_load) / 10):
                    rss.append(_rss_mib(proc.pid))
            done.update(task.result())

        t_load = time.monotonic()
        load_before = os.getloadavg()[0]
        asyncio.run(sample())
        rss.append(_rss_mib(proc.pid))
        done.update(
            rss_start_mib=round(rss[0], 1),
            rss_end_mib=round(rss[-1], 1),
            rss_samples_mib=[round(r, 1) for r in rss],
            server_alive=proc.poll() is None,
            machine_load_1min=[round(load_before, 1), round(os.getloadavg()[0], 1)],
        )
        return done
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model bundle (default: train the digits model)")
    ap.add_argument("--work", default="/tmp/headstart-bench-serve")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--warmup", type=float, default=20.0, help="seconds of load before measuring (default: 20)"
    )
    ap.add_argument("--images", type=int, default=64, help="distinct images the clients send")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    model = _model(args)
    images = _images(args.images)
    modes = {
        "off": ["--max-batch", "1"],
        "on": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
    }
    results = {}
    for name, flags in modes.items():
        print(f"batching {name}: {args.clients} clients for {args.duration:g} s ...", flush=True)
        results[name] = _serve(model, flags, args, images)
    off, on = results["off"], results["on"]
    print(f"\nmodel {model}; {args.clients} clients, {args.duration:g} s per mode")
    head = f"{'batching':<9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(head + f"{'inputs/pass':>13}{'RSS start':>11}{'RSS end':>9}")
    for name, r in results.items():
        print(
            f"{name:<9}{r['requests_per_s']:>8}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['errors']:>8}"
            f"{r['mean_batch_inputs']:>13}{r['rss_start_mib']:>10}M{r['rss_end_mib']:>8}M"
        )
    print(
        f"on/off: requests/s x{on['requests_per_s'] / off['requests_per_s']:.2f}, "
        f"p50 x{on['p50_ms'] / off['p50_ms']:.2f}, p99 x{on['p99_ms'] / off['p99_ms']:.2f}"
    )
    for name, r in results.items():
        print(f"RSS every 10 s, batching {name} (MiB): {r['rss_samples_mib']}")
        print(
            f"  machine load (1-min average) before/after, batching {name}: {r['machine_load_1min']}"
        )
    if args.json:
        from headstart._io import atomic_write_json

        atomic_write_json(args.json, {"model": str(model), "args": vars(args), **results})


if __name__ == "__main__":
    main()
