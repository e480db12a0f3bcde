"""robustlab: how far can you trust a real-vs-AI-generated image detector?

The library API a notebook user calls (the ``robustlab`` command is a thin layer over it)::

    from robustlab import load_detector, open_dataset, evaluate
    det = load_detector("configs/detectors/my-detector.yaml")
    data = open_dataset("data/test")
    result = evaluate(det, data, out="runs/clean")

TensorFlow is imported lazily, inside the functions that need it.
"""
from __future__ import annotations

__version__ = "0.1.0"

from robustlab.errors import RobustlabError, UsageError, PolicyFailed  # noqa: E402

__all__ = [
    "__version__",
    "RobustlabError",
    "UsageError",
    "PolicyFailed",
    "load_detector",
    "open_dataset",
    "evaluate",
]


def __getattr__(name: str):  # lazy re-exports keep `import robustlab` light
    if name == "load_detector":
        from robustlab.detector import load_detector

        return load_detector
    if name == "open_dataset":
        from robustlab.data import open_dataset

        return open_dataset
    if name == "evaluate":
        from robustlab.evaluate import evaluate

        return evaluate
    raise AttributeError(name)
