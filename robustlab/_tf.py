"""Import TensorFlow (and Keras) once, quietly.

TensorFlow's C++ side prints absl log lines (oneDNN, CUDA probing) to file descriptor 2 at import,
before any Python logging setting can stop them. robustlab's users read stderr for robustlab's own
messages, so the import runs with fd 2 pointed at /dev/null (not with ROBUSTLAB_DEBUG=1).
"""
from __future__ import annotations

import os
import sys
from typing import Any

_DONE = False


def import_tf() -> Any:
    """``tensorflow``, imported with its start-up chatter silenced."""
    global _DONE
    if _DONE or "tensorflow" in sys.modules:
        _DONE = True
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    debug = os.environ.get("ROBUSTLAB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    saved = None
    if not debug:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            saved = None
    try:
        import keras  # noqa: F401
        import tensorflow

        tensorflow.constant(0)  # first op: device probing happens here
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    _DONE = True
    return tensorflow


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN CPU kernels are on (the default; TF_ENABLE_ONEDNN_OPTS=0 turns them off)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false", "off", "no")


def _walk_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []) or []:
        out.append(layer)
        if getattr(layer, "layers", None):
            out.extend(_walk_layers(layer))
    return out


def gradient_kernel_hazard(model: Any) -> str | None:
    """A layer whose gradient crashes TensorFlow 2.21's oneDNN CPU kernels, or None.

    Measured here (TF 2.21.0, Keras 3.15, x86-64): the gradient through a 1x1 Conv2D with stride 2
    over 12 or fewer channels at 56x56 or more kills the process (``free(): invalid size``,
    segfault) whether taken w.r.t. the input or the weights; 16+ channels, 3x3 kernels, stride 1 or
    ``TF_ENABLE_ONEDNN_OPTS=0`` are fine. Forward passes are fine. Returns a description of the
    first such layer when oneDNN is on.
    """
    if not onednn_enabled():
        return None
    for layer in _walk_layers(model):
        if layer.__class__.__name__ not in ("Conv2D", "Convolution2D"):
            continue
        k = tuple(getattr(layer, "kernel_size", ()) or ())
        s = tuple(getattr(layer, "strides", ()) or ())
        if k != (1, 1) or not s or max(s) < 2:
            continue
        try:
            shape = tuple(layer.input.shape)  # (None, H, W, C)
        except Exception:  # noqa: BLE001 - a layer without a single known input
            continue
        if len(shape) != 4:
            continue
        h, w, c = shape[1], shape[2], shape[3]
        small_channels = (c is not None and c <= 12) or getattr(layer, "filters", 99) <= 12
        big_enough = h is None or w is None or max(h, w) >= 48
        if small_channels and big_enough:
            return f"layer {layer.name!r} (1x1 Conv2D, stride {max(s)}, {c} -> {layer.filters} channels at {h}x{w})"
    return None
