"""``robustlab attack DETECTOR DATA``: an FGSM / PGD test set saved as PNGs, plus the clean /
adversarial / mixed table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustlab.cli.common import (
    State,
    command_line,
    common_options,
    data_options,
    default_run_dir,
    detector_options,
    echo_err,
    pass_state,
    pop_detector_overrides,
    with_examples,
)


@click.command("attack")
@click.argument("detector", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--method", "methods", multiple=True, default=("fgsm",), show_default=True, metavar="fgsm|pgd", help="Attack method; repeat for several (each runs at every --eps).")
@click.option("--eps", "eps", multiple=True, default=("8/255",), show_default=True, metavar="EPS", help="Perturbation budget as a fraction of the pixel range, in (0, 1]: 8/255 or 0.03; repeat or comma-separate for several.")
@click.option("--norm", default="inf", show_default=True, metavar="inf|2", help="Norm bounding the perturbation (L2: eps is the L2 norm of the whole perturbation in [0, 1] pixel units).")
@click.option("--steps", type=click.IntRange(1, 10000), default=None, help="PGD iterations [default: 10].")
@click.option("--step", default=None, metavar="STEP", help="PGD step size in pixel units, e.g. 2/255 [default: 2.5 * eps / steps].")
@click.option("--random-start/--no-random-start", default=None, help="PGD: start from a random point in the eps ball [default: on].")
@click.option("--fraction", default="1", show_default=True, metavar="F", help="Share of the set to attack, in (0, 1]: a stratified, seeded subset (recorded in predictions.csv).")
@click.option("--sanity", is_flag=True, help="Also run a large-eps PGD (64/255, 20 steps) that must drive accuracy near zero; says so when it does not.")
@click.option("--save-images/--no-save-images", default=True, show_default=True, help="Save the delivered adversarial images as PNG under RUN/adversarial/.")
@click.option("--out", type=click.Path(), help="Run folder to write (default: robustlab-runs/attack-NAME-TIME).")
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
@detector_options
@data_options
@common_options
@with_examples(
    """
robustlab attack detector.yaml data/test --method fgsm --eps 0.05 --fraction 0.3 --out runs/fgsm
robustlab attack detector.yaml data --split test --eps 1/255,4/255,8/255 --out runs/fgsm-sweep
robustlab attack detector.yaml data --split test --method fgsm --method pgd --eps 8/255 --steps 20 --sanity --out runs/pgd
robustlab evaluate detector.yaml runs/fgsm/adversarial      # the saved set is itself a DATA folder
"""
)
@pass_state
def command(
    state: State,
    detector: str,
    data: str,
    methods: tuple[str, ...],
    eps: tuple[str, ...],
    norm: str,
    steps: int | None,
    step: str | None,
    random_start: bool | None,
    fraction: str,
    sanity: bool,
    save_images: bool,
    out: str | None,
    force: bool,
    split: str | None,
    class_map: str | None,
    **kwargs: Any,
) -> None:
    """Attack a stratified, seeded --fraction of DATA with FGSM or PGD (IBM ART, true labels) and
    write a run folder.

    eps is a fraction of the pixel range whatever the model's own scaling (8/255 = eight grey
    levels); adversarial images are delivered as uint8 within that budget. The run folder holds the
    table Original / Adversarial / (Original + Adversarial) per attack (metrics.md, .json, .csv),
    predictions.csv (the attacked images are its `adversarial` lines), attacks.csv (per image:
    realized L-inf / L2 in /255 units, PSNR, SSIM, success), plots/ and, unless --no-save-images,
    the adversarial PNGs under adversarial/, mirroring DATA's relative paths (one sub-folder per
    attack when several ran), so that folder can be evaluated like any DATA.
    """
    from robustlab.attacks.art_backend import art_classifier
    from robustlab.attacks.checks import attack_checks, sanity_message
    from robustlab.attacks.spec import parse_attack_fraction
    from robustlab.attacks.variant import make_attacks
    from robustlab.attacks.writer import AdversarialWriter
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.errors import RobustlabError
    from robustlab.evaluation.engine import evaluate
    from robustlab.runs import RunFolder

    overrides, trust = pop_detector_overrides(kwargs)
    eps_values = [e.strip() for text in eps for e in text.split(",") if e.strip()]
    names = [m.strip().lower() for m in methods]
    pgd_options = {"--steps": steps, "--step": step, "--random-start": random_start}
    if "pgd" not in names and any(v is not None for v in pgd_options.values()):
        given = ", ".join(k for k, v in pgd_options.items() if v is not None)
        raise RobustlabError(f"{given} only apply to PGD", thing="robustlab attack", fix="add --method pgd, or drop them")
    variants: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for name in names:
        opts = {"steps": steps, "step": step, "random_start": random_start} if name == "pgd" else {}
        for v in make_attacks(name, eps_values, norm=norm, **opts):
            if (v.variant, v.param) not in seen:
                seen.add((v.variant, v.param))
                variants.append(v)
    attack_fraction = parse_attack_fraction(fraction, what="--fraction")
    dataset = open_dataset(data, split=split, classes=class_map)
    det = load_detector(detector, trust_model=trust, **overrides)
    art_classifier(det)  # a detector without input gradients stops here, with the reason
    out = out or default_run_dir("attack", det.name)
    config: dict[str, Any] = {
        "detector": detector,
        "data": data,
        "split": split,
        "classes": class_map,
        "overrides": overrides,
        "trust_model": trust,
        "out": out,
        "attacks": [v.spec.describe() for v in variants],
        "fraction": attack_fraction,
        "sanity": sanity,
        "save_images": save_images,
    }
    extra_info: dict[str, Any] = {}
    with RunFolder(out, force=force, inputs=(detector, dataset, det)) as folder:
        writer = AdversarialWriter(folder.path("adversarial"), dataset, variants, table=folder.path("attacks.csv"), save_images=save_images)
        extra_info["adversarial_images"] = writer.record
        checks = attack_checks(det, dataset, variants, sanity=sanity, seed=state.seed, batch_size=state.batch_size, info=extra_info)
        result = evaluate(
            det,
            dataset,
            run_folder=folder,
            variants=variants,
            attack_fraction=attack_fraction,
            seed=state.seed,
            batch_size=state.batch_size,
            progress=state.progress,
            command=command_line(),
            config=config,
            on_delivered=writer,
            checks=checks,
            extra_info=extra_info,
        )
    click.echo((Path(result.run_dir) / "metrics.md").read_text(encoding="utf-8"))
    if sanity:
        echo_err(state, f"robustlab: {sanity_message(extra_info.get('sanity', {}))}")
    if save_images:
        where = Path(result.run_dir) / "adversarial"
        echo_err(state, f"robustlab: {writer.record['images']} adversarial images saved under {where} (a DATA folder{'; one sub-folder per attack' if len(variants) > 1 else ''})")
    echo_err(state, f"robustlab: run folder written: {result.run_dir}")
