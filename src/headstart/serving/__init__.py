"""Serving a model bundle over HTTP: ``headstart serve MODEL`` (FastAPI + uvicorn).

:func:`create_app` builds the app (``/health``, ``/metadata``, ``/predict``, ``/docs``);
:class:`MicroBatcher` groups concurrent requests into one forward pass. FastAPI is an optional
dependency (``pip install 'headstart[serve]'``), so ``headstart`` itself never imports this
package.
"""

from __future__ import annotations

from .app import create_app, load_for_serving
from .batcher import MicroBatcher
from .inputs import Limits, RequestError

__all__ = ["Limits", "MicroBatcher", "RequestError", "create_app", "load_for_serving"]
