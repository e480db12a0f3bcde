"""Functions robustlab ships for the Lambda layers of well-known detectors.

A Lambda layer saved with a model holds marshalled Python bytecode: loading it runs code from the
file, and fails outright when the file was written by another Python version ("bad marshal data").
Naming one of these functions for the layer in the spec's ``custom_objects`` replaces the file's
bytecode with robustlab's own code, so the model loads without ``--trust-model``::

    custom_objects:
      RescaleGAP: robustlab.layers:rescale_gap     # EfficientNetB7 + attention: x[0] / x[1]
"""
from __future__ import annotations

from typing import Any, Sequence


def rescale_gap(tensors: Sequence[Any]) -> Any:
    """``tensors[0] / tensors[1]``: attention-weighted global average pooling rescaled by the mean mask.

    ``tensors``: ``[gap_features (N, C), gap_mask (N, C)]`` float32 -> float32 (N, C).
    """
    return tensors[0] / tensors[1]


BUILTIN = {"rescale_gap": rescale_gap}
