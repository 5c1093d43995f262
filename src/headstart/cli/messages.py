"""Error messages in the words of the command line.

The library's errors name Python arguments (``on_error='skip'``, ``label_column=...``, "the
'image_size' parameter of backbone"), which is right for a caller of the API and wrong for
someone at a shell: there the fix is a flag. :func:`cli_message` rewrites one message into
flags, so every verb shares one policy (``--skip-bad-files`` skips unreadable inputs, columns
are ``--label-column`` ...) without each error being written twice.
"""

from __future__ import annotations

import re
import sys
from typing import Any

__all__ = ["cli_message", "report_skipped"]

#: Python keywords → the flag that sets them, for the arguments messages mention.
_KEYWORDS = (
    "label_column",
    "text_column",
    "image_column",
    "audio_column",
    "train_size",
    "test_size",
    "val_fraction",
    "test_fraction",
)
_SKIP = re.compile(r"(load (the data )?with )?on_error=['\"]skip['\"]")
_KEYWORD = re.compile(r"\b(" + "|".join(_KEYWORDS) + r")=(\.\.\.|'[^']*'|\"[^\"]*\"|[\w.]+)")
_PARAM = re.compile(r"The '(\w+)' parameter of (\w+) must be")
_CLI_ALSO = re.compile(r" \(CLI: --[\w-]+\)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _param_flag(field: str, section: str) -> str:
    """The flag of config field `field` in `section` (``fit`` for the top level)."""
    from ..config import flat_names

    for flat, (sec, name) in flat_names().items():
        if name == field and (sec or "fit") == section:
            return _flag(flat)
    return _flag(field)


def cli_message(text: str) -> str:
    """`text` with Python argument names replaced by the flags that set them."""
    text = _CLI_ALSO.sub("", text)
    text = _SKIP.sub(lambda m: "pass --skip-bad-files" if m.group(1) else "--skip-bad-files", text)

    def keyword(m: re.Match[str]) -> str:
        value = m.group(2)
        if value == "...":
            return f"{_flag(m.group(1))} NAME"
        return f"{_flag(m.group(1))} {value.strip(chr(39) + chr(34))}"

    text = _KEYWORD.sub(keyword, text)
    return _PARAM.sub(lambda m: f"{_param_flag(m.group(1), m.group(2))} must be", text)


def report_skipped(*examples: Any) -> int:
    """Print each input ``--skip-bad-files`` left out (``meta["skipped"]``) to stderr, with
    the count; return the count. Nothing is skipped silently."""
    skipped = [item for ex in examples if ex is not None for item in ex.meta.get("skipped") or []]
    for where, why in skipped:
        print(f"skipped {where}: {why}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} unreadable input(s) (--skip-bad-files)", file=sys.stderr)
    return len(skipped)
