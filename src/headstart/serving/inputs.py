"""From an HTTP request body to model inputs, refusing each kind of bad input with a 4xx.

Texts arrive as JSON (``{"texts": [...]}``); images and audio clips as multipart file parts or
as base64 strings in JSON (``{"images": [...]}``, ``{"audio": [...]}``). Every file is written
to a per-request temporary folder and fully decoded here, before it joins a batch, so a
corrupt upload is answered with a 422 naming it instead of failing the batch it would share;
the batch then reads the same files through the same code as ``headstart predict``, which is
what makes the server's answers identical to the command's.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

#: The JSON field that carries each modality's inputs.
JSON_FIELD = {"text": "texts", "image": "images", "audio": "audio"}


class RequestError(DataError):
    """A request the server refuses: ``status`` is the HTTP code, ``code`` a stable name for
    the problem (``"undecodable_image"``), the message says what was wrong and how to fix it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, set by ``headstart serve --max-inputs / --max-body-mb``."""

    max_inputs: int = 64
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass
class Inputs:
    """Decoded-and-checked inputs of one request: texts, or paths of files in its temp folder."""

    items: list[Any]
    names: list[str]


def _how_to_send(modality: str) -> str:
    if modality == "text":
        return 'send JSON {"texts": ["first text", ...]}'
    field = JSON_FIELD[modality]
    return (
        f'send the files as multipart/form-data parts (curl -F "files=@a.png"), or JSON '
        f'{{"{field}": ["<base64 of the file>", ...]}}'
    )


def wrong_modality(modality: str, sent: str) -> RequestError:
    return RequestError(
        422,
        "wrong_modality",
        f"this model classifies {modality} inputs but the request sent {sent}; "
        f"{_how_to_send(modality)}",
    )


def check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError(422, "no_inputs", "the request holds no inputs: nothing to predict")
    if n > limits.max_inputs:
        raise RequestError(
            413,
            "too_many_inputs",
            f"the request holds {n} inputs; this server takes at most {limits.max_inputs} per "
            "request (headstart serve --max-inputs): split it into several requests",
        )


def parse_json(body: bytes, modality: str, limits: Limits, workdir: Path) -> Inputs:
    """Inputs from a JSON body (texts, or base64-encoded files)."""
    if not body.strip():
        raise RequestError(
            400, "empty_body", f"the request body is empty; {_how_to_send(modality)}"
        )
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    field = JSON_FIELD[modality]
    if not isinstance(doc, dict):
        raise RequestError(
            422, "invalid_body", f"the JSON body must be an object; {_how_to_send(modality)}"
        )
    if field not in doc:
        other = [k for k in doc if k in JSON_FIELD.values()]
        if other:
            raise wrong_modality(modality, f'"{other[0]}"')
        raise RequestError(
            422,
            "missing_field",
            f"the JSON body has no {field!r} field (it has {sorted(doc)[:5]}); "
            f"{_how_to_send(modality)}",
        )
    values = doc[field]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RequestError(
            422, "invalid_body", f"{field!r} must be a list of strings; {_how_to_send(modality)}"
        )
    check_count(len(values), limits)
    if modality == "text":
        for i, text in enumerate(values):
            if not text.strip():
                raise RequestError(422, "empty_text", f"texts[{i}] is empty or blank")
        return Inputs(list(values), [f"texts[{i}]" for i in range(len(values))])
    files = []
    for i, value in enumerate(values):
        data = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            files.append((f"{field}[{i}]", base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise RequestError(
                422,
                "invalid_base64",
                f"{field}[{i}] is not valid base64 ({exc}): encode the "
                "file's bytes with base64 (a data: URL prefix is accepted)",
            ) from exc
    return check_files(files, modality, limits, workdir)


def check_files(
    files: list[tuple[str, bytes]], modality: str, limits: Limits, workdir: Path
) -> Inputs:
    """Write each ``(name, bytes)`` to ``workdir`` and decode it completely."""
    if modality == "text":
        raise wrong_modality(modality, "files")
    check_count(len(files), limits)
    paths = []
    for i, (name, data) in enumerate(files):
        if not data:
            raise RequestError(422, "empty_file", f"input {i} ({name}) is an empty file (0 bytes)")
        path = workdir / f"input-{i}"
        path.write_bytes(data)
        _decode(path, name, i, modality)
        paths.append(str(path))
    return Inputs(paths, [name for name, _ in files])


def _decode(path: Path, name: str, i: int, modality: str) -> None:
    if modality == "image":
        from ..data.images import image_problem

        problem = image_problem(path, decode=True)
        if problem:
            raise RequestError(
                422,
                "undecodable_image",
                f"input {i} ({name}) cannot be decoded as an image: {problem}. Send PNG, JPEG, "
                "BMP, GIF, TIFF or WebP bytes",
            )
    else:
        from ..data.audio import read_audio

        try:
            read_audio(path, source=name)
        except DataError as exc:
            message = str(exc).replace(str(path), name)
            raise RequestError(
                422, "undecodable_audio", f"input {i} ({name}) cannot be used: {message}"
            ) from exc
