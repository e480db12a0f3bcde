"""The whole ``robustlab evaluate`` as one library call a notebook user can make too.

:func:`run_evaluation` composes the pieces in the order the command line uses them: open the data
and the detector, parse attacks / corruptions / a suite, pick a threshold on a validation set,
check the report plan (policy, baseline) *before* the long work, run :func:`robustlab.evaluation.engine.evaluate`,
then the policy and baseline reports. Every argument takes the same strings as the CLI flags.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from robustlab.errors import RobustlabError


@dataclass
class EvaluationRun:
    """What :func:`run_evaluation` returns."""

    result: Any  # robustlab.evaluation.engine.EvaluationResult
    report: Any | None  # robustlab.publish.ReportOutcome when a policy, baseline or formats asked
    sanity: dict[str, Any] | None

    @property
    def run_dir(self) -> Path | None:
        return self.result.run_dir

    @property
    def passed(self) -> bool:
        """False when a policy rule failed."""
        return self.report is None or bool(self.report.passed)


def select_threshold_on(
    detector: Any,
    data: Any,
    val: "str | Path | None",
    *,
    val_split: str | None = None,
    classes: "str | Mapping[str, Any] | None" = None,
    strategy: str | None = None,
    allow_same_data: bool = False,
    threshold_given: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> Any:
    """A :class:`robustlab.evaluation.selection.ThresholdSelection` picked on ``val`` (None without ``val``)."""
    if val is None:
        if strategy is not None:
            raise RobustlabError("--threshold-strategy needs a validation set to pick on", fix="add --val VALDATA (a split other than the evaluated one)")
        return None
    if threshold_given:
        raise RobustlabError("--threshold and --val both set the threshold", fix="drop --threshold, or use --threshold-strategy fixed:T")
    from robustlab.data import open_dataset
    from robustlab.evaluation.selection import select_threshold
    from robustlab.evaluation.thresholds import parse_strategy

    strat = parse_strategy(strategy or "max-f1")
    val_set = open_dataset(val, split=val_split, classes=classes)
    sel = select_threshold(detector, val_set, strat, data=data, allow_same_data=allow_same_data, seed=seed, batch_size=batch_size, progress=progress)
    c = sel.choice
    f1 = "n/a" if c.f1 is None else f"{c.f1:.4f}"
    log(f"robustlab: threshold {c.threshold:.6g} picked by {c.strategy} on {val_set.root} (validation F1 {f1}); applied to every set")
    if sel.same_data_allowed:
        log("robustlab: warning: the threshold was picked on images that are evaluated (--allow-same-data); the report flags it")
    return sel


def run_evaluation(
    detector: "str | Path | Any",
    data: "str | Path | Any",
    *,
    out: "str | Path | None" = None,
    split: str | None = None,
    classes: "str | Mapping[str, Any] | None" = None,
    trust_model: bool = False,
    overrides: Mapping[str, Any] | None = None,
    attacks: Sequence[str] = (),
    corruptions: Sequence[str] = (),
    suite: "str | Path | None" = None,
    attack_fraction: "str | float | None" = None,
    sanity: bool = False,
    val: "str | Path | None" = None,
    val_split: str | None = None,
    threshold_strategy: str | None = None,
    allow_same_data: bool = False,
    policy: "str | Path | None" = None,
    baseline: "str | Path | None" = None,
    formats: "str | Sequence[str] | None" = None,
    seed: int = 0,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = False,
    command: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> EvaluationRun:
    """Evaluate ``detector`` on ``data`` with the given attacks, corruptions, suite, threshold
    selection and policy; write the run folder ``out`` (None: nothing written, no reports).

    ``detector`` / ``data`` may be paths (opened with ``split``, ``classes``, ``trust_model`` and
    spec ``overrides``) or already loaded :class:`~robustlab.detector.model.Detector` /
    :class:`~robustlab.data.Dataset` objects. Raises RobustlabError for bad input (before any long
    work where it can be known up front). A failed policy does not raise: check ``.passed``.
    """
    from robustlab.attacks.checks import attack_checks
    from robustlab.attacks.spec import parse_attack_fraction
    from robustlab.attacks.variant import parse_attacks
    from robustlab.corruptions.variant import parse_corruptions
    from robustlab.data import Dataset, open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.detector.model import Detector
    from robustlab.evaluation.engine import evaluate
    from robustlab.evaluation.suites import load_suite
    from robustlab.reporting.publish import plan_report, report_run
    from robustlab.runs import check_out

    overrides = dict(overrides or {})
    # everything that can be checked without the model, first
    loaded_suite = load_suite(suite) if suite else None
    plan = plan_report(policy=policy or (loaded_suite.policy if loaded_suite else None), baseline=baseline, formats=formats)
    suite_variants = loaded_suite.variants() if loaded_suite else []
    corruption_variants = parse_corruptions(list(corruptions))
    attack_variants = parse_attacks(list(attacks))
    fraction = None if attack_fraction is None else parse_attack_fraction(attack_fraction, what="--attack-fraction")

    dataset = data if isinstance(data, Dataset) else open_dataset(data, split=split, classes=classes)
    det = detector if isinstance(detector, Detector) else load_detector(detector, trust_model=trust_model, **overrides)
    if out is not None:  # a bad --out is refused before the validation set is scored
        check_out(out, force=force, inputs=(det, dataset, val))
    selection = select_threshold_on(
        det,
        dataset,
        val,
        val_split=val_split,
        classes=classes,
        strategy=threshold_strategy,
        allow_same_data=allow_same_data,
        threshold_given="threshold" in overrides,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        log=log,
    )
    config: dict[str, Any] = {
        "detector": str(detector) if not isinstance(detector, Detector) else det.name,
        "data": str(data) if not isinstance(data, Dataset) else str(dataset.root),
        "split": split,
        "classes": classes if not isinstance(classes, Mapping) else dict(classes),
        "overrides": overrides,
        "trust_model": trust_model,
        "out": None if out is None else str(out),
    }
    variants: list[Any] = list(attack_variants)
    if attack_variants:
        config["attacks"] = [v.spec.describe() for v in attack_variants]
    for cv in corruption_variants:
        cv.check_input_size(det.input_size, thing=str(detector))
    variants.extend(corruption_variants)
    if corruption_variants:
        config["corruptions"] = [f"{cv.name}:{cv.severity}" for cv in corruption_variants]
    fraction_used = 1.0
    if loaded_suite is not None:  # the suite's attacks and corruptions, after the flags' (repeats run once)
        for sv in suite_variants:
            if hasattr(sv, "check_input_size"):
                sv.check_input_size(det.input_size, thing=loaded_suite.source)
        seen = {(v.variant, v.param) for v in variants}
        variants.extend(sv for sv in suite_variants if (sv.variant, sv.param) not in seen)
        if loaded_suite.attack_fraction is not None:
            fraction_used = loaded_suite.attack_fraction
        config["suite"] = loaded_suite.to_info()
    if fraction is not None:
        fraction_used = config["attack_fraction"] = fraction
    extra_info: dict[str, Any] = {}  # per-attack totals and the sanity outcome, for run.json
    checks = attack_checks(det, dataset, variants, sanity=sanity, seed=seed, batch_size=batch_size, info=extra_info)
    plan.check_data(dataset.fingerprint(), str(data))
    result = evaluate(
        det,
        dataset,
        out=out,
        variants=variants,
        attack_fraction=fraction_used,
        seed=seed,
        batch_size=batch_size,
        force=force,
        progress=progress,
        command=command,
        config=config,
        threshold_selection=selection,
        checks=checks,
        extra_info=extra_info or None,
    )
    outcome = None
    if plan.needed and result.run_dir is not None:  # evaluate already wrote report.html; a policy, baseline or --format adds to it
        outcome = report_run(result.run_dir, plan)
    return EvaluationRun(result=result, report=outcome, sanity=extra_info.get("sanity") if sanity else None)
