"""Common corruptions at graded severities: plain functions and one registry.

Every corruption is a plain function ``(image, severity, rng) -> image``: ``image`` uint8
(H, W, 3) RGB, ``severity`` an int 1..5, ``rng`` a :class:`numpy.random.Generator` (the only
source of randomness: the same seed gives the same bytes). It returns a new uint8 (H, W, 3) array
of the same shape, rounded and clipped: what a platform would deliver. :data:`CORRUPTIONS` maps
names to functions; :func:`corrupt` is the dispatcher that validates its arguments once.

Severity tables depend on the image's resolution, as in the published benchmarks: an image whose
longer side is at most :data:`SMALL_MAX_SIDE` (64) px gets the CIFAR-10-C values, a larger one the
ImageNet-C values. Sources:

* CIFAR-10-C: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
  Corruptions and Perturbations", ICLR 2019; values from ``ImageNet-C/create_c/make_cifar_c.py``
  in github.com/hendrycks/robustness.
* ImageNet-C: the same paper; values from ``make_imagenet_c.py`` in that repository, identical to
  the ``imagecorruptions`` package (github.com/bethgelab/imagecorruptions, ``corruptions.py``).

Images with a side under :data:`MIN_SIDE` (8) px are too small for every corruption (less than
one JPEG block, and the tables are not defined for them): :func:`corrupt` raises
:class:`ImageTooSmall`.
"""
from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
SMALL_MAX_SIDE = 64  # longer side <= 64 px: CIFAR-10-C values; larger: ImageNet-C values
MIN_SIDE = 8  # shorter side below this: too small for any corruption


@dataclass(frozen=True)
class SeverityTable:
    """One parameter per severity 1..5, for small (CIFAR-10-C) and large (ImageNet-C) images."""

    what: str
    small: tuple[float, ...]
    large: tuple[float, ...]
    source: str

    def value(self, severity: int, shape: Sequence[int]) -> float:
        """The parameter for ``severity`` (1..5) and an image of ``shape`` (H, W, ...)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is outside 1..5")
        return (self.small if is_small(shape) else self.large)[severity - 1]


def is_small(shape: Sequence[int]) -> bool:
    """True when the CIFAR-10-C table applies (longer side <= SMALL_MAX_SIDE px)."""
    return max(int(shape[0]), int(shape[1])) <= SMALL_MAX_SIDE


# --------------------------------------------------------------------------- parameter tables

JPEG_QUALITY = SeverityTable(
    "JPEG quality (Pillow, 4:2:0 chroma subsampling)",
    small=(80, 65, 58, 50, 40),  # CIFAR-10-C jpeg_compression
    large=(25, 18, 15, 10, 7),  # ImageNet-C jpeg_compression
    source="CIFAR-10-C / ImageNet-C jpeg_compression",
)
BLUR_SIGMA = SeverityTable(
    "Gaussian sigma in px (kernel truncated at 4 sigma, edges replicated)",
    small=(0.4, 0.6, 0.7, 0.8, 1.0),  # CIFAR-10-C gaussian_blur
    large=(1.0, 2.0, 3.0, 4.0, 6.0),  # ImageNet-C gaussian_blur
    source="CIFAR-10-C / ImageNet-C gaussian_blur",
)
RESIZE_FACTOR = SeverityTable(
    "downscale factor (Pillow bicubic, antialiased) then back up (bilinear)",
    small=(0.95, 0.9, 0.85, 0.75, 0.65),  # CIFAR-10-C pixelate factors
    large=(0.6, 0.5, 0.4, 0.3, 0.25),  # ImageNet-C pixelate factors
    source="CIFAR-10-C / ImageNet-C pixelate factors (filters: a web platform's, not pixelate's box/nearest)",
)
NOISE_SIGMA = SeverityTable(
    "additive Gaussian noise sigma, fraction of the pixel range",
    small=(0.04, 0.06, 0.08, 0.09, 0.10),  # CIFAR-10-C gaussian_noise
    large=(0.08, 0.12, 0.18, 0.26, 0.38),  # ImageNet-C gaussian_noise
    source="CIFAR-10-C / ImageNet-C gaussian_noise",
)
# social: RESIZE_FACTOR down, JPEG_QUALITY at that size, back up; both at the same severity.

TABLES: dict[str, tuple[tuple[str, SeverityTable], ...]] = {
    "jpeg": (("quality", JPEG_QUALITY),),
    "blur": (("sigma", BLUR_SIGMA),),
    "resize": (("factor", RESIZE_FACTOR),),
    "noise": (("sigma", NOISE_SIGMA),),
    "social": (("factor", RESIZE_FACTOR), ("quality", JPEG_QUALITY)),
}


class ImageTooSmall(ValueError):
    """An image has a side under :data:`MIN_SIDE` px (skip and count it; never fatal alone)."""


# --------------------------------------------------------------------------- building blocks


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 3): encode as JPEG at ``quality`` with Pillow, decode.

    Pillow's defaults otherwise (4:2:0 subsampling, standard tables, no optimisation), the same
    settings as ``imagecorruptions.jpeg_compression``, so the pixels are identical to it. The
    stream is decoded straight by libjpeg (``Image.frombytes(..., "jpeg")``: the size is known),
    skipping the file-format parser: 1.5x faster on 32x32 images, the same pixels.
    """
    from PIL import Image

    h, w = image.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=int(quality))
    decoded = Image.frombytes("RGB", (w, h), buf.getvalue(), "jpeg", "RGB", "")
    return np.asarray(decoded, dtype=np.uint8)




