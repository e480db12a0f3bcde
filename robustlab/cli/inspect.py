"""``robustlab inspect DETECTOR [DATA]``: what the detector file is and how robustlab would run it."""
from __future__ import annotations

import json
from typing import Any

import click

from robustlab.cli.common import (
    State,
    common_options,
    data_options,
    detector_options,
    pass_state,
    pop_detector_overrides,
    with_examples,
)


@click.command("inspect")
@click.argument("detector", type=click.Path())
@click.argument("data", type=click.Path(), required=False)
@click.option("--sample", type=click.IntRange(2, 100000), default=200, show_default=True, help="Images (stratified, seeded) scored under each preprocessing when DATA is given.")
@click.option("--skew", "skew", type=click.Path(), metavar="SERVING.yaml", help="Also score DATA through a serving pipeline (another spec, say the app's) and report the train/serve skew: score differences, decision flips, accuracy under each.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@detector_options
@data_options
@common_options
@with_examples(
    """
robustlab inspect best_model_effatt.h5                    # what is in the file, without running it
robustlab inspect models/cnn3-128.yaml                    # a profile copied beside its model
robustlab inspect detector.yaml data/test --sample 400    # + which preprocessing and resize backend score best
robustlab inspect cnn3-128.yaml data/test --skew cnn3-128-app.yaml   # + training vs serving pipeline
robustlab inspect model.h5 data --split test --color bgr --scale 0-255 --json
"""
)
@pass_state
def command(state: State, detector: str, data: str | None, sample: int, skew: str | None, as_json: bool, split: str | None, class_map: str | None, **kwargs: Any) -> None:
    """Show what DETECTOR (a spec .yaml or a model file) is: format, who saved it, Lambda layers and
    other code it holds, the loader used (Keras 3, or tf-keras for Keras 2 files), inputs, outputs,
    the spec robustlab would use and what was inferred.

    With labelled DATA, a preprocessing check: a sample is scored under every colour order (RGB,
    BGR) and scale (0-255, 0-1, -1-1, ImageNet), then resized by every backend (pil-*, cv2-*, tf-*),
    with the accuracy and AUC of each, and a warning when the configured preprocessing or resize is
    not the best or the class order looks reversed.

    With --skew SERVING.yaml (and DATA), the same sample also goes through the serving pipeline that
    spec describes (the same model, resized and scaled as the app does it): per-image score
    differences, how many decisions flip, and the accuracy under each pipeline.

    Nothing in the file runs without --trust-model. When the model cannot be loaded, what could be
    read is still printed, then a one-line error (exit code 2).
    """
    from robustlab.detector.inspection import (
        format_report,
        inspect_detector,
        report_path_safe,
    )
    from robustlab.errors import RobustlabError

    overrides, trust = pop_detector_overrides(kwargs)
    report = inspect_detector(
        detector,
        data,
        trust_model=trust,
        split=split,
        classes=class_map,
        sample=sample,
        seed=state.seed,
        batch_size=state.batch_size,
        overrides=overrides,
        skew=skew,
    )
    if as_json:
        click.echo(json.dumps(report_path_safe(report), indent=2, default=str))
    else:
        click.echo(format_report(report), nl=False)
    if not report.get("loaded"):
        # the report's error is already one line: file, problem, fix
        raise RobustlabError(str(report.get("error") or "the model could not be loaded"))
