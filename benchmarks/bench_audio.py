"""Reproduce the audio acceptance numbers (issue 6) in one command, offline, on CPU.

    PYTHONPATH=src python benchmarks/bench_audio.py --out /tmp/bench-audio [--skip ...]

Parts (each can be skipped with --skip NAME):

``commands``  acceptance 1: ``headstart fit`` on the built-in SYNTHETIC spoken-commands set
              (espeak-ng), 20 examples per class (``train_size=200`` = 160 train + 40 val),
              the official test split (120 clips, voice/speed combinations unseen in
              training), Whisper tiny.en: ``--strategy extract`` and ``--strategy finetune``.
``pooling``   the pooling/window ablation on the same splits: masked mean vs mean over all
              frames, Whisper's 30-second window vs a 3-second one; logistic head chosen on
              the validation split, accuracy on test.
``asr``       acceptance 2: ``fit_transcription`` on the built-in SYNTHETIC dictation set
              (14.5 min of training audio): WER before/after on held-out domain phrases and
              on general English sentences.

Writes ``results.json`` in --out and prints Markdown tables (pasted into
benchmarks/RESULTS-audio.md). Every part uses a fresh feature cache under --out, so the
times include extraction.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKBONE = "hf:openai/whisper-tiny.en"


def commands(out: Path, data: Path) -> dict[str, Any]:
    from headstart.config import FitConfig
    from headstart.fit import fit_run

    res: dict[str, Any] = {}
    for strategy in ("extract", "finetune"):
        cfg = FitConfig.build(
            data=str(data / "train"),
            test=str(data / "test"),
            train_size=200,
            backbone=BACKBONE,
            strategy=strategy,
            baseline=False,
            out=str(out / f"commands-{strategy}"),
            cache_dir=str(out / "cache"),
        )
        t0 = time.perf_counter()
        r = fit_run(cfg, progress=False)
        wall = time.perf_counter() - t0
        m = r.metrics
        res[strategy] = {
            "test_accuracy": m["test"]["accuracy"],
            "val_accuracy": m["val"]["accuracy"],
            "n_train": m["n_train"],
            "n_val": m["n_val"],
            "n_test": m["n_test"],
            "wall_s": round(wall, 1),
            "timings": m["timings"],
            "extraction": {
                k: {kk: v.get(kk) for kk in ("engine", "seconds", "cached")}
                for k, v in m["extraction"].items()
            },
            "finetune": {
                k: m["finetune"][k]
                for k in ("unfrozen", "best_epoch", "epochs_run", "stopped", "seconds")
            }
            if "finetune" in m
            else None,
        }
        print(
            f"commands {strategy}: test accuracy {m['test']['accuracy']:.4f} in {wall:.0f} s",
            flush=True,
        )
    return res


def pooling(out: Path, data: Path) -> dict[str, Any]:
    import torch

    from headstart.backbones.audio import audio_batch, load_whisper
    from headstart.backbones.offline import resolve_hf_dir
    from headstart.data.load import load_data
    from headstart.heads import make_head

    splits = load_data(data / "train", test=data / "test", train_size=200)
    where, source = resolve_hf_dir("openai/whisper-tiny.en", True)
    res: dict[str, Any] = {}
    for window in (30.0, 3.0):
        b = load_whisper(where, name=BACKBONE, source=source, window_seconds=window)
        feats: dict[str, dict[str, np.ndarray]] = {"mean": {}, "mean-all": {}}
        t0 = time.perf_counter()
        for part in ("train", "val", "test"):
            ex = getattr(splits, part)
            rows: dict[str, list[np.ndarray]] = {"mean": [], "mean-all": []}
            for i in range(0, len(ex), 16):
                batch = audio_batch(list(ex.inputs[i : i + 16]), b.preprocess)
                with torch.inference_mode():
                    h = b.encode(batch["input_features"])
                m = batch["frame_mask"].unsqueeze(-1)
                rows["mean"].append(((h * m).sum(1) / m.sum(1)).numpy())
                rows["mean-all"].append(h.mean(1).numpy())
            for k in rows:
                feats[k][part] = np.concatenate(rows[k])
        secs = time.perf_counter() - t0
        n = sum(len(getattr(splits, p)) for p in ("train", "val", "test"))
        for pool, f in feats.items():
            head = make_head("logistic", random_state=0, refit=False)
            head.fit(f["train"], splits.train.labels, X_val=f["val"], y_val=splits.val.labels)
            acc = float(np.mean(head.predict(f["test"]) == splits.test.labels))
            val = float(np.mean(head.predict(f["val"]) == splits.val.labels))
            res[f"{window:g}s/{pool}"] = {
                "window_s": window,
                "pooling": pool,
                "test_accuracy": acc,
                "val_accuracy": val,
                "clips_per_s": round(n / secs, 2),
            }
            print(f"pooling {window:g}s {pool}: test {acc:.4f} val {val:.4f}", flush=True)
        res[f"{window:g}s"] = {"extract_s": round(secs, 1), "clips": n}
    return res


def asr(out: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from headstart.asr import TranscriptionConfig, fit_transcription

    cfg = TranscriptionConfig(
        backbone=BACKBONE,
        epochs=args.epochs,
        lr=args.lr,
        unfreeze_encoder_blocks=args.unfreeze,
        batch_size=8,
    )
    t0 = time.perf_counter()
    r = fit_transcription(
        data / "train.csv",
        out=out / "asr",
        test_csv=data / "test.csv",
        general_csv=data / "general.csv",
        config=cfg,
        progress=False,
    )
    wall = time.perf_counter() - t0
    m = r.metrics
    print(r.summary, flush=True)
    return {
        "config": cfg.to_dict(),
        "wall_s": round(wall, 1),
        **{k: m[k] for k in ("n_train", "n_val", "train_audio_minutes", "timings", "training")},
        **{
            split: {k: m[split][k] for k in ("n", "wer_before", "wer_after", "before", "after")}
            for split in ("test", "general")
        },
    }


def markdown(results: dict[str, Any]) -> str:
    lines = []
    if "commands" in results:
        lines += [
            "| strategy | test accuracy | val accuracy | train / val / test | wall time |",
            "|---|---|---|---|---|",
        ]
        for s, r in results["commands"].items():
            lines.append(
                f"| {s} | {r['test_accuracy']:.4f} | {r['val_accuracy']:.4f} | "
                f"{r['n_train']} / {r['n_val']} / {r['n_test']} | {r['wall_s']:.0f} s |"
            )
        lines.append("")
    if "pooling" in results:
        lines += [
            "| window | pooling | test accuracy | val accuracy | clips/s |",
            "|---|---|---|---|---|",
        ]
        for r in results["pooling"].values():
            if "pooling" in r:
                lines.append(
                    f"| {r['window_s']:g} s | {r['pooling']} | {r['test_accuracy']:.4f} | "
                    f"{r['val_accuracy']:.4f} | {r['clips_per_s']} |"
                )
        lines.append("")
    if "asr" in results:
        r = results["asr"]
        lines += ["| set | n | WER before | WER after | change |", "|---|---|---|---|---|"]
        for split in ("test", "general"):
            b, a = r[split]["wer_before"], r[split]["wer_after"]
            lines.append(
                f"| {split} | {r[split]['n']} | {b:.4f} | {a:.4f} | "
                f"{(a - b) / b:+.1%} relative, {100 * (a - b):+.2f} points |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/bench-audio")
    p.add_argument("--skip", action="append", default=[], choices=("commands", "pooling", "asr"))
    p.add_argument("--epochs", type=int, default=2, help="transcription fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-5, help="transcription learning rate")
    p.add_argument("--unfreeze", type=int, default=2, help="top encoder blocks to train (asr)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (epochs, WER)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("headstart").setLevel(logging.INFO if args.verbose else logging.WARNING)
    from headstart.data.speech import generate_dictation, generate_spoken_commands

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "command": " ".join(["python", *sys.argv]),
    }
    if "commands" not in args.skip or "pooling" not in args.skip:
        cmds = generate_spoken_commands()
    if "commands" not in args.skip:
        results["commands"] = commands(out, cmds)
    if "pooling" not in args.skip:
        results["pooling"] = pooling(out, cmds)
    if "asr" not in args.skip:
        results["asr"] = asr(out, generate_dictation(), args)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