@functools.lru_cache(maxsize=256)
def _blur_matrix(n: int, sigma: float, start: int, stop: int) -> tuple[np.ndarray, int]:
    """Rows ``start:stop`` of the (n, n) Gaussian blur matrix along one axis, edges replicated.

    Returns ``(m float32 (stop - start, k), first)``: output row ``start + i`` is
    ``m[i] @ input[first:first + k]``. The kernel is scipy's/scikit-image's: radius
    ``int(4 * sigma + 0.5)``, normalised; samples beyond an edge take the edge value ("nearest").
    """
    r = int(4.0 * sigma + 0.5)
    taps = np.arange(-r, r + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    first = max(0, start - r)
    last = min(n, stop + r)
    m = np.zeros((stop - start, last - first), dtype=np.float64)
    rows = np.arange(start, stop)
    for t, w in zip(taps.astype(np.int64), kernel):
        cols = np.clip(rows + t, 0, n - 1) - first
        np.add.at(m, (rows - start, cols), w)
    m32 = m.astype(np.float32)
    m32.setflags(write=False)
    return m32, first


def _block_rows(n: int, sigma: float) -> int:
    """Output rows per banded block: each block costs (rows + 2 radius) multiply-adds per output.

    Blocks of ``max(32, 4 * radius)`` rows spend at most 1.5x the convolution's multiply-adds
    while keeping the matrix products big enough for BLAS; a whole (n, n) matrix when that is
    as cheap (small images, large sigma).
    """
    r = int(4.0 * sigma + 0.5)
    rows = max(32, 4 * r)
    return n if rows + 2 * r >= n else rows


def _blur_axis0(x: np.ndarray, sigma: float) -> np.ndarray:
    """float32 (n, m) -> float32 (n, m): Gaussian blur along axis 0 as banded matrix products."""
    n = x.shape[0]
    rows = _block_rows(n, sigma)
    if rows >= n:
        m, _ = _blur_matrix(n, sigma, 0, n)
        return m @ x
    out = np.empty_like(x)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        m, first = _blur_matrix(n, sigma, start, stop)
        out[start:stop] = m @ x[first : first + m.shape[1]]
    return out


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 3): separable Gaussian blur, rounded.

    The same filter as ``skimage.filters.gaussian(image / 255, sigma, channel_axis=-1)`` (mode
    "nearest", truncate 4): within rounding of it (<= 0.5 grey levels before rounding), computed
    as two float32 banded-matrix products (BLAS) instead of a direct convolution. BLAS runs on one
    thread for images over 64x64 px (callers parallelise over images; threaded BLAS on a busy
    machine was 3-4x slower).
    """
    if image.shape[0] * image.shape[1] <= SMALL_MAX_SIDE * SMALL_MAX_SIDE:
        return _gaussian_blur(image, sigma)  # too small for BLAS to use threads
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _gaussian_blur(image, sigma)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    h, w, c = image.shape
    x = image.astype(np.float32).reshape(h, w * c)
    x = _blur_axis0(x, float(sigma))  # vertical
    x = np.ascontiguousarray(x.reshape(h, w, c).transpose(1, 0, 2)).reshape(w, h * c)
    x = _blur_axis0(x, float(sigma))  # horizontal (on the transposed image)
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    # a (H, W, 3) view of the transposed result; astype keeps its memory order (no transposing copy)
    return x.reshape(w, h, c).transpose(1, 0, 2).astype(np.uint8)


def _pil_resize(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    from PIL import Image

    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[method]
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(image), mode="RGB").resize((w, h), resample=resample), dtype=np.uint8)


def _scaled(shape: Sequence[int], factor: float) -> tuple[int, int]:
    return max(1, int(round(shape[0] * factor))), max(1, int(round(shape[1] * factor)))


def resize_roundtrip(image: np.ndarray, factor: float) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 3): shrink by ``factor`` (bicubic, antialiased), enlarge back (bilinear)."""
    small = _pil_resize(image, _scaled(image.shape, factor), "bicubic")
    return _pil_resize(small, image.shape[:2], "bilinear")


