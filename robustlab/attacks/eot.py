"""Laundering chains (``jpeg:50-95+resize:0.5-1.0``): the real Pillow round trips applied to
delivered images, and their differentiable stand-in for Expectation over Transformation (EOT).

A chain is a sequence of stages, each a transform with a range of its parameter drawn uniformly
per image: ``jpeg`` a JPEG quality in 1..100 (whole numbers), ``resize`` a shrink factor in
(0, 1] (shrink bicubic antialiased, enlarge back bilinear). :meth:`Chain.launder` is what a
platform does to an upload (:func:`robustlab.corruptions.functions.jpeg_roundtrip` and
``resize_roundtrip``); :meth:`Chain.tf_apply` is the same chain inside the gradient: resize with
``tf.image.resize`` (differentiable), JPEG through a straight-through estimator (BPDA: the forward
pass is the real Pillow round trip, the backward pass the identity).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab.enums import StrEnum
from robustlab.errors import RobustlabError

MAX_SAMPLES = 1000
CHAIN_EXAMPLE = "jpeg:50-95+resize:0.5-1.0"


class Transform(StrEnum):
    JPEG = "jpeg"
    RESIZE = "resize"


@dataclass(frozen=True)
class Stage:
    """One transform of a chain with its parameter range ``[lo, hi]`` (JPEG quality: whole numbers)."""

    transform: Transform
    lo: float
    hi: float

    @property
    def text(self) -> str:
        if self.transform is Transform.JPEG:
            lo, hi = f"{int(self.lo)}", f"{int(self.hi)}"
        else:
            lo, hi = f"{self.lo:g}", f"{self.hi:g}"
        return f"{self.transform.value}:{lo}" if lo == hi else f"{self.transform.value}:{lo}-{hi}"

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` parameters: int32 JPEG qualities in [lo, hi], or float32 resize factors in [lo, hi]."""
        if self.transform is Transform.JPEG:
            return rng.integers(int(self.lo), int(self.hi) + 1, size=n).astype(np.int32)
        return rng.uniform(self.lo, self.hi, size=n).astype(np.float32)


