"""Command-line flags generated from the config tree (:mod:`headstart.config`).

Every field of a config section becomes one flag with the field's help text and its default
shown; the parsed value is ``None`` when the flag was not given, so the config keeps its own
default (and a caller can tell "not given" from "given the default"). Booleans get
``--x/--no-x``; a field whose metadata says ``duration`` takes ``90s``, ``20m`` or ``1.5h``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import SECTIONS, FitConfig, Section, flat_names, parse_duration, section_fields


@dataclass(frozen=True)
class Option:
    """One generated flag: where its value goes in the config tree."""

    flag: str
    dest: str
    section: str | None  # None: a field of FitConfig itself
    field: str
    duration: bool = False


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_config_arguments(
    parser: argparse.ArgumentParser, root: type[FitConfig] = FitConfig
) -> list[Option]:
    """Add one flag per config field to ``parser`` (a group per section); return the map."""
    sections: list[tuple[str | None, type[Section]]] = [(None, root)]
    sections += [(s.name, s) for s in SECTIONS]
    names = {where: name for name, where in flat_names().items()}
    options: list[Option] = []
    for sec, cls in sections:
        title = (cls.__doc__ or "").strip().splitlines()[0]
        group = parser.add_argument_group(sec or "run", title)
        for f in section_fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            shown = f.metadata.get("shown") or _shown(default)
            help_ = f"{f.metadata.get('help', '')} (default: {shown})"
            if f.metadata.get("positional"):
                group.add_argument(f.name, nargs="?", default=None, help=help_)
                options.append(Option(f.name, f.name, sec, f.name))
                continue
            dest = names[(sec, f.name)]
            flag = "--" + dest.replace("_", "-")
            kw: dict[str, Any] = {"dest": dest, "default": None, "help": help_}
            typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if "parse" in f.metadata:
                kw["type"] = f.metadata["parse"]
            elif "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
            elif typ.startswith("bool"):
                kw["action"] = argparse.BooleanOptionalAction
            elif f.metadata.get("duration"):
                kw["metavar"] = "DURATION"
            elif typ.startswith("int"):
                kw["type"] = int
            elif typ.startswith("float"):
                kw["type"] = float
            group.add_argument(flag, **kw)
            options.append(
                Option(flag, dest, sec, f.name, duration=bool(f.metadata.get("duration")))
            )
    return options


def config_from_args(args: argparse.Namespace, options: list[Option]) -> FitConfig:
    """The config the parsed flags describe: given flags over the config's defaults."""
    flat: dict[str, Any] = {}
    for o in options:
        value = getattr(args, o.dest, None)
        if value is not None:
            flat[o.dest] = parse_duration(str(value)) if o.duration else value
    return FitConfig.build(**flat)
