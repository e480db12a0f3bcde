"""Seeded, stratified subsets of a data set (the attacked share of an evaluation, fine-tuning subsets).
"""
from __future__ import annotations

import numpy as np


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded ``fraction`` of the set (at least one per class)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is outside (0, 1]")
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng([seed, 0x5EED])
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
