"""The FastAPI application that serves one model bundle: ``/health``, ``/metadata``, ``/predict``.

    from headstart.serving import create_app
    app = create_app("runs/digits/model", max_batch=32, max_wait_ms=5)
    # uvicorn.run(app), or `headstart serve runs/digits/model`

The model is loaded once, when the app is made, so a server that answers ``/health`` is ready
to predict. ``POST /predict`` parses and decodes a request's inputs (:mod:`.inputs`), hands
them to the :class:`~.batcher.MicroBatcher` and returns a label and the probability of every
class per input, in the shape ``headstart predict`` prints. OpenAPI docs are at ``/docs``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._env import versions
from ..errors import ConfigError
from ..estimator import TransferClassifier, load_model
from .batcher import MicroBatcher
from .http import BodySizeLimit, install_error_handlers
from .inputs import JSON_FIELD, Inputs, Limits, RequestError, check_files, parse_json


class Prediction(BaseModel):
    input: str
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ErrorBody(BaseModel):
    error: str
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what}
    for code, what in {
        400: "empty body or invalid JSON",
        413: "body over --max-body-mb, or more inputs than --max-inputs",
        415: "neither JSON nor multipart/form-data",
        422: "wrong modality, undecodable file, invalid base64, missing field",
    }.items()
}

_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "one field, by the model's modality (see GET /metadata)",
                "properties": {
                    "texts": {"type": "array", "items": {"type": "string"}},
                    "images": {
                        "type": "array",
                        "items": {"type": "string", "format": "byte"},
                        "description": "base64 of each image file (data: URLs accepted)",
                    },
                    "audio": {"type": "array", "items": {"type": "string", "format": "byte"}},
                },
            },
            "example": {"texts": ["a wonderful film"]},
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
            }
        },
    },
}


def load_for_serving(model: str | Path | TransferClassifier) -> TransferClassifier:
    """The classifier to serve: a fitted estimator as given, or a bundle folder loaded."""
    if isinstance(model, TransferClassifier):
        return model
    from ..asr.bundle import is_transcription_bundle

    if is_transcription_bundle(model):
        raise ConfigError(
            f"{model} is a transcription bundle; headstart serve serves classifiers. Use "
            "`headstart transcribe` for speech-to-text."
        )
    return load_model(model)


def create_app(
    model: str | Path | TransferClassifier,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    limits: Limits | None = None,
) -> FastAPI:
    """A FastAPI app serving ``model`` (a bundle folder or a fitted classifier)."""
    clf = load_for_serving(model)
    limits = limits or Limits()
    if limits.max_inputs < 1 or limits.max_body_bytes < 1:
        raise ConfigError(
            f"--max-inputs and --max-body-mb must be positive; got {limits.max_inputs} inputs "
            f"and {limits.max_body_bytes} bytes"
        )
    modality: Any = clf.modality_
    if modality not in JSON_FIELD:
        raise ConfigError(
            f"headstart serve takes image, text and audio models; this one reads {modality!r} "
            "inputs. Use `headstart predict` for it."
        )
    classes = [str(c) for c in clf.classes_]
    meta: dict[str, Any] = getattr(clf, "bundle_meta_", {})

    def predict(items: list[Any]) -> np.ndarray:
        from ..data.base import Examples

        examples = Examples(modality, items, np.full(len(items), -1), list(classes), name="serve")
        return clf.predict_proba(examples, cache=False)

    batcher = MicroBatcher(predict, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    name = meta.get("backbone", {}).get("name") or clf.backbone_.name
    app = FastAPI(
        title="headstart model server",
        description=f"A {modality} classifier on {name} with {len(classes)} labels. "
        "POST /predict; GET /metadata tells what to send.",
        version=versions()["headstart"],
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    install_error_handlers(app)
    serving = {
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "max_inputs": limits.max_inputs,
        "max_body_bytes": limits.max_body_bytes,
    }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and readiness (the model is loaded before the server listens), plus what
        the micro-batcher has done."""
        return {
            "status": "ok",
            "uptime_s": round(time.time() - started, 1),
            "batching": batcher.stats.to_dict(),
        }

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """Labels, modality and how to send inputs, backbone, preprocessing, head, versions."""
        backbone = meta.get("backbone", {})
        return {
            "labels": classes,
            "modality": modality,
            "input_field": JSON_FIELD[modality],
            "backbone": {
                k: backbone.get(k)
                for k in ("name", "pretrained", "weights", "pooling", "feature_dim")
            }
            | {"name": name},
            "preprocessing": backbone.get("preprocess"),
            "head": meta.get("head", {}).get("name", clf.head),
            "strategy": getattr(clf, "strategy_", clf.strategy),
            "versions": {"trained_with": meta.get("versions", {}), "serving": versions()},
            "serving": serving,
        }

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={"requestBody": _REQUEST_BODY},
    )
    async def predict_route(request: Request) -> PredictResponse:
        """A label and the probability of each label per input, in the inputs' order."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        with tempfile.TemporaryDirectory(prefix="headstart-serve-") as tmp:
            if kind == "multipart/form-data":
                inputs = await _multipart(request, modality, limits, Path(tmp))
            elif kind in ("application/json", ""):
                body = await request.body()
                inputs = await run_in_threadpool(parse_json, body, modality, limits, Path(tmp))
            else:
                raise RequestError(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {kind!r} is not accepted: send application/json or "
                    "multipart/form-data",
                )
            proba = await batcher.submit(inputs.items)
        return PredictResponse(
            predictions=[
                Prediction(
                    input=name,
                    label=classes[int(np.argmax(p))],
                    probabilities={c: float(v) for c, v in zip(classes, p, strict=True)},
                )
                for name, p in zip(inputs.names, proba, strict=True)
            ]
        )

    return app


async def _multipart(request: Request, modality: str, limits: Limits, workdir: Path) -> Inputs:
    if modality == "text":
        from .inputs import wrong_modality

        raise wrong_modality(modality, "multipart/form-data files")
    try:
        form = await request.form(max_files=limits.max_inputs + 1, max_fields=limits.max_inputs)
    except StarletteHTTPException as exc:  # the multipart parser's refusals
        too_many = "Too many" in str(exc.detail)
        raise RequestError(
            413 if too_many else 400,
            "too_many_inputs" if too_many else "invalid_multipart",
            f"{exc.detail} (this server takes at most {limits.max_inputs} inputs per request, "
            "headstart serve --max-inputs)",
        ) from exc
    try:
        files = []
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise RequestError(
                    422,
                    "unexpected_field",
                    f"form field {key!r} is text; send each input as a file part",
                )
            files.append((value.filename or key, await value.read()))
    finally:
        await form.close()
    if not files:
        raise RequestError(
            400, "empty_body", 'the multipart body holds no files; send curl -F "files=@a.png"'
        )
    return await run_in_threadpool(check_files, files, modality, limits, workdir)
