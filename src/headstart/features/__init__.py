"""Features: preprocessing that travels with the weights, the content-addressed feature cache
(:mod:`.cache`) and the ONNX Runtime engine that runs a backbone on CPU (:mod:`.onnx_runtime`)."""

from .cache import ENGINES, FeatureSet, cache_key, extract_features, features_in_memory

__all__ = ["ENGINES", "FeatureSet", "cache_key", "extract_features", "features_in_memory"]
