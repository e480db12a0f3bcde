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
        import tensorflow
        import keras  # noqa: F401

        tensorflow.constant(0)  # first op: device probing happens here
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    _DONE = True
    return tensorflow
