"""Corruptions as evaluation variants, and parsing of jpeg:1-5-style strings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from robustlab.corruptions.functions import (
    CORRUPTIONS,
    MIN_SIDE,
    SEVERITIES,
    ImageTooSmall,
    check_size,
    corrupt,
    known,
)
from robustlab.enums import SetKind
from robustlab.errors import RobustlabError
from robustlab.results import Delivery, VariantOutcome

# --------------------------------------------------------------------------- variants for evaluate


@dataclass(frozen=True)
class CorruptionVariant:
    """One corruption at one severity, an evaluation variant (:class:`robustlab.results.Variant`).

    ``kind`` is SetKind.CORRUPTED (applied to every image), ``variant`` the corruption name,
    ``param`` ``severity=3``.
    """

    name: str
    severity: int

    def __post_init__(self) -> None:
        if self.name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.name!r}; known: {known()}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is outside 1..5")

    @property
    def kind(self) -> SetKind:
        return SetKind.CORRUPTED

    @property
    def variant(self) -> str:
        return self.name

    @property
    def param(self) -> str:
        return f"severity={self.severity}"

    def check_input_size(self, size: Sequence[int], *, thing: str | None = None) -> None:
        """RobustlabError (exit 2) when images of ``size`` (H, W) are too small for the corruption."""
        try:
            check_size(size)
        except ImageTooSmall as exc:
            raise RobustlabError(f"{exc} (--corruption {self.name})", thing=thing, fix=f"corrupt images of at least {MIN_SIDE}x{MIN_SIDE} px") from None

    def apply(self, detector: Any, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Delivery:
        """uint8 (B, H, W, 3) -> the batch with every image corrupted (labels unused)."""
        out = np.empty_like(x)
        if len(x):
            self.check_input_size(x.shape[1:3])
        for i in range(len(x)):
            out[i] = corrupt(x[i], self.name, self.severity, rng)
        return Delivery(out)

    def diagnostics(self, outcome: VariantOutcome, threshold: float) -> list[str]:
        """Warn when the corruption changed no pixel of any image (nothing was tested)."""
        if outcome.n and float(outcome.linf.max()) == 0.0:
            return [f"{self.name} {self.param} changed no pixel of any image; its row equals the clean row"]
        return []

    def summary(self, outcome: VariantOutcome) -> None:
        """Corruptions add nothing to run.json beyond their rows."""
        return None


_SEVERITY_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_severities(text: str, *, thing: str | None = None) -> list[int]:
    """``1-5`` / ``3`` / ``1,3,5`` / ``1-2,5`` -> sorted unique severities; RobustlabError outside 1..5."""
    out: set[int] = set()
    for part in str(text).split(","):
        m = _SEVERITY_RE.match(part)
        if not m:
            raise RobustlabError(f"severity {part.strip()!r} is not a number or a range", thing=thing, fix="write severities like 3, 1-5 or 1,3,5")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > hi:
            raise RobustlabError(f"severity range {part.strip()} runs backwards", thing=thing, fix="write the range low-high, e.g. 1-5")
        for s in (lo, hi):
            if s not in SEVERITIES:
                raise RobustlabError(f"severity {s} is outside 1..5", thing=thing, fix="severities run from 1 (mild) to 5 (severe)")
        out.update(range(lo, hi + 1))
    return sorted(out)


def parse_corruptions(texts: Sequence[str], *, default_severities: str = "1-5") -> list[CorruptionVariant]:
    """``["jpeg:1-5", "blur:3", "resize:1,3,5"]`` -> one :class:`CorruptionVariant` per name and severity.

    A name without ``:`` takes ``default_severities``. Order: names as first given, severities ascending;
    a name given twice is merged. Unknown names and severities outside 1..5 raise RobustlabError (exit 2).
    """
    wanted: dict[str, set[int]] = {}
    for text in texts:
        name, sep, sev = str(text).partition(":")
        name = name.strip().lower()
        thing = f"--corruption {text}"
        if name not in CORRUPTIONS:
            raise RobustlabError(f"unknown corruption {name!r}", thing=thing, fix=f"use one of: {known()} (e.g. jpeg:1-5)")
        wanted.setdefault(name, set()).update(parse_severities(sev if sep else default_severities, thing=thing))
    return [CorruptionVariant(name, s) for name, sevs in wanted.items() for s in sorted(sevs)]
