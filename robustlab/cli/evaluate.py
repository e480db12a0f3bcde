"""``robustlab evaluate DETECTOR DATA``: the whole robustness evaluation into one run folder."""
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
from robustlab.cli.threshold import selection_from_options, threshold_options


@click.command("evaluate")
@click.argument("detector", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--out", type=click.Path(), help="Run folder to write (default: robustlab-runs/evaluate-NAME-TIME).")
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
@click.option("--suite", "suite_path", type=click.Path(), help="Suite YAML: attacks, corruptions, attack_fraction and policy to run (ready ones in configs/suites/).")
@click.option("--policy", "policy_path", type=click.Path(), help="Policy YAML to check the run against (default: the suite's): exit 1 when a rule fails; writes junit.xml.")
@click.option("--baseline", "baseline_path", type=click.Path(), help="A finished run of the same suite on the same data: side-by-side deltas, regression() rules.")
@click.option("--format", "report_formats", metavar="LIST", help="Reports written at the end: html, md, json, junit (default: html,md,json, plus junit with a policy).")
@click.option("--attack", "attacks", multiple=True, metavar="SPEC", help="Add adversarial sets (repeatable): fgsm:eps=2/255,8/255 or pgd:eps=8/255,steps=10 (also step=, norm=inf|2, random_start=true|false); one set per eps.")
@click.option("--attack-fraction", default=None, metavar="F", help="Share of the set to attack, in (0, 1]: a stratified, seeded subset [default: the suite's, else 1].")
@click.option("--sanity", is_flag=True, help="Also run a large-eps PGD (64/255, 20 steps) that must drive accuracy near zero; warns when it does not.")
@click.option("--corruption", "corruptions", multiple=True, metavar="NAME[:SEVERITIES]", help="Add corrupted sets (repeatable): jpeg, blur, resize, noise, social, e.g. jpeg:1-5 or blur:3 (default severities 1-5).")
@threshold_options
@detector_options
@data_options
@common_options
@with_examples(
    """
robustlab evaluate detector.yaml data/test --out runs/clean
robustlab evaluate model.keras cifake/ --split test --scale 0-255 --out runs/b2
robustlab evaluate detector.yaml test.csv --threshold 0.42 --out runs/t42
robustlab evaluate detector.yaml data/test --attack fgsm:eps=2/255,8/255 --attack pgd:eps=8/255,steps=10 --out runs/adv
robustlab evaluate detector.yaml data/test --corruption jpeg:1-5 --corruption blur:3 --out runs/corrupted
robustlab evaluate detector.yaml data --split test --val data --val-split val --threshold-strategy max-f1
robustlab evaluate detector.yaml data/test --suite configs/suites/ci-quick.yaml --out runs/pr
robustlab evaluate detector.yaml data/test --suite configs/suites/nightly.yaml --baseline runs/last --out runs/nightly
"""
)
@pass_state
def command(state: State, detector: str, data: str, out: str | None, force: bool, split: str | None, class_map: str | None, **kwargs: Any) -> None:
    """Evaluate DETECTOR (a spec .yaml or a model file) on DATA and write a run folder.

    DATA is a folder with real/ and fake/ sub-folders, a split root (with --split), a manifest CSV
    (path,label) or an .npz (x uint8 N x H x W x 3, y 0/1). The run folder holds run.json,
    metrics.json/.csv/.md, predictions.csv and plots/.
    """
    from robustlab.data import open_dataset
    from robustlab.detector import load_detector
    from robustlab.evaluate import evaluate
    from robustlab.publish import plan_report
    from robustlab.suites import load_suite

    suite_path, policy_path, baseline_path, report_formats = (kwargs.pop(k, None) for k in ("suite_path", "policy_path", "baseline_path", "report_formats"))
    suite = load_suite(suite_path) if suite_path else None
    # policy and baseline are checked before the (long) evaluation, the suite's strings too
    plan = plan_report(policy=policy_path or (suite.policy if suite else None), baseline=baseline_path, formats=report_formats)
    suite_variants = suite.variants() if suite else []

    from robustlab.corruptions import parse_corruptions

    corruption_variants = parse_corruptions(kwargs.pop("corruptions", ()))
    from robustlab.attacks import attack_checks, parse_attack_fraction, parse_attacks, sanity_message

    attack_variants = parse_attacks(kwargs.pop("attacks", ()))
    fraction_flag = kwargs.pop("attack_fraction", None)
    fraction_flag = None if fraction_flag is None else parse_attack_fraction(fraction_flag, what="--attack-fraction")
    sanity = bool(kwargs.pop("sanity", False))
    overrides, trust = pop_detector_overrides(kwargs)
    dataset = open_dataset(data, split=split, classes=class_map)
    det = load_detector(detector, trust_model=trust, **overrides)
    selection = selection_from_options(state, det, dataset, kwargs, overrides, class_map)
    out = out or default_run_dir("evaluate", det.name)
    config: dict[str, Any] = {"detector": detector, "data": data, "split": split, "classes": class_map, "overrides": overrides, "trust_model": trust, "out": out}
    # Attacks and corruptions add their variants here (see robustlab.evaluate.Variant).
    variants: list[Any] = list(attack_variants)
    if attack_variants:
        config["attacks"] = [v.spec.describe() for v in attack_variants]
    for cv in corruption_variants:
        cv.check_input_size(det.input_size, thing=detector)
    variants.extend(corruption_variants)
    if corruption_variants:
        config["corruptions"] = [f"{cv.name}:{cv.severity}" for cv in corruption_variants]
    attack_fraction = 1.0
    if suite is not None:  # the suite's attacks and corruptions, after the flags' (repeats run once)
        for sv in suite_variants:
            if hasattr(sv, "check_input_size"):
                sv.check_input_size(det.input_size, thing=suite.source)
        seen = {(v.variant, v.param) for v in variants}
        variants.extend(sv for sv in suite_variants if (sv.variant, sv.param) not in seen)
        if suite.attack_fraction is not None:
            attack_fraction = suite.attack_fraction
        config["suite"] = suite.to_info()
    if fraction_flag is not None:
        attack_fraction = config["attack_fraction"] = fraction_flag
    extra_info: dict[str, Any] = {}  # per-attack totals and the sanity outcome, for run.json
    checks = attack_checks(det, dataset, variants, sanity=sanity, seed=state.seed, batch_size=state.batch_size, info=extra_info)
    plan.check_data(dataset.fingerprint(), data)
    result = evaluate(
        det,
        dataset,
        out=out,
        variants=variants,
        attack_fraction=attack_fraction,
        seed=state.seed,
        batch_size=state.batch_size,
        force=force,
        progress=state.progress,
        command=command_line(),
        config=config,
        threshold_selection=selection,
        checks=checks,
        extra_info=extra_info or None,
    )
    click.echo((Path(result.run_dir) / "metrics.md").read_text(encoding="utf-8"))
    if sanity:
        echo_err(state, f"robustlab: {sanity_message(extra_info.get('sanity', {}))}")
    echo_err(state, f"robustlab: run folder written: {result.run_dir}")
    from robustlab.cli.report import print_outcome
    from robustlab.errors import PolicyFailed
    from robustlab.publish import report_run

    if plan.needed:  # evaluate already wrote report.html; a policy, baseline or --format adds to it
        outcome = report_run(result.run_dir, plan)  # policy verdict, baseline deltas, junit.xml
        print_outcome(state, outcome)
        if not outcome.passed:
            raise PolicyFailed(outcome.policy.summary())  # type: ignore[union-attr]
