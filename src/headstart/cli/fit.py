"""`headstart fit DATA`: train a model on a data set and write a run folder.

Every flag but the few in :data:`CLI_ONLY` is generated from :class:`~headstart.config.FitConfig`
(:mod:`headstart.cli.flags`): the config tree is the one place a default or a help line lives.
"""

from __future__ import annotations

import argparse
import sys

from ..config import FitConfig, flat_names
from .flags import Option, add_config_arguments, config_from_args

#: Flags that are not fields of FitConfig, and why.
CLI_ONLY = {
    "--task": "selects the pipeline (classification, or Whisper transcription with its own config)",
    "--general": "transcription only: the general-speech table for the forgetting measure",
    "--audio-column": "transcription only: the audio-path column of its tables",
    "--quiet": "display only: no progress bars",
}
OPTIONS: list[Option] = []
#: Settings of the first fine-tuning rung that ``--ladder-first-rung domain`` chooses itself:
#: one given on the command line says how the user wants that rung run, so it runs as given
#: (``fixed``) unless ``--ladder-first-rung`` is given too.
FIRST_RUNG_SETTINGS = (
    ("finetune", "unfreeze"),
    ("finetune", "lr_ratio"),
    ("finetune", "epochs"),
    ("finetune", "patience"),
    ("finetune", "bn"),
    ("ladder", "first_unfreeze"),
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="train on a data set (image folder, table file or built-in name)",
        description="Train on DATA and write config.json, metrics.json, decisions.json, "
        "report.html and model/ to --out. Re-running the same command into the same --out "
        "reuses the feature cache and resumes an interrupted fine-tuning from its last epoch.",
    )
    OPTIONS[:] = add_config_arguments(p)
    extra = p.add_argument_group("pipeline and display")
    extra.add_argument(
        "--task",
        default="classification",
        choices=("classification", "transcription"),
        help="classification (default), or transcription: adapt a Whisper speech recogniser "
        "to a table of (audio path, transcript) rows (same as `headstart transcribe fit`)",
    )
    extra.add_argument(
        "--general", help="--task transcription: a general-speech table (forgetting)"
    )
    extra.add_argument("--audio-column", help="--task transcription: the audio-path column")
    extra.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..fit import fit_run

    if args.data is None:
        args.data = "fashion-mnist"
    if args.task == "transcription":
        from .transcribe import fit_from_fit_args

        return fit_from_fit_args(args)
    cfg = config_from_args(args, OPTIONS)
    note = first_rung_as_given(args, cfg)
    if note and not args.quiet:
        print(note, file=sys.stderr)
    result = fit_run(cfg, progress=not args.quiet)
    print(result.summary)
    print(f"  run folder: {result.out} (report.html, metrics.json, decisions.json, model/)")
    return 0


def first_rung_as_given(args: argparse.Namespace, cfg: FitConfig) -> str | None:
    """Run the first fine-tuning rung as the command line says (``cfg.ladder.first_rung =
    "fixed"``) when one of its settings was given and ``--ladder-first-rung`` was not; the
    line that says so, or None. Flags not given parse to None (:mod:`headstart.cli.flags`)."""
    flat = {where: name for name, where in flat_names().items()}
    if getattr(args, flat[("ladder", "first_rung")], None) is not None:
        return None
    given = [flat[w] for w in FIRST_RUNG_SETTINGS if getattr(args, flat[w], None) is not None]
    if not given or cfg.strategy != "auto" or cfg.ladder.first_rung == "fixed":
        return None
    cfg.ladder.first_rung = "fixed"
    flags = ", ".join("--" + g.replace("_", "-") for g in given)
    return (
        f"headstart fit: {flags} given, so the first fine-tuning rung runs with the fine-tuning "
        "flags as given (--ladder-first-rung fixed); --ladder-first-rung domain lets the "
        "measured domain choose it instead"
    )
