"""robustlab: how far can you trust a real-vs-AI-generated image detector?

The library API a notebook user calls (the ``robustlab`` command is a thin layer over it)::

    from robustlab import load_detector, open_dataset, evaluate
    det = load_detector("configs/detectors/my-detector.yaml")
    data = open_dataset("data/test")
    result = evaluate(det, data)                    # rows, per-image scores; nothing written
    run = run_evaluation("detector.yaml", "data/test", attacks=["fgsm:eps=8/255"], out="runs/x")

Every public name below is a function or class, never a module: the packages are named after
nouns of the domain (``robustlab.detector``, ``robustlab.attacks``, ``robustlab.evaluation``...),
the functions after verbs. TensorFlow is imported lazily, inside the functions that need it.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from robustlab.errors import PolicyFailed, RobustlabError, UsageError

__version__ = "0.2.0"

_EXPORTS = {
    "load_detector": "robustlab.detector.loading",
    "open_dataset": "robustlab.data",
    "evaluate": "robustlab.evaluation.pipeline",
    "plan_evaluation": "robustlab.evaluation.pipeline",
    "run_evaluation": "robustlab.evaluation.pipeline",
    "run_attacks": "robustlab.evaluation.pipeline",
    "select_threshold": "robustlab.evaluation.selection",
    "corrupt_dataset": "robustlab.corruptions.writer",
    "adv_train": "robustlab.training.run",
    "report_run": "robustlab.reporting.publish",
    "run_demo": "robustlab.demo",
}

__all__ = ["__version__", "RobustlabError", "UsageError", "PolicyFailed", *_EXPORTS]


def __getattr__(name: str) -> Any:  # lazy re-exports keep `import robustlab` light
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
