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
from robustlab.cli.evaluate import bootstrap_option, mlflow_option
from robustlab.cli.report import json_option

ATTACK_OPTIONS = ("methods", "eps", "norm", "steps", "step", "random_start", "loss", "queries", "restarts", "direction", "fraction", "min_eps")


@click.command("attack")
@click.argument("detector", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--method", "methods", multiple=True, default=("fgsm",), show_default=True, metavar="METHOD", help="Attack method: fgsm, pgd, apgd, square, hsj or auto (the binary AutoAttack cascade); repeat for several (each runs at every --eps).")
@click.option("--eps", "eps", multiple=True, default=("8/255",), show_default=True, metavar="EPS", help="Perturbation budget as a fraction of the pixel range, in (0, 1]: 8/255 or 0.03; repeat or comma-separate for several.")
@click.option("--norm", default="inf", show_default=True, metavar="inf|2", help="Norm bounding the perturbation (L2: eps is the L2 norm of the whole perturbation in [0, 1] pixel units).")
@click.option("--steps", type=click.IntRange(1, 10000), default=None, help="PGD iterations [default: 10].")
@click.option("--step", default=None, metavar="STEP", help="PGD step size in pixel units, e.g. 2/255 [default: 2.5 * eps / steps].")
@click.option("--random-start/--no-random-start", default=None, help="PGD: start from a random point in the eps ball [default: on].")
@click.option("--loss", type=click.Choice(["ce", "margin"]), default=None, help="APGD's loss: cross-entropy or the two-class margin (logit of the true class minus the other) [default: ce].")
@click.option("--queries", type=click.IntRange(1, 10_000_000), default=None, help="Query budget of square / hsj / auto's Square stage [default: 5000 for square, 1000 for hsj].")
@click.option("--restarts", type=click.IntRange(1, 1000), default=None, help="APGD restarts [default: 1].")
@click.option("--direction", type=click.Choice(["both", "evade", "frame"]), default="both", show_default=True, help="evade: attack only fakes (make them pass as real); frame: only real photos; both.")
@click.option("--fraction", default="1", show_default=True, metavar="F", help="Share of the set to attack, in (0, 1]: a stratified, seeded subset (recorded in predictions.csv).")
@click.option("--sanity", is_flag=True, help="Also run a large-eps PGD (64/255, 20 steps) that must drive accuracy near zero; says so when it does not.")
@click.option("--min-eps", is_flag=True, help="Also find each attacked image's minimal eps (8 bisection steps in (0, largest --eps]): RUN/min_eps.csv, plots/min_eps.png, median per class in metrics.md.")
@click.option("--save-images/--no-save-images", default=True, show_default=True, help="Save the delivered adversarial images as PNG under RUN/adversarial/.")
@click.option("--out", type=click.Path(), help="Run folder to write (default: robustlab-runs/attack-NAME-TIME).")
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
@json_option
@mlflow_option
@bootstrap_option
@detector_options
@data_options
@common_options
@with_examples(
    """
robustlab attack detector.yaml data/test --method fgsm --eps 0.05 --fraction 0.3 --out runs/fgsm
robustlab attack detector.yaml data --split test --eps 1/255,4/255,8/255 --out runs/fgsm-sweep
robustlab attack detector.yaml data --split test --method fgsm --method pgd --eps 8/255 --steps 20 --sanity --out runs/pgd
robustlab attack detector.yaml data --split test --method auto --eps 8/255 --direction evade --fraction 0.3 --out runs/auto
robustlab attack detector.yaml data --split test --method pgd --eps 16/255 --min-eps --fraction 0.2 --out runs/min-eps
robustlab evaluate detector.yaml runs/fgsm/adversarial      # the saved set is itself a DATA folder
"""
)
@pass_state
def command(
    state: State,
    detector: str,
    data: str,
    sanity: bool,
    save_images: bool,
    out: str | None,
    force: bool,
    as_json: bool,
    mlflow_uri: str | None,
    bootstrap: int,
    split: str | None,
    class_map: str | None,
    **kwargs: Any,
) -> None:
    """Attack a stratified, seeded --fraction of DATA (IBM ART, true labels: FGSM, PGD, APGD,
    Square, HopSkipJump or the binary AutoAttack cascade) and write a run folder.

    eps is a fraction of the pixel range whatever the model's own scaling (8/255 = eight grey
    levels); adversarial images are delivered as uint8 within that budget. The run folder holds the
    table Original / Adversarial / (Original + Adversarial) per attack (metrics.md, .json, .csv),
    predictions.csv (the attacked images are its `adversarial` lines), attacks.csv (per image:
    realized L-inf / L2 in /255 units, PSNR, SSIM, success), plots/ and, unless --no-save-images,
    the adversarial PNGs under adversarial/, mirroring DATA's relative paths (one sub-folder per
    attack when several ran), so that folder can be evaluated like any DATA.
    """
    from robustlab.attacks.checks import sanity_message
    from robustlab.evaluation.pipeline import run_attacks

    overrides, trust = pop_detector_overrides(kwargs)
    attack = {name: kwargs.pop(name) for name in ATTACK_OPTIONS}  # what each attack is: run_attacks checks them
    outcome = run_attacks(
        detector,
        data,
        **attack,
        sanity=sanity,
        save_images=save_images,
        out=out or default_run_dir("attack", Path(detector).stem),
        split=split,
        classes=class_map,
        trust_model=trust,
        overrides=overrides,
        seed=state.seed,
        batch_size=state.batch_size,
        force=force,
        progress=state.progress,
        command=command_line(),
        bootstrap=bootstrap,
        log=lambda s: echo_err(state, s),
    )
    if not as_json:
        click.echo(outcome.markdown)
    if sanity:
        echo_err(state, f"robustlab: {sanity_message(outcome.sanity)}")
    saved = outcome.result.info.adversarial_images or {}
    if save_images:
        where = Path(outcome.run_dir) / "adversarial"
        several = len(outcome.result.outcomes) > 1
        echo_err(state, f"robustlab: {saved.get('images', 0)} adversarial images saved under {where} (a DATA folder{'; one sub-folder per attack' if several else ''})")
    echo_err(state, f"robustlab: run folder written: {outcome.run_dir}")
    from robustlab.cli.evaluate import finish_run

    finish_run(state, outcome.run_dir, mlflow_uri=mlflow_uri, as_json=as_json)
