"""Delivery of adversarial images: uint8 within the eps budget, and what was realized per image
(L-inf and L2 in /255 units, PSNR, SSIM).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import numpy as np

from robustlab.attacks.spec import AttackSpec, Norm

if TYPE_CHECKING:  # pragma: no cover
    pass



def perturbation_norms(clean: np.ndarray, delivered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L-inf and L2 of ``delivered - clean`` (uint8 arrays) in /255 units (grey levels)."""
    d = delivered.astype(np.int16) - clean.astype(np.int16)
    flat = d.reshape(len(d), -1).astype(np.float64)
    if flat.size == 0:
        return np.zeros((len(d),)), np.zeros((len(d),))
    return np.abs(flat).max(axis=1), np.sqrt((flat**2).sum(axis=1))


# --------------------------------------------------------------------------- the entry point


_NO_SECONDS: Mapping[str, float] = {}


class AttackResult(NamedTuple):
    """What :func:`run_attack` returns, per image of the batch.

    ``images`` uint8 (N, H, W, 3): the delivered adversarial images; ``success`` bool (N,): the
    delivered image is misclassified; ``linf`` / ``l2`` float64 (N,): realized perturbation in /255
    units (grey levels); ``psnr`` float64 (N,) dB (inf when unchanged); ``ssim`` float64 (N,);
    ``scores``, ``zero_gradient``, ``seconds`` (per stage: ``gradient`` the compiled loss
    gradient of a white-box attack or ``queries`` the model queries of a black-box one,
    ``art_other`` ART's own work around it, ``deliver_and_norms``, ``ssim``, ``success_check``)
    and ``queries`` as :func:`robustlab.attacks.art_backend.run_attack` measured them.
    """

    images: np.ndarray
    success: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    scores: np.ndarray | None = None  # float64 (N,) P(positive) of ``images`` (the success check)
    zero_gradient: np.ndarray | None = None  # bool (N,): the loss gradient was exactly zero at every step
    seconds: Mapping[str, float] = _NO_SECONDS  # time per stage of run_attack
    queries: np.ndarray | None = None  # int64 (N,): model queries per image (black-box attacks)


def deliver(x_uint8: np.ndarray, x_adv: np.ndarray, spec: AttackSpec) -> np.ndarray:
    """Project ``x_adv`` onto the eps ball around ``x_uint8`` and [0, 1], then deliver uint8.

    ``x_uint8`` uint8 (N, H, W, 3); ``x_adv`` float (N, H, W, 3) in [0, 1] (NaN counts as 0). The
    delivered image never exceeds the budget: L-inf rounds to the nearest grey level within
    ``floor(eps * 255)`` levels; L2 rounds, and where that would exceed eps rounds the largest
    scaled-down perturbation that fits (or truncates toward the clean image, whichever keeps more
    of it). Vectorised numpy over the whole batch.
    """
    x = np.asarray(x_uint8)
    x32 = x.astype(np.float32)
    d = np.clip(np.asarray(x_adv, dtype=np.float32), 0.0, 1.0)
    if np.isnan(d).any():
        d = np.where(np.isnan(d), np.float32(0.0), d)
    d *= np.float32(255.0)
    d -= x32  # grey levels
    if spec.eps is None:  # no budget (hsj without eps): the nearest grey levels
        q = np.rint(d, out=d)
    elif spec.norm is Norm.LINF:
        limit = np.float32(spec.budget_levels)
        q = np.rint(d, out=d)
        np.clip(q, -limit, limit, out=q)
    else:
        q = _quantize_l2(d.reshape(len(d), -1), spec.eps * 255.0).reshape(d.shape)
    q += x32
    np.clip(q, 0.0, 255.0, out=q)
    return q.astype(np.uint8)


