"""Benchmark robustlab's corruptions: images/s per corruption, and against ``imagecorruptions``.

    .venv/bin/python tests/benchmarks/bench_corruptions.py [--n32 200] [--n128 60] [--rounds 5] [--clock cpu|wall]

Rates are images per second of this process's CPU time by default (``--clock cpu``): the machine
is shared, and CPU time is what other processes' load disturbs least; ``--clock wall`` for elapsed.

Prints, on the same natural images (random crops of the photographs the demo uses):

1. images/s of ``robustlab.corruptions.corrupt`` for every corruption and severity at 32x32 and
   128x128 (median of ``--rounds`` rounds);
2. ``robustlab`` vs ``imagecorruptions.corrupt`` (its public entry point) for ``gaussian_blur`` and
   ``jpeg_compression``: at the same severity (each library's own table: at 32 px robustlab uses the
   CIFAR-10-C values, the package only has ImageNet-C's) and at the same parameter (robustlab's
   ``gaussian_blur(img, sigma)`` / ``jpeg_roundtrip(img, quality)`` with the package's value).
   Rounds alternate between the two libraries so that load from other processes hits both alike;
3. pixel agreement: JPEG arrays equal to the package's at each quality; blur max difference from
   the package's output (which truncates) and from the exact float Gaussian (robustlab rounds).

imagecorruptions 1.1.2 calls ``skimage.filters.gaussian(..., multichannel=True)``, an argument
scikit-image removed in 0.19; its blur is run here with that one argument translated to
``channel_axis=-1`` (its documented replacement), so the package's own code path is timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np


def natural_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    from robustlab.demo import _random_crop, demo_photos

    rng = np.random.default_rng(seed)
    photos = demo_photos()
    return [_random_crop(photos[i % len(photos)], rng, size) for i in range(n)]


def patch_imagecorruptions() -> None:
    """Let imagecorruptions' gaussian_blur run on scikit-image >= 0.19 (multichannel -> channel_axis)."""
    import imagecorruptions.corruptions as icc
    from skimage.filters import gaussian as sk_gaussian

    def gaussian(image, sigma=1, multichannel=None, **kw):  # noqa: ANN001
        if multichannel:
            kw["channel_axis"] = -1
        return sk_gaussian(image, sigma=sigma, **kw)

    icc.gaussian = gaussian


CLOCK = time.process_time  # --clock cpu (default) or wall: time.perf_counter


def rate(fn: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray]) -> float:
    t = CLOCK()
    for im in images:
        fn(im)
    return len(images) / max(CLOCK() - t, 1e-9)


def interleaved(fns: dict[str, Callable[[np.ndarray], np.ndarray]], images: list[np.ndarray], rounds: int) -> dict[str, float]:
    for fn in fns.values():  # warm caches (kernels, imports)
        fn(images[0])
    got: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            got[k].append(rate(fn, images))
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n32", type=int, default=200)
    ap.add_argument("--n128", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="cpu: this process's CPU time (robust to other processes' load); wall: elapsed time")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    import imagecorruptions
    from imagecorruptions import corrupt as ic_corrupt
    from skimage.filters import gaussian as sk_gaussian

    from robustlab.corruptions.functions import (
        CORRUPTIONS,
        SEVERITIES,
        corrupt,
        describe_parameters,
        gaussian_blur,
        jpeg_roundtrip,
    )

    patch_imagecorruptions()
    print(f"clock: {args.clock}; load average at start: {os.getloadavg()}; cpus: {os.cpu_count()}; imagecorruptions {getattr(imagecorruptions, '__version__', '1.1.2')}")
    sets = {32: natural_images(args.n32, 32), 128: natural_images(args.n128, 128, seed=1)}

    print("\n1. robustlab.corruptions.corrupt, images/s (median of rounds)")
    print("| corruption | size | " + " | ".join(f"sev {s}" for s in SEVERITIES) + " | parameters (sev 1..5) |")
    print("| --- | --- | " + " | ".join("---" for _ in SEVERITIES) + " | --- |")
    for name in CORRUPTIONS:
        for size, images in sets.items():
            rates = []
            for s in SEVERITIES:
                rng = np.random.default_rng(0)
                r = interleaved({"x": lambda im, s=s, rng=rng: corrupt(im, name, s, rng)}, images, max(1, args.rounds // 2))
                rates.append(r["x"])
            params = " / ".join(describe_parameters(name, s, (size, size)) for s in SEVERITIES)
            print(f"| {name} | {size} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {params} |")

    print("\n2. robustlab vs imagecorruptions (images/s, median of interleaved rounds)")
    print("| what | size | severity | robustlab param | package param | robustlab | imagecorruptions | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    pkg_sigma = (1, 2, 3, 4, 6)
    pkg_quality = (25, 18, 15, 10, 7)
    for size, images in sets.items():
        for sev in (1, 3, 5):
            rng = np.random.default_rng(0)
            for ours, theirs, label, ours_param, their_param in (
                ("blur", "gaussian_blur", "blur, same severity", describe_parameters("blur", sev, (size, size)), f"sigma={pkg_sigma[sev - 1]}"),
                ("jpeg", "jpeg_compression", "jpeg, same severity", describe_parameters("jpeg", sev, (size, size)), f"quality={pkg_quality[sev - 1]}"),
            ):
                r = interleaved(
                    {
                        "robustlab": lambda im, ours=ours: corrupt(im, ours, sev, rng),
                        "package": lambda im, theirs=theirs: ic_corrupt(im, severity=sev, corruption_name=theirs),
                    },
                    images,
                    args.rounds,
                )
                print(f"| {label} | {size} | {sev} | {ours_param} | {their_param} | {r['robustlab']:,.0f} | {r['package']:,.0f} | {r['robustlab'] / r['package']:.2f}x |")
            sigma, quality = pkg_sigma[sev - 1], pkg_quality[sev - 1]
            for label, ours_fn, theirs, param in (
                ("blur, same sigma", lambda im: gaussian_blur(im, sigma), "gaussian_blur", f"sigma={sigma}"),
                ("jpeg, same quality", lambda im: jpeg_roundtrip(im, quality), "jpeg_compression", f"quality={quality}"),
            ):
                r = interleaved({"robustlab": ours_fn, "package": lambda im, theirs=theirs: ic_corrupt(im, severity=sev, corruption_name=theirs)}, images, args.rounds)
                print(f"| {label} | {size} | {sev} | {param} | {param} | {r['robustlab']:,.0f} | {r['package']:,.0f} | {r['robustlab'] / r['package']:.2f}x |")

    print("\n3. pixel agreement with imagecorruptions (same parameter)")
    for size, images in sets.items():
        for sev in SEVERITIES:
            q = pkg_quality[sev - 1]
            equal = sum(np.array_equal(jpeg_roundtrip(im, q), ic_corrupt(im, severity=sev, corruption_name="jpeg_compression")) for im in images)
            sigma = pkg_sigma[sev - 1]
            d_pkg = max(int(np.abs(gaussian_blur(im, sigma).astype(np.int16) - ic_corrupt(im, severity=sev, corruption_name="gaussian_blur")).max()) for im in images)
            d_exact = max(float(np.abs(gaussian_blur(im, sigma) - np.clip(sk_gaussian(im / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255).max()) for im in images)
            print(f"{size}px severity {sev}: jpeg quality {q}: {equal}/{len(images)} images pixel-identical; blur sigma {sigma}: max |robustlab - package| = {d_pkg} grey level(s), max |robustlab - exact| = {d_exact:.3f}")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
