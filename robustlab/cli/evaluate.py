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
from robustlab.cli.report import inconclusive_option, json_option
from robustlab.cli.threshold import threshold_options


def bootstrap_option(f: Any) -> Any:
    return click.option(
        "--bootstrap",
        type=click.IntRange(0, 1_000_000),
        default=1000,
        show_default=True,
        metavar="N",
        help="Bootstrap resamples (stratified, seeded with --seed) for the 95% intervals of accuracy, AUC and TPR@1%FPR on every row; 0: no intervals.",
    )(f)


def _check_mlflow(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--mlflow`` is checked when parsed, before any work (exit 2 naming the install when missing)."""
    if value is not None:
        from robustlab.tracking import check_mlflow

        check_mlflow(value)
    return value


def mlflow_option(f: Any) -> Any:
    return click.option(
        "--mlflow",
        "mlflow_uri",
        is_flag=False,
        flag_value="./mlruns",
        default=None,
        metavar="[URI]",
        callback=_check_mlflow,
        help="Also log the run to MLflow: parameters, every row's metrics, the run folder as artifacts (default URI ./mlruns, a local file store; put it last or write --mlflow=URI). Needs pip install 'robustlab[mlflow]'.",
    )(f)


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
@bootstrap_option
@inconclusive_option
@threshold_options
@json_option
@mlflow_option
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
robustlab evaluate detector.yaml data/test --suite configs/suites/ci-quick.yaml --json > result.json
"""
)
@pass_state
def command(state: State, detector: str, data: str, out: str | None, force: bool, split: str | None, class_map: str | None, as_json: bool, mlflow_uri: str | None, **kwargs: Any) -> None:
    """Evaluate DETECTOR (a spec .yaml or a model file) on DATA and write a run folder.

    DATA is a folder with real/ and fake/ sub-folders, a split root (with --split), a manifest CSV
    (path,label) or an .npz (x uint8 N x H x W x 3, y 0/1). The run folder holds run.json,
    metrics.json/.csv/.md, predictions.csv and plots/.
    """
    from robustlab.errors import PolicyFailed
    from robustlab.evaluation.pipeline import plan_evaluation, run

    overrides, trust = pop_detector_overrides(kwargs)
    plan = plan_evaluation(
        detector,
        data,
        out=out or default_run_dir("evaluate", Path(detector).stem),
        split=split,
        classes=class_map,
        trust_model=trust,
        overrides=overrides,
        attacks=kwargs.pop("attacks", ()),
        corruptions=kwargs.pop("corruptions", ()),
        suite=kwargs.pop("suite_path", None),
        attack_fraction=kwargs.pop("attack_fraction", None),
        sanity=bool(kwargs.pop("sanity", False)),
        val=kwargs.pop("val_data", None),
        val_split=kwargs.pop("val_split", None),
        threshold_strategy=kwargs.pop("threshold_strategy", None),
        allow_same_data=bool(kwargs.pop("allow_same_data", False)),
        policy=kwargs.pop("policy_path", None),
        baseline=kwargs.pop("baseline_path", None),
        formats=kwargs.pop("report_formats", None),
        seed=state.seed,
        batch_size=state.batch_size,
        force=force,
        progress=state.progress,
        command=command_line(),
        bootstrap=kwargs.pop("bootstrap"),
        inconclusive=kwargs.pop("inconclusive"),
    )
    outcome = run(plan, log=lambda s: echo_err(state, s))
    report = outcome.report
    if not as_json:
        click.echo(tables_without_policy(outcome.markdown or "", report))
    if plan.sanity:
        from robustlab.attacks.checks import sanity_message

        echo_err(state, f"robustlab: {sanity_message(outcome.sanity)}")
    echo_err(state, f"robustlab: run folder written: {outcome.run_dir}")
    if report is not None:
        from robustlab.cli.report import print_outcome

        print_outcome(state, report, as_json=as_json)
    finish_run(state, outcome.run_dir, mlflow_uri=mlflow_uri, as_json=as_json, report=report)  # type: ignore[arg-type]
    if report is not None and not outcome.passed:
        raise PolicyFailed(report.policy.summary())  # type: ignore[union-attr]


def finish_run(state: State, run_dir: "str | Path", *, mlflow_uri: str | None, as_json: bool, report: Any = None) -> None:
    """After a run folder is written: ``--mlflow`` logs it (:func:`robustlab.tracking.log_run`),
    ``--json`` prints its JSON document on stdout (with ``report``'s policy verdict)."""
    if mlflow_uri is not None:
        from robustlab.tracking import log_run, tracking_uri

        run_id = log_run(run_dir, mlflow_uri)
        echo_err(state, f"robustlab: logged to MLflow {tracking_uri(mlflow_uri)} (experiment robustlab, run {run_id})")
    if as_json:
        from robustlab.reporting.publish import outcome_json

        click.echo(outcome_json(run_dir, report))


def tables_without_policy(markdown: str, report: Any) -> str:
    """metrics.md as printed by evaluate: the policy section left out, since the rule lines and the
    "N of N" summary follow (the file on disk keeps it)."""
    if report is None or report.policy is None:
        return markdown
    from robustlab.reporting.policy import policy_markdown
    from robustlab.reporting.publish import MD_MARKER

    head, marker, tail = markdown.partition(MD_MARKER)
    tail = tail.replace(policy_markdown(report.policy), "")
    return head + marker + tail if tail.strip() else head.rstrip("\n") + "\n"
