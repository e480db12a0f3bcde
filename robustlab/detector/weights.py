"""Weight statistics of a model file and of a loaded model (the load-time check that the weights arrived).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustlab.detector.safety import HDF5_SIGNATURE, WEIGHTS_MEMBER, _open_h5, _read_member, _signature
from robustlab.errors import RobustlabError

# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightStats:
    """Floating-point weight values: how many arrays and values, their sum and sum of squares."""

    arrays: int
    values: int
    total: float
    squares: float

    def matches(self, other: "WeightStats") -> bool:
        if self.values != other.values:
            return False
        scale = max(1.0, abs(self.squares), abs(other.squares))
        return abs(self.total - other.total) <= 1e-5 * max(1.0, self.values**0.5) * scale**0.5 and abs(self.squares - other.squares) <= 1e-5 * scale


def _stats(arrays: Iterator[np.ndarray]) -> WeightStats:
    """Stats over floating-point arrays, one array in memory at a time."""
    n = v = 0
    total = squares = 0.0
    for a in arrays:
        if not np.issubdtype(a.dtype, np.floating):
            continue
        a64 = np.asarray(a, np.float64)
        n += 1
        v += int(a64.size)
        total += float(a64.sum())
        squares += float(np.square(a64).sum())
    return WeightStats(n, v, total, squares)


_SKIP_GROUPS = {"optimizer_weights", "optimizer", "_optimizer"}


def file_weight_stats(path: "str | Path", fmt: str) -> WeightStats | None:
    """Weight values stored in an ``.h5`` (model or weights) or ``.keras`` file; None if unknown."""
    import h5py

    path = Path(path)
    if fmt == "keras":
        try:
            with zipfile.ZipFile(path) as z:
                if "model.weights.h5" not in z.namelist():
                    return None
                data = io.BytesIO(_read_member(z, "model.weights.h5", path, *WEIGHTS_MEMBER))
        except zipfile.BadZipFile:
            raise RobustlabError("truncated or corrupt .keras archive (bad zip file)", thing=path, fix="download or copy the file again") from None
        f = _open_h5(data, path)
    else:
        if _signature(path) != HDF5_SIGNATURE:
            raise RobustlabError("not an HDF5 weights file", thing=path, fix="give the .h5 file written by model.save_weights()")
        f = _open_h5(path, path)
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        names: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if name.split("/")[0] not in _SKIP_GROUPS and isinstance(obj, h5py.Dataset) and obj.shape is not None and np.issubdtype(obj.dtype, np.floating):
                names.append(name)

        def arrays() -> Iterator[np.ndarray]:
            for name in names:
                try:
                    yield root[name][()]
                except OSError:
                    raise RobustlabError(f"weight array {name} cannot be read (truncated or corrupt file)", thing=path, fix="download or copy the file again") from None

        root.visititems(visit)
        return _stats(arrays())


def model_weight_stats(model: Any) -> WeightStats:
    """Weight values of a loaded Keras (3 or 2) model."""
    return _stats(np.asarray(w.numpy()) for w in model.weights)