@dataclass(frozen=True)
class Chain:
    """Transforms applied in order (each at most once), e.g. JPEG then a resize round trip."""

    stages: tuple[Stage, ...]

    @property
    def text(self) -> str:
        """The chain as written in an attack spec: ``jpeg:50-95+resize:0.5-1``."""
        return "+".join(s.text for s in self.stages)

    def launder(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (N, H, W, 3) -> uint8 (N, H, W, 3): the real Pillow chain, parameters drawn per image from ``rng``."""
        from robustlab.corruptions.functions import jpeg_roundtrip, resize_roundtrip

        x = np.asarray(images, np.uint8)
        params = [s.draw(rng, len(x)) for s in self.stages]
        out = np.empty_like(x)
        for i in range(len(x)):
            img = x[i]
            for stage, p in zip(self.stages, params):
                img = jpeg_roundtrip(img, int(p[i])) if stage.transform is Transform.JPEG else resize_roundtrip(img, float(p[i]))
            out[i] = img
        return out

    def draw_tf(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        """One EOT draw for a batch of ``n``: per stage int32 (n,) JPEG qualities, or a float32 () resize
        factor shared by the batch (one tensor shape per draw)."""
        return [s.draw(rng, n) if s.transform is Transform.JPEG else s.draw(rng, 1).reshape(()) for s in self.stages]

    def tf_signature(self) -> list[Any]:
        import tensorflow as tf

        return [tf.TensorSpec((None,), tf.int32) if s.transform is Transform.JPEG else tf.TensorSpec((), tf.float32) for s in self.stages]

    def tf_apply(self, x: Any, params: Any) -> Any:
        """float32 (N, H, W, 3) in [0, 1] -> the transformed batch, differentiable in ``x``: resize with
        ``tf.image.resize`` (bicubic antialiased down, bilinear up, as ``resize_roundtrip``), JPEG with
        a straight-through estimator over Pillow's round trip. ``params`` as :meth:`draw_tf`."""
        import tensorflow as tf

        z = x
        h, w = int(x.shape[1]), int(x.shape[2])
        for stage, p in zip(self.stages, params):
            if stage.transform is Transform.JPEG:
                real = tf.numpy_function(_jpeg_batch, [z, p], tf.float32, stateful=False)
                real = tf.ensure_shape(real, z.shape)
                z = z + tf.stop_gradient(real - z)
            else:
                small = tf.maximum(1, tf.cast(tf.round(tf.constant([h, w], tf.float32) * p), tf.int32))
                down = tf.image.resize(z, small, method="bicubic", antialias=True)
                z = tf.clip_by_value(tf.image.resize(down, (h, w), method="bilinear"), 0.0, 1.0)
        return z


def _jpeg_batch(x: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """float32 (N, H, W, 3) in [0, 1], int32 (N,) -> float32: each image quantised to uint8 and round-tripped through Pillow's JPEG."""
    from robustlab.corruptions.functions import jpeg_roundtrip

    u8 = np.clip(np.rint(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)
    out = np.stack([jpeg_roundtrip(img, int(q)) for img, q in zip(u8, qualities)]) if len(u8) else u8
    return out.astype(np.float32) / np.float32(255.0)


@dataclass(frozen=True)
class EOT:
    """Expectation over Transformation: each loss gradient is the mean over ``samples`` draws of
    ``chain`` (:meth:`Chain.tf_apply`)."""

    chain: Chain
    samples: int = 8

    def __post_init__(self) -> None:
        if not 1 <= int(self.samples) <= MAX_SAMPLES:
            raise RobustlabError(f"samples={self.samples} is outside 1..{MAX_SAMPLES}", fix="give the number of EOT draws per gradient, e.g. samples=8")

    @property
    def param(self) -> str:
        return f"eot={self.chain.text},samples={int(self.samples)}"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RobustlabError(f"{what}: {text!r} is not a number", fix=f"write e.g. {CHAIN_EXAMPLE}") from None
    if math.isnan(value):
        raise RobustlabError(f"{what}: {text!r} is not a number", fix=f"write e.g. {CHAIN_EXAMPLE}")
    return value


def parse_chain(text: str, *, what: str = "eot") -> Chain:
    """``"jpeg:50-95+resize:0.5-1.0"`` -> :class:`Chain`; a single value (``jpeg:75``) is a fixed
    parameter. Unknown transforms, repeats, JPEG qualities outside 1..100 or not whole, resize
    factors outside (0, 1] and reversed ranges raise a one-line RobustlabError."""
    raw = str(text).strip()
    if not raw:
        raise RobustlabError(f"{what}= is empty", fix=f"write e.g. {what}={CHAIN_EXAMPLE}")
    stages: list[Stage] = []
    for part in raw.split("+"):
        name, _, rng_text = part.strip().partition(":")
        name = name.strip().lower()
        try:
            transform = Transform(name)
        except ValueError:
            raise RobustlabError(f"{what}: unknown transform {name!r}", fix=f"use jpeg:QLO-QHI and/or resize:FLO-FHI joined by +, e.g. {CHAIN_EXAMPLE}") from None
        if any(s.transform is transform for s in stages):
            raise RobustlabError(f"{what}: {name} given twice", fix="give each transform once")
        if not rng_text.strip():
            raise RobustlabError(f"{what}: {name} has no range", fix=f"write e.g. {CHAIN_EXAMPLE}")
        lo_text, sep, hi_text = rng_text.strip().partition("-")
        lo = _number(lo_text, what)
        hi = _number(hi_text, what) if sep else lo
        if lo > hi:
            raise RobustlabError(f"{what}: {name}:{rng_text} is a reversed range", fix="write the low end first, e.g. jpeg:50-95")
        if transform is Transform.JPEG:
            if lo != int(lo) or hi != int(hi) or not (1 <= lo and hi <= 100):
                raise RobustlabError(f"{what}: JPEG quality {rng_text} is outside 1..100", fix="give whole JPEG qualities in 1..100, e.g. jpeg:50-95")
        elif not (0.0 < lo and hi <= 1.0):
            raise RobustlabError(f"{what}: resize factor {rng_text} is outside (0, 1]", fix="give shrink factors in (0, 1], e.g. resize:0.5-1.0")
        stages.append(Stage(transform, lo, hi))
    return Chain(tuple(stages))
