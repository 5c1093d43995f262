"""`headstart export MODEL --format onnx --out FILE`: a model runnable without headstart."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a saved model to ONNX: one graph from normalised input to probabilities",
        description="Writes FILE (backbone with tuned layers and merged adapters, head and "
        "softmax in one ONNX graph, dynamic batch axis), FILE's .preprocess.json (the "
        "preprocessing recipe and labels), for text models its .tokenizer/ folder, with "
        "--int8 a dynamically quantised .int8.onnx, and .parity.json: ONNX Runtime against "
        "PyTorch on real inputs (--data, or built-in sample photographs / sentences). "
        "Exits with 1 when the probabilities differ by more than --atol.",
    )
    p.add_argument("model", help="a model bundle folder (runs/NAME/model)")
    p.add_argument("--format", default="onnx", help="export format (onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="also write an int8 variant")
    p.add_argument("--data", help="parity inputs: an image folder, a table or a built-in set")
    p.add_argument("--parity-n", type=int, default=512,
                   help="at most this many --data examples for parity (0: all)")  # fmt: skip
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--batch-size", type=int, default=32, help="parity batch size")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest acceptable difference of probabilities")  # fmt: skip
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                   help="torch.onnx exporter (auto: dynamo, then TorchScript)")  # fmt: skip
    p.set_defaults(func=run)


def _mb(path: object) -> str:
    from pathlib import Path

    return f"{Path(str(path)).stat().st_size / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from ..bundle import read_meta
    from ..errors import ConfigError
    from ..export.onnx_export import check_exportable, check_format, check_out, export_bundle
    from ..export.parity import examples_from

    # Cheap checks first, so bad input fails before a model is loaded.
    check_format(args.format)
    meta = read_meta(args.model)
    check_exportable(meta, args.model)
    check_out(args.out)
    if args.parity_n < 0 or args.batch_size < 1:
        raise ConfigError(
            f"--parity-n must be >= 0 and --batch-size >= 1. Got {args.parity_n} and "
            f"{args.batch_size} instead."
        )
    examples = labels = source = None
    if args.data:
        columns = {
            "text_column": args.text_column,
            "image_column": args.image_column,
            "label_column": args.label_column,
        }
        examples, labels, source = examples_from(
            args.data, columns, list(meta["classes"]), args.parity_n
        )
    res = export_bundle(
        args.model,
        args.out,
        fmt=args.format,
        int8=args.int8,
        examples=examples,
        source=source,
        labels=labels,
        batch_size=args.batch_size,
        exporter=args.exporter,
        atol=args.atol,
    )
    par = res.parity
    print(f"wrote {res.model} ({_mb(res.model)}) in {res.export_seconds:.1f} s")
    if res.int8 is not None:
        print(f"wrote {res.int8} ({_mb(res.int8)})")
    print(f"wrote {res.recipe}" + (f" and {res.tokenizer}/" if res.tokenizer else ""))
    if res.adapters_merged:
        print(f"merged {res.adapters_merged} LoRA adapter layer(s) into the weights")
    print(f"parity on {par['source']}:")
    for which in ("onnx", "int8"):
        if which in par:
            v = par[which]
            print(
                f"  {which:5s} vs PyTorch: max abs difference of probabilities "
                f"{v['max_abs_diff']:.2e}, labels agree on {v['label_agreement']:.2%} "
                f"({par['n'] - v['labels_differing']}/{par['n']})"
            )
    if "accuracy" in par:
        acc = par["accuracy"]
        print("  accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print(f"recorded in {res.parity_file}")
    if not par["ok"]:
        print(
            f"headstart export: parity FAILED: max abs difference {par['onnx']['max_abs_diff']:.2e} "
            f"> --atol {args.atol:g} or labels agree on under 99.9%; the files are kept, "
            "but check them before use (try --exporter torchscript)"
        )
        return 1
    return 0
