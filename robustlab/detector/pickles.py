"""Label encoders without running pickles: a pickle's references listed statically, and a restricted unpickler that accepts only what a scikit-learn LabelBinarizer holds.
"""
from __future__ import annotations

import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.detector.safety import JOBLIB_FIX
from robustlab.errors import RobustlabError

# --------------------------------------------------------------------------- pickles

# What a pickled scikit-learn LabelBinarizer references (numpy 1 and 2, pickle protocols 0-5).
_LABEL_BINARIZER = {
    ("sklearn.preprocessing._label", "LabelBinarizer"),
    ("sklearn.preprocessing.label", "LabelBinarizer"),
}
_NUMPY_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


def scan_pickle(path: "str | Path") -> list[str]:
    """The globals (``module.name``) a pickle file references, read from its opcodes (nothing runs)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RobustlabError(f"cannot read ({exc.__class__.__name__})", thing=path, fix="check the path") from None
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"):
                strings.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                v = memo.get(int(arg))
                if isinstance(v, str):
                    strings.append(v)
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                else:
                    found.append("?")
    except Exception as exc:  # noqa: BLE001 - any opcode error means a broken file
        if any(g.startswith("joblib.") for g in found):  # joblib writes raw array bytes after the pickle
            raise RobustlabError("is a joblib file, not a plain pickle", thing=path, fix=JOBLIB_FIX) from None
        raise RobustlabError(f"not a readable pickle ({exc.__class__.__name__}: {' '.join(str(exc).split())[:80]})", thing=path, fix="save the LabelBinarizer again with pickle.dump") from None
    seen: list[str] = []
    for g in found:
        if g not in seen:
            seen.append(g)
    return seen


@dataclass(frozen=True)
class LabelEncoding:
    """What a LabelBinarizer says: ``classes`` in its ``classes_`` order (sorted when fitted)."""

    classes: tuple[Any, ...]
    y_type: str | None
    pos_label: Any
    neg_label: Any


class _LabelBinarizerRecord:
    """Stands in for sklearn's LabelBinarizer while unpickling: keeps the state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected LabelBinarizer state")
        self.__dict__.update(state)


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    if cls is not _LabelBinarizerRecord or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor used for something else than a LabelBinarizer")
    return object.__new__(cls)


class _LabelBinarizerUnpickler(pickle.Unpickler):
    """Accepts only the classes a pickled LabelBinarizer holds."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _LABEL_BINARIZER:
            return _LabelBinarizerRecord
        if (module, name) in _NUMPY_ALLOWED:
            if name == "object":
                return object
            if name == "_reconstructor":
                return _reconstructor
            if module == "_codecs":
                import codecs

                return codecs.encode
            if module == "numpy":
                return getattr(np, name)
            import importlib

            for candidate in (module.replace("numpy.core.", "numpy._core."), module.replace("numpy._core.", "numpy.core.")):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids")


def read_label_binarizer(path: "str | Path") -> LabelEncoding:
    """``classes_`` and friends of a pickled scikit-learn LabelBinarizer, read without running code.

    Anything else in the pickle (another class, a function, a joblib array wrapper) is refused
    with a one-line RobustlabError, even with --trust-model.
    """
    path = Path(path)
    globs = scan_pickle(path)
    if any(g.startswith("joblib.") for g in globs):
        raise RobustlabError("is a joblib file, not a plain pickle", thing=path, fix=JOBLIB_FIX)
    try:
        with open(path, "rb") as fh:
            obj = _LabelBinarizerUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        other = [g for g in globs if tuple(g.rsplit(".", 1)) not in _LABEL_BINARIZER | _NUMPY_ALLOWED]
        shown = ", ".join(other[:3]) if other else str(exc)
        raise RobustlabError(
            f"the pickle holds {shown}, not only a scikit-learn LabelBinarizer; robustlab never unpickles other classes",
            thing=path,
            fix="save just the LabelBinarizer (pickle.dump(lb, f)), or drop the file and set classes: in the spec",
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated or odd pickles
        raise RobustlabError(
            f"not a readable LabelBinarizer pickle ({exc.__class__.__name__}: {' '.join(str(exc).split())[:80]})",
            thing=path,
            fix="save the LabelBinarizer again with pickle.dump, or set classes: in the spec",
        ) from None
    if not isinstance(obj, _LabelBinarizerRecord) or not hasattr(obj, "classes_"):
        raise RobustlabError(
            f"holds a {type(obj).__name__}, not a fitted LabelBinarizer",
            thing=path,
            fix="save the fitted LabelBinarizer (pickle.dump(lb, f)), or set classes: in the spec",
        )
    classes = tuple(c.item() if hasattr(c, "item") else c for c in np.asarray(obj.classes_).reshape(-1))
    pos = getattr(obj, "pos_label", 1)
    neg = getattr(obj, "neg_label", 0)
    return LabelEncoding(classes, getattr(obj, "y_type_", None), pos.item() if hasattr(pos, "item") else pos, neg.item() if hasattr(neg, "item") else neg)
