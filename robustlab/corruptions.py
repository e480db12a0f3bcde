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

import contextlib
import functools
import io
import re
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from robustlab.enums import SetKind
from robustlab.errors import RobustlabError

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


# --------------------------------------------------------------------------- variants for evaluate


@dataclass(frozen=True)
class CorruptionVariant:
    """One corruption at one severity: a *variant* of :func:`robustlab.evaluate.evaluate`.

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

    def apply(self, detector: Any, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (B, H, W, 3) -> uint8 (B, H, W, 3): every image corrupted (labels unused)."""
        out = np.empty_like(x)
        if len(x):
            self.check_input_size(x.shape[1:3])
        for i in range(len(x)):
            out[i] = corrupt(x[i], self.name, self.severity, rng)
        return out

    def diagnostics(self, stats: Any, rows: Any) -> list[str]:
        """Warn when the corruption changed no pixel of any image (nothing was tested)."""
        linf = np.concatenate(stats.linf) if stats.linf else np.zeros((0,))
        if len(linf) and float(linf.max()) == 0.0:
            return [f"{self.name} {self.param} changed no pixel of any image; its row equals the clean row"]
        return []


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


# --------------------------------------------------------------------------- corrupted copies of a data set


def variant_folder(name: str, severity: int) -> str:
    """Relative folder of one corruption and severity inside ``robustlab corrupt --out DIR``."""
    return f"{name}/severity-{severity}"


def _png_names(paths: Sequence[str], *, escape_prefix: str | None = None) -> list[str]:
    """Output file names (posix, relative): same path, ``.png`` suffix; collisions keep the old suffix.

    ``a/b.jpg`` -> ``a/b.png`` unless another input also maps there, then ``a/b.jpg.png``. With
    ``escape_prefix``, absolute paths and paths leaving their folder (``..``) become
    ``PREFIX/000123_name.png`` (manifests may point anywhere).
    """
    import posixpath

    rels = []
    for i, p in enumerate(paths):
        p = str(p).replace("\\", "/")
        norm = posixpath.normpath(p)
        if escape_prefix is not None and (posixpath.isabs(norm) or norm == ".." or norm.startswith("../") or re.match(r"^[A-Za-z]:", norm)):
            norm = f"{escape_prefix}/{i:06d}_{posixpath.basename(norm)}"
        rels.append(norm)
    candidates = [r if r.lower().endswith(".png") else posixpath.splitext(r)[0] + ".png" for r in rels]
    counts: dict[str, int] = {}
    for c in candidates:
        counts[c.lower()] = counts.get(c.lower(), 0) + 1
    return [c if counts[c.lower()] == 1 or r == c else r + ".png" for r, c in zip(rels, candidates)]


def _save_png(path: Any, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="RGB").save(path, format="PNG", compress_level=1)


