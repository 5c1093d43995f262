"""One config tree: it round-trips through JSON and generates every `fit` flag (issue 10)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings

import pytest

from headstart.cli import fit as fit_cli
from headstart.cli.flags import config_from_args
from headstart.cli.main import build_parser
from headstart.config import SECTIONS, FitConfig, flat_names, section_fields
from headstart.errors import ConfigError


def _fit_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fit"]


def _other_value(f: dataclasses.Field, default):
    """A valid value different from the field's default (what a user would type)."""
    choices = f.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != default)
    typ = str(f.type)
    if typ.startswith("bool"):
        return not bool(default)
    if typ == "int | str":  # a count or a word (--test-size auto|all|N)
        return 50
    if "int" in typ:
        return 50 if default is None else 2 * default
    if "float" in typ:
        return 0.5 if not default else default / 2
    return "x-given"


def test_every_field_has_a_flag_with_help_and_its_default_and_every_flag_a_field():
    actions = {
        s: a for a in _fit_parser()._actions for s in (a.option_strings or [a.dest]) if a.help
    }
    names = flat_names()
    for flat, (section, name) in names.items():
        flag = name if flat == "data" else "--" + flat.replace("_", "-")
        assert flag in actions, f"no flag for {section}.{name}"
        assert "(default: " in actions[flag].help, f"{flag} does not show its default"
        assert len(actions[flag].help) > len("(default: x)") + 10, f"{flag} has no help text"
    fields = {"--" + f.replace("_", "-") for f in names} | {"data"}
    for a in _fit_parser()._actions:
        if not a.option_strings and a.dest != "data":
            continue
        flags = set(a.option_strings or [a.dest])
        if flags & {"-h", "--help"}:
            continue
        long = max(flags, key=len)
        if long.startswith("--no-"):
            long = "--" + long[5:]
        assert long in fields or long in fit_cli.CLI_ONLY, f"{long} maps to no config field"
    n_fields = sum(len(section_fields(c)) for c in (FitConfig, *SECTIONS))
    assert len(names) == n_fields  # one flat name per field: no two fields share a flag


def test_a_value_given_for_every_flag_lands_in_its_field():
    argv, expected = ["fit", "my-data"], {}
    for flat, (section, name) in flat_names().items():
        cls = FitConfig if section is None else next(s for s in SECTIONS if s.name == section)
        f = next(f for f in section_fields(cls) if f.name == name)
        if flat == "data":
            expected[(section, name)] = "my-data"
            continue
        default = getattr(cls(), name)
        value = _other_value(f, default)
        if f.metadata.get("duration"):
            argv += ["--" + flat.replace("_", "-"), "2m"]
            value = 120.0
        elif isinstance(value, bool):
            argv.append(("--" if value else "--no-") + flat.replace("_", "-"))
        else:
            argv += ["--" + flat.replace("_", "-"), str(value)]
        expected[(section, name)] = value
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, fit_cli.OPTIONS)
    for (section, name), value in expected.items():
        got = getattr(cfg if section is None else getattr(cfg, section), name)
        assert got == value, f"{section}.{name}: {got!r} != {value!r}"


def test_flags_left_out_keep_the_config_defaults():
    args = build_parser().parse_args(["fit"])
    assert config_from_args(args, fit_cli.OPTIONS) == FitConfig()


def test_the_config_round_trips_through_json_and_warns_on_unknown_keys():
    cfg = FitConfig.build(data="imdb", epochs=3, ladder_min_gain=0.01, time_budget=60.0)
    again = FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.finetune.epochs == 3 and again.ladder.min_gain == 0.01
    newer = cfg.to_dict()
    newer["finetune"]["some_future_knob"] = 1
    newer["another"] = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert FitConfig.from_dict(newer) == cfg
    said = " ".join(str(w.message) for w in caught)
    assert "some_future_knob" in said and "another" in said
    # no limit is standard JSON (null), not Python's non-standard Infinity, and reads back
    unlimited = FitConfig.build(data="imdb", time_budget=float("inf"))
    text = json.dumps(unlimited.to_dict(), allow_nan=False)
    assert '"time_budget_s": null' in text
    assert FitConfig.from_dict(json.loads(text)).time_budget_s == float("inf")


def test_bad_values_are_refused_with_the_parameter_named():
    with pytest.raises(
        ConfigError, match="'epochs' parameter of finetune must be a positive integer"
    ):
        FitConfig.build(epochs=0)
    with pytest.raises(ConfigError, match="'strategy' parameter of fit must be one of"):
        FitConfig.build(strategy="transfer")
    with pytest.raises(ConfigError, match=r"no setting 'epoch'.*epochs"):
        FitConfig.build(epoch=3)
