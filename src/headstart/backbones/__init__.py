"""Backbone registry and contract."""

from .base import Backbone, ImagePreprocess, LayerGroup, TextPreprocess, WeightsInfo
from .registry import DEFAULT_BACKBONE, KNOWN, list_backbones, load_backbone, parse_name

__all__ = [
    "DEFAULT_BACKBONE",
    "KNOWN",
    "Backbone",
    "ImagePreprocess",
    "LayerGroup",
    "TextPreprocess",
    "WeightsInfo",
    "list_backbones",
    "load_backbone",
    "parse_name",
]