def corrupt_dataset(
    data: "str | Any",
    out: "str | Any",
    corruptions: Sequence[CorruptionVariant],
    *,
    split: str | None = None,
    classes: Any = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = False,
    workers: int | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write corrupted copies of the data set ``data`` under ``out``, one folder per corruption and severity.

    ``out/NAME/severity-S/`` mirrors the input's layout, so each is a valid DATA argument:

    * class-folder tree: the same relative paths (``real/x.jpg`` -> ``real/x.png``);
    * split root with ``split``: the chosen split folder inside (``test/real/x.png``), used with the
      same ``--split``;
    * manifest CSV: the CSV under its own name (columns ``path,label``, labels ``real``/``fake``)
      plus the images at their relative paths (paths outside the CSV's folder go to ``files/``);
    * ``.npz``: the ``.npz`` under its own name, ``x`` corrupted, ``y`` unchanged.

    Images are corrupted at their own size and saved as PNG (lossless, so a JPEG corruption is not
    compressed twice). Each image gets its own generator (:func:`image_seed`), so the same seed
    gives the same bytes whatever the order or thread count. Unreadable images and images under
    MIN_SIDE px are skipped and counted; RobustlabError (exit 2) when nothing usable is left.
    ``out`` is built in a temporary sibling folder and renamed into place (refused when it exists,
    unless ``force``). Returns the ``out/run.json`` dict.
    """
    import os
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from robustlab.data import ImageDecodeError, open_dataset
    from robustlab.runs import RunFolder

    t0 = time.time()
    if not corruptions:
        raise RobustlabError("no corruption given", thing="--corruption", fix=f"name one or more of: {known()}")
    ds = open_dataset(data, split=split, classes=classes)
    source = Path(data)
    folder = RunFolder(out, force=force)
    try:
        n = len(ds)
        if ds.kind == "manifest":
            names = _png_names(ds.paths, escape_prefix="files")
            layout_prefix = ""
        elif ds.kind == "folders":
            names = _png_names(ds.paths)
            layout_prefix = f"{ds.root.name}/" if ds.split else ""
        else:
            names = []
            layout_prefix = ""
        status: list[str] = ["?"] * n  # ok | skipped | small
        small_table = [False] * n
        reasons: dict[str, str] = {}

        def read(i: int) -> np.ndarray | None:
            try:
                img = ds.read(i, None)
            except ImageDecodeError as exc:
                status[i] = "skipped"
                reasons[ds.paths[i]] = str(exc)
                ds.skipped[ds.paths[i]] = str(exc)
                print(f"robustlab: skipped {ds.source(i) or ds.paths[i]}: {exc}", file=sys.stderr)
                return None
            try:
                check_size(img.shape)
            except ImageTooSmall as exc:
                status[i] = "small"
                reasons[ds.paths[i]] = str(exc)
                print(f"robustlab: skipped {ds.source(i) or ds.paths[i]}: {exc}", file=sys.stderr)
                return None
            status[i] = "ok"
            small_table[i] = is_small(img.shape)
            return img

        def one_file(i: int) -> None:
            img = read(i)
            if img is None:
                return
            for v in corruptions:
                delivered = corrupt(img, v.name, v.severity, image_seed(seed, v.name, v.severity, i))
                _save_png(folder.path(f"{variant_folder(v.name, v.severity)}/{layout_prefix}{names[i]}"), delivered)

        workers = workers or max(1, min(4, os.cpu_count() or 2))
        total = n if ds.kind != "npz" else n * len(corruptions)
        bar_ctx: Any = contextlib.nullcontext(None)
        if progress:
            import click

            bar_ctx = click.progressbar(length=total, label=f"corrupting {n} images x {len(corruptions)}", file=sys.stderr)
        with bar_ctx as bar, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="robustlab-corrupt") as pool:
            if ds.kind != "npz":
                for s in range(0, n, 64):
                    ids = range(s, min(n, s + 64))
                    list(pool.map(one_file, ids))
                    if bar is not None:
                        bar.update(len(ids))
            else:
                images = [read(i) for i in range(n)]
                ok = [i for i in range(n) if status[i] == "ok"]
                for v in corruptions:
                    if not ok:
                        break
                    x = np.empty((len(ok),) + images[ok[0]].shape, np.uint8)

                    def fill(k: int, v: CorruptionVariant = v, x: np.ndarray = x) -> None:
                        i = ok[k]
                        x[k] = corrupt(images[i], v.name, v.severity, image_seed(seed, v.name, v.severity, i))

                    list(pool.map(fill, range(len(ok))))
                    with open(folder.path(f"{variant_folder(v.name, v.severity)}/{source.name}"), "wb") as fh:
                        np.savez(fh, x=x, y=ds.labels[ok].astype(np.int64))
                    del x
                    if bar is not None:
                        bar.update(n)

        ok = [i for i in range(n) if status[i] == "ok"]
        too_small = {ds.paths[i]: reasons[ds.paths[i]] for i in range(n) if status[i] == "small"}
        if not ok:
            if too_small:
                raise RobustlabError(
                    f"all {len(too_small)} readable images are too small for the corruptions (under {MIN_SIDE} px a side)",
                    thing=source,
                    fix=f"use images of at least {MIN_SIDE}x{MIN_SIDE} px",
                )
            raise RobustlabError("no image could be read", thing=source, fix="check the files (see the skipped list above)")
        labels = ds.labels[ok]
        missing = [c for c, lab in (("real", 0), ("fake", 1)) if not (labels == lab).any()]
        if missing:
            raise RobustlabError(
                f"after skipping {n - len(ok)} unreadable or too-small images no {missing[0]} image is left",
                thing=source,
                fix="the corrupted copies would not be a valid data set; check the skipped images",
            )
        if ds.kind == "manifest":
            import csv
            import io as _io

            buf = _io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["path", "label"])
            for i in ok:
                w.writerow([names[i], "fake" if ds.labels[i] == 1 else "real"])
            for v in corruptions:
                folder.write_text(f"{variant_folder(v.name, v.severity)}/{source.name}", buf.getvalue())

        n_small = sum(small_table[i] for i in ok)
        table_counts = {"cifar10-c": n_small, "imagenet-c": len(ok) - n_small}
        out_final = folder.final
        sets = []
        for v in corruptions:
            rel = variant_folder(v.name, v.severity)
            target = rel if ds.kind in ("folders",) else f"{rel}/{source.name}"
            params = {}
            if table_counts["cifar10-c"]:
                params["cifar10-c"] = parameters(v.name, v.severity, (SMALL_MAX_SIDE, SMALL_MAX_SIDE))
            if table_counts["imagenet-c"]:
                params["imagenet-c"] = parameters(v.name, v.severity, (SMALL_MAX_SIDE + 1, SMALL_MAX_SIDE + 1))
            sets.append(
                {
                    "corruption": v.name,
                    "severity": v.severity,
                    "param": v.param,
                    "data": str(out_final / target),
                    "split": ds.root.name if ds.split else None,
                    "images": len(ok),
                    "parameters": params,
                }
            )
        from robustlab.evaluate import versions

        info: dict[str, Any] = {
            "kind": "corrupt",
            "command": list(command) if command is not None else None,
            "seed": seed,
            "input": {"data": str(source), "split": split, "classes": classes, "layout": ds.kind},
            "data": ds.describe(),
            "sets": sets,
            "images": {"written": len(ok), "skipped_unreadable": sum(s == "skipped" for s in status), "skipped_too_small": len(too_small)},
            "too_small_files": dict(sorted(too_small.items())),
            "tables": table_counts,
            "min_side": MIN_SIDE,
            "versions": versions(),
            "seconds": round(time.time() - t0, 3),
        }
        folder.commit(info)
        return info
    except BaseException:
        folder.abort()
        raise