# --------------------------------------------------------------------------- the corruptions


def jpeg(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression at the quality of :data:`JPEG_QUALITY` (deterministic; ``rng`` unused)."""
    return jpeg_roundtrip(image, int(JPEG_QUALITY.value(severity, image.shape)))


def blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with the sigma of :data:`BLUR_SIGMA` (deterministic; ``rng`` unused)."""
    return gaussian_blur(image, BLUR_SIGMA.value(severity, image.shape))


def resize(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Down by the factor of :data:`RESIZE_FACTOR` and back up: a web platform's resize round trip."""
    return resize_roundtrip(image, RESIZE_FACTOR.value(severity, image.shape))


def noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, sigma from :data:`NOISE_SIGMA` (a fraction of 255), drawn from ``rng``."""
    sigma = NOISE_SIGMA.value(severity, image.shape) * 255.0
    x = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def social(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Re-sharing: shrink (RESIZE_FACTOR), JPEG at that size (JPEG_QUALITY), enlarge back.

    What a platform does to an upload (downsize, re-encode) and a detector then undoes (resize to
    its input size). Both parameters at the same severity, from the tables above.
    """
    factor = RESIZE_FACTOR.value(severity, image.shape)
    quality = int(JPEG_QUALITY.value(severity, image.shape))
    small = _pil_resize(image, _scaled(image.shape, factor), "bicubic")
    return _pil_resize(jpeg_roundtrip(small, quality), image.shape[:2], "bilinear")


CorruptionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

CORRUPTIONS: dict[str, CorruptionFn] = {
    "jpeg": jpeg,
    "blur": blur,
    "resize": resize,
    "noise": noise,
    "social": social,
}


def known() -> str:
    return ", ".join(CORRUPTIONS)


def check_size(shape: Sequence[int]) -> None:
    """Raise :class:`ImageTooSmall` when an image of ``shape`` (H, W, ...) is under MIN_SIDE px."""
    if min(int(shape[0]), int(shape[1])) < MIN_SIDE:
        raise ImageTooSmall(f"image is {shape[1]}x{shape[0]} px; corruptions need at least {MIN_SIDE} px a side")


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Corruption ``name`` at ``severity`` (1..5): uint8 (H, W, 3) -> uint8 (H, W, 3).

    Validates once: ``ValueError`` for an unknown name, a severity outside 1..5 or an image that
    is not uint8 (H, W, 3); :class:`ImageTooSmall` (a ValueError) for a side under MIN_SIDE px;
    ``TypeError`` when ``rng`` is not a numpy Generator.
    """
    fn = CORRUPTIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown corruption {name!r}; known: {known()}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is outside 1..5")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
    check_size(image.shape)
    return fn(image, int(severity), rng)


def parameters(name: str, severity: int, shape: Sequence[int]) -> dict[str, float]:
    """The table values corruption ``name`` uses at ``severity`` for an image of ``shape``."""
    return {key: table.value(severity, shape) for key, table in TABLES[name]}


def describe_parameters(name: str, severity: int, shape: Sequence[int]) -> str:
    """``quality=58`` / ``factor=0.85,quality=58`` for reports."""
    return ",".join(f"{k}={v:g}" for k, v in parameters(name, severity, shape).items())


def image_seed(seed: int, name: str, severity: int, index: int) -> np.random.Generator:
    """The generator for one image of a data set: independent of order, batch size and threads."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8")), int(severity), int(index)])