def _quantize_l2(d: np.ndarray, radius: float, iterations: int = 12) -> np.ndarray:
    """Whole grey levels (float32 (N, D)) for L2 perturbations ``d`` float32 (N, D), inside ``radius``.

    ``d`` is first projected onto the ball. Rounding can push the norm over the radius; then the
    largest scale ``s`` (bisection) with ``round(s * d)`` inside the ball is used, or ``d``
    truncated toward zero, whichever is larger. Norms of whole grey levels are summed exactly
    (float64).
    """
    r2 = float(radius) ** 2

    def sq(t: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", t, t, dtype=np.float64)

    norm = np.sqrt(sq(d))
    scale = np.where(norm > radius, radius / np.maximum(norm, 1e-12), 1.0)
    d = (d * scale[:, None]).astype(np.float32)
    q = np.rint(d)
    over = sq(q) > r2
    if over.any():
        dd = d[over]
        lo = np.zeros(len(dd), np.float32)
        hi = np.ones(len(dd), np.float32)
        for _ in range(iterations):
            mid = (lo + hi) / np.float32(2.0)
            fits = sq(np.rint(mid[:, None] * dd)) <= r2
            lo = np.where(fits, mid, lo)
            hi = np.where(fits, hi, mid)
        scaled = np.rint(lo[:, None] * dd)
        truncated = np.trunc(dd)
        q[over] = np.where((sq(scaled) >= sq(truncated))[:, None], scaled, truncated)
    return q


def _measure(x_uint8: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realized L-inf and L2 (/255 units) and PSNR (dB, inf when unchanged) per image, float64 (N,),
    exact (integer differences)."""
    diff = (images.astype(np.int16) - x_uint8.astype(np.int16)).reshape(len(images), -1)
    linf = np.abs(diff).max(axis=1).astype(np.float64) if diff.shape[1] else np.zeros(len(images))
    sq = np.einsum("ij,ij->i", diff, diff, dtype=np.int64).astype(np.float64)
    mse = sq / max(diff.shape[1], 1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-30)), np.inf)
    return linf, np.sqrt(sq), psnr


def _ssim(a: Any, b: Any, filter_size: int, tf: Any) -> Any:
    """SSIM per image of float32 (N, H, W, 3) in [0, 255], as ``tf.image.ssim`` (Gaussian window
    ``filter_size``, sigma 1.5, k1 0.01, k2 0.03, valid padding, mean over channels), computed with
    one separable blur of the five statistics at once (several times cheaper)."""
    c = np.arange(filter_size, dtype=np.float64) - (filter_size - 1) / 2.0
    g = np.exp(-(c**2) / (2 * 1.5**2))
    g = (g / g.sum()).astype(np.float32)
    stats = tf.concat([a, b, a * a, b * b, a * b], axis=-1)  # (N, H, W, 15)
    k = tf.constant(np.tile(g.reshape(-1, 1, 1, 1), (1, 1, 15, 1)))
    blurred = tf.nn.depthwise_conv2d(stats, k, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, tf.reshape(k, (1, filter_size, 15, 1)), [1, 1, 1, 1], "VALID")
    ma, mb, aa, bb, ab = tf.split(blurred, 5, axis=-1)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mab = ma * mb
    m2 = ma * ma + mb * mb
    return tf.reduce_mean((2 * mab + c1) * (2 * (ab - mab) + c2) / ((m2 + c1) * (aa + bb - m2 + c2)), axis=[1, 2, 3])


@functools.lru_cache(maxsize=8)
def _ssim_fn(filter_size: int) -> Callable[..., Any]:
    """``(clean uint8, delivered uint8) -> SSIM float32 (N,)``, one ``tf.function`` per window
    size (any image size and batch size: traced once per process)."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, None, None, 3), tf.uint8), tf.TensorSpec((None, None, None, 3), tf.uint8)]

    @tf.function(input_signature=signature, reduce_retracing=True, autograph=False)
    def ssim(clean: Any, delivered: Any) -> Any:
        return _ssim(tf.cast(clean, tf.float32), tf.cast(delivered, tf.float32), filter_size, tf)

    return ssim


def image_ssim(x_uint8: np.ndarray, images: np.ndarray) -> np.ndarray:
    """SSIM of each image of ``images`` against ``x_uint8`` (both uint8 (N, H, W, 3)), float64 (N,),
    as ``tf.image.ssim`` with max value 255 (the window shrinks to the image below 11 pixels)."""
    import tensorflow as tf

    h, w = x_uint8.shape[1:3]
    return np.asarray(_ssim_fn(min(11, h, w))(tf.constant(x_uint8), tf.constant(images)), np.float64)
