"""The evaluation commands as library calls a notebook user can make too: plan, then run.

:func:`plan_evaluation` takes the same strings as the ``robustlab evaluate`` flags, checks
everything that can be checked before the long work (suite, policy, baseline, attack and
corruption specs, the data, the detector, its gradients) and returns a frozen
:class:`EvaluationPlan`; :func:`run` executes a plan: pick a threshold on a validation set, run the
engine (:func:`robustlab.evaluation.engine.evaluate_variants`), the sanity check, then the
reporting step that writes the run folder once (:func:`robustlab.reporting.runfolder.write_run_folder`).

:func:`run_evaluation` (``robustlab evaluate``) and :func:`run_attacks` (``robustlab attack``) are
``run(plan_...(...))``; :func:`evaluate` is the engine plus an optional run folder, for notebooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from robustlab.data import Dataset, open_dataset
from robustlab.detector.loading import load_detector
from robustlab.detector.model import Detector
from robustlab.errors import RobustlabError
from robustlab.evaluation.engine import Check, attacked_subset, evaluate_variants
from robustlab.metrics import DEFAULT_BOOTSTRAP
from robustlab.results import EvaluationResult, Hook, Variant

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.attacks.checks import SanityOutcome
    from robustlab.reporting.publish import ReportOutcome, ReportPlan

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default ``log``: say nothing."""


@dataclass(frozen=True)
class ValidationRequest:
    """Pick the threshold on a validation set (``--val``) before the evaluation."""

    data: "str | Path"
    split: str | None = None
    strategy: str | None = None
    allow_same_data: bool = False


@dataclass(frozen=True)
class AdversarialOutput:
    """Save the delivered adversarial images (``robustlab attack``): PNGs under ``RUN/adversarial/``
    unless ``save_images`` is off, and always the per-image table ``RUN/attacks.csv``."""

    save_images: bool = True
    min_eps: int = 0  # --min-eps: bisection steps of the minimal perturbation per image (0: off)


@dataclass(frozen=True)
class EvaluationPlan:
    """One evaluation, validated and ready to run (:func:`run`). Build it with :func:`plan_evaluation`."""

    detector: Detector
    data: Dataset
    variants: tuple[Variant, ...] = ()
    attack_fraction: float = 1.0
    out: Path | None = None
    force: bool = False
    validation: ValidationRequest | None = None
    classes: "str | Mapping[str, Any] | None" = None
    report: "ReportPlan | None" = None
    sanity: bool = False
    adversarial: AdversarialOutput | None = None
    seed: int = 0
    batch_size: int = 32
    progress: bool = False
    command: tuple[str, ...] | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    detector_info: Mapping[str, Any] | None = None  # run.json's detector, when not detector.describe()
    demo: Mapping[str, Any] | None = None  # run.json's demo section (robustlab demo)
    bootstrap: int = DEFAULT_BOOTSTRAP  # resamples for every row's 95% intervals (0: none)


@dataclass(frozen=True)
class EvaluationRun:
    """What :func:`run` returns: the result, the text of metrics.md, the report and sanity outcomes."""

    result: EvaluationResult
    markdown: str | None = None
    report: "ReportOutcome | None" = None
    sanity: "SanityOutcome | None" = None

    @property
    def run_dir(self) -> Path | None:
        return self.result.run_dir

    @property
    def passed(self) -> bool:
        """False when a policy rule failed."""
        return self.report is None or bool(self.report.passed)


def _merge_variants(*groups: Sequence[Variant]) -> tuple[Variant, ...]:
    """All variants in order; a repeat (same variant and param) runs once."""
    out: list[Variant] = []
    seen: set[tuple[str, str]] = set()
    for group in groups:
        for v in group:
            if (v.variant, v.param) not in seen:
                seen.add((v.variant, v.param))
                out.append(v)
    return tuple(out)


def _load_inputs(detector: "str | Path | Detector", data: "str | Path | Dataset", *, split: str | None, classes: Any, trust_model: bool, overrides: Mapping[str, Any]) -> tuple[Detector, Dataset]:
    dataset = data if isinstance(data, Dataset) else open_dataset(data, split=split, classes=classes)
    det = detector if isinstance(detector, Detector) else load_detector(detector, trust_model=trust_model, **dict(overrides))
    return det, dataset


def _config(detector: Any, data: Any, det: Detector, dataset: Dataset, *, split: str | None, classes: Any, overrides: Mapping[str, Any], trust_model: bool, out: Any) -> dict[str, Any]:
    """run.json's ``config``: the inputs as the user gave them."""
    return {
        "detector": det.name if isinstance(detector, Detector) else str(detector),
        "data": str(dataset.root) if isinstance(data, Dataset) else str(data),
        "split": split,
        "classes": dict(classes) if isinstance(classes, Mapping) else classes,
        "overrides": dict(overrides),
        "trust_model": trust_model,
        "out": None if out is None else str(out),
    }


def plan_evaluation(
    detector: "str | Path | Detector",
    data: "str | Path | Dataset",
    *,
    out: "str | Path | None" = None,
    split: str | None = None,
    classes: "str | Mapping[str, Any] | None" = None,
    trust_model: bool = False,
    overrides: Mapping[str, Any] | None = None,
    attacks: Sequence["str | Variant"] = (),
    corruptions: Sequence["str | Variant"] = (),
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
    adversarial: AdversarialOutput | None = None,
    seed: int = 0,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = False,
    command: Sequence[str] | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    inconclusive: str = "fail",
) -> EvaluationPlan:
    """Check an evaluation up front and return its :class:`EvaluationPlan` (RobustlabError, exit 2,
    for bad input: nothing is run or written).

    ``detector`` / ``data`` may be paths (opened with ``split``, ``classes``, ``trust_model`` and
    spec ``overrides``) or a loaded :class:`~robustlab.detector.model.Detector` /
    :class:`~robustlab.data.Dataset`. ``attacks`` / ``corruptions`` take the CLI strings
    (``fgsm:eps=2/255,8/255``, ``jpeg:1-5``) or variants; a ``suite`` adds its own after them.
    ``bootstrap``: resamples for the rows' 95% intervals (0: none); ``inconclusive``
    (``fail`` | ``pass`` | ``warn``): how a policy rule whose interval straddles its limit counts.
    """
    from robustlab.attacks.checks import attack_checks
    from robustlab.attacks.spec import parse_attack_fraction
    from robustlab.attacks.variant import parse_attacks
    from robustlab.corruptions.variant import parse_corruptions
    from robustlab.evaluation.suites import load_suite
    from robustlab.reporting.publish import plan_report
    from robustlab.runs import check_out

    overrides = dict(overrides or {})
    if val is None and threshold_strategy is not None:
        raise RobustlabError("--threshold-strategy needs a validation set to pick on", fix="add --val VALDATA (a split other than the evaluated one)")
    if val is not None and "threshold" in overrides:
        raise RobustlabError("--threshold and --val both set the threshold", fix="drop --threshold, or use --threshold-strategy fixed:T")
    # everything that can be checked without the model, first
    loaded_suite = load_suite(suite) if suite else None
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise RobustlabError(f"bootstrap must be a whole number of resamples >= 0, not {bootstrap!r}", thing="--bootstrap", fix="use e.g. --bootstrap 1000, or 0 for no intervals")
    report = plan_report(policy=policy or (loaded_suite.policy if loaded_suite else None), baseline=baseline, formats=formats, inconclusive=inconclusive)
    attack_variants = parse_attacks([a for a in attacks if isinstance(a, str)]) + [a for a in attacks if not isinstance(a, str)]
    corruption_variants = parse_corruptions([c for c in corruptions if isinstance(c, str)]) + [c for c in corruptions if not isinstance(c, str)]
    fraction = None if attack_fraction is None else parse_attack_fraction(attack_fraction, what="--attack-fraction")
    det, dataset = _load_inputs(detector, data, split=split, classes=classes, trust_model=trust_model, overrides=overrides)
    if out is not None:  # a bad --out is refused before any work (it may not be, hold or lie in an input)
        check_out(out, force=force, inputs=(det, dataset, val))
    config = _config(detector, data, det, dataset, split=split, classes=classes, overrides=overrides, trust_model=trust_model, out=out)
    config["bootstrap"] = bootstrap
    if attack_variants:
        config["attacks"] = [v.spec.describe() for v in attack_variants if hasattr(v, "spec")]
    if corruption_variants:
        config["corruptions"] = [f"{cv.variant}:{cv.param.removeprefix('severity=')}" for cv in corruption_variants]
    suite_variants: list[Variant] = list(loaded_suite.variants()) if loaded_suite is not None else []
    fraction_used = 1.0
    if loaded_suite is not None:  # the suite's attacks and corruptions, after the flags' (repeats run once)
        config["suite"] = loaded_suite.to_info()
        if loaded_suite.attack_fraction is not None:
            fraction_used = loaded_suite.attack_fraction
    if fraction is not None:
        fraction_used = config["attack_fraction"] = fraction
    if adversarial is not None:
        config.update({"fraction": fraction_used, "sanity": sanity, "save_images": adversarial.save_images})
        if adversarial.min_eps:
            config["min_eps"] = {"bisections": adversarial.min_eps}
    variants = _merge_variants(attack_variants, corruption_variants, suite_variants)
    for v in variants:  # a corruption needs images of a minimum size
        if hasattr(v, "check_input_size"):
            v.check_input_size(det.input_size, thing=str(loaded_suite.source if v in suite_variants else detector))
    checks = attack_checks(det, variants, sanity=sanity)  # refuses a detector without gradients, up front
    report.check_data(dataset.fingerprint(), str(data))
    validation = ValidationRequest(val, val_split, threshold_strategy, allow_same_data) if val is not None else None
    return EvaluationPlan(
        det,
        dataset,
        variants,
        fraction_used,
        None if out is None else Path(out),
        force,
        validation,
        classes,
        report,
        sanity,
        adversarial,
        seed,
        batch_size,
        progress,
        None if command is None else tuple(command),
        config,
        tuple(checks),
        bootstrap=bootstrap,
    )


def select_threshold_on(plan: EvaluationPlan, *, log: Log = _quiet) -> Any:
    """The :class:`robustlab.evaluation.selection.ThresholdSelection` the plan asks for (None without ``--val``)."""
    from robustlab.evaluation.selection import select_threshold
    from robustlab.evaluation.thresholds import parse_strategy

    req = plan.validation
    if req is None:
        return None
    strat = parse_strategy(req.strategy or "max-f1")
    val_set = open_dataset(req.data, split=req.split, classes=plan.classes)
    sel = select_threshold(plan.detector, val_set, strat, data=plan.data, allow_same_data=req.allow_same_data, seed=plan.seed, batch_size=plan.batch_size, progress=plan.progress)
    c = sel.choice
    f1 = "n/a" if c.f1 is None else f"{c.f1:.4f}"
    log(f"robustlab: threshold {c.threshold:.6g} picked by {c.strategy} on {val_set.root} (validation F1 {f1}); applied to every set")
    if sel.same_data_allowed:
        log("robustlab: warning: the threshold was picked on images that are evaluated (--allow-same-data); the report flags it")
    return sel


def example_collector(plan: EvaluationPlan) -> Any:
    """The report's example strip: a few images per class, from the attacked subset when there is one."""
    import numpy as np

    from robustlab.reporting.examples import ExampleCollector, pick_examples

    labels = plan.data.labels_for(plan.detector.positive)
    subset = attacked_subset(plan.detector, plan.data, plan.variants, plan.attack_fraction, plan.seed)  # the engine's own
    eligible = None
    if len(subset):
        eligible = np.zeros(len(plan.data), dtype=bool)
        eligible[subset] = True
    return ExampleCollector(pick_examples(labels, eligible))


def run(plan: EvaluationPlan, *, log: Log = _quiet) -> EvaluationRun:
    """Execute ``plan``: threshold selection, the engine, the sanity check, then (with ``plan.out``)
    the run folder, written once. A failed policy does not raise: check ``.passed``."""
    from robustlab.runs import RunFolder

    selection = select_threshold_on(plan, log=log)
    if plan.out is None:
        result = _engine(plan, selection, hooks=())
        sanity = _sanity(plan)
        return EvaluationRun(_with_sanity(result, sanity), None, None, sanity)
    from robustlab.reporting.runfolder import write_run_folder

    with RunFolder(plan.out, force=plan.force, inputs=_inputs(plan)) as folder:
        examples = example_collector(plan)
        hooks: list[Hook] = [examples]
        writer = None
        if plan.adversarial is not None:
            from robustlab.attacks.writer import AdversarialWriter

            writer = AdversarialWriter(folder.path("adversarial"), plan.data, plan.variants, table=folder.path("attacks.csv"), save_images=plan.adversarial.save_images)
            hooks.append(writer)
        min_eps = None
        if plan.adversarial is not None and plan.adversarial.min_eps:
            from robustlab.attacks.min_eps import MinEpsHook

            min_eps = MinEpsHook(plan.detector, MinEpsHook.largest_per_method(plan.variants), seed=plan.seed, bisections=plan.adversarial.min_eps)
            hooks.append(min_eps)
        result = _engine(plan, selection, hooks=hooks)
        sanity = _sanity(plan)
        result = _with_sanity(result, sanity)
        if plan.demo is not None:
            result = replace(result, info=replace(result.info, demo=dict(plan.demo)))
        if writer is not None:
            result = replace(result, info=replace(result.info, adversarial_images=writer.summary()))
        sections = [] if min_eps is None else [min_eps.write(folder, plan.data)]
        written = write_run_folder(folder, result, plan.data, examples=examples, plan=plan.report, sections=sections)
    return EvaluationRun(written.result, written.markdown, written.report, sanity)


def _inputs(plan: EvaluationPlan) -> tuple[Any, ...]:
    """What the plan reads: the run folder may not be, hold or lie inside any of it."""
    return (plan.detector, plan.data, None if plan.validation is None else plan.validation.data)


def _engine(plan: EvaluationPlan, selection: Any, *, hooks: Sequence[Hook]) -> EvaluationResult:
    return evaluate_variants(
        plan.detector,
        plan.data,
        variants=plan.variants,
        attack_fraction=plan.attack_fraction,
        threshold_selection=selection,
        seed=plan.seed,
        batch_size=plan.batch_size,
        progress=plan.progress,
        hooks=hooks,
        checks=plan.checks,
        command=plan.command,
        config=dict(plan.config),
        detector_info=None if plan.detector_info is None else dict(plan.detector_info),
        bootstrap=plan.bootstrap,
    )


def _sanity(plan: EvaluationPlan) -> "SanityOutcome | None":
    if not plan.sanity:
        return None
    from robustlab.attacks.checks import sanity_check

    return sanity_check(plan.detector, plan.data, seed=plan.seed, batch_size=plan.batch_size)


def _with_sanity(result: EvaluationResult, sanity: "SanityOutcome | None") -> EvaluationResult:
    """The result with the sanity outcome in run.json and its warning among the diagnostics."""
    import sys

    if sanity is None:
        return result
    warnings = sanity.warnings()
    for w in warnings:
        print(f"robustlab: warning: {w}", file=sys.stderr)
    diagnostics = [*result.diagnostics, *warnings]
    info = replace(result.info, sanity=sanity.to_dict(), diagnostics=list(diagnostics))
    return replace(result, info=info, diagnostics=diagnostics)


def run_evaluation(detector: "str | Path | Detector", data: "str | Path | Dataset", *, log: Log = _quiet, **options: Any) -> EvaluationRun:
    """Everything ``robustlab evaluate`` does, with the same strings as its flags:
    ``run(plan_evaluation(detector, data, **options))``. See :func:`plan_evaluation` for the options."""
    return run(plan_evaluation(detector, data, **options), log=log)


def run_attacks(
    detector: "str | Path | Detector",
    data: "str | Path | Dataset",
    *,
    methods: Sequence[str] = ("fgsm",),
    eps: Sequence["str | float"] = ("8/255",),
    norm: str = "inf",
    steps: int | None = None,
    step: "str | float | None" = None,
    random_start: bool | None = None,
    loss: str | None = None,
    queries: int | None = None,
    restarts: int | None = None,
    direction: str = "both",
    fraction: "str | float" = 1.0,
    sanity: bool = False,
    save_images: bool = True,
    min_eps: bool = False,
    log: Log = _quiet,
    **options: Any,
) -> EvaluationRun:
    """Everything ``robustlab attack`` does: each method at every eps on a stratified, seeded
    ``fraction`` of ``data``, the delivered images saved under ``RUN/adversarial/`` (a DATA folder)
    with ``RUN/attacks.csv``, and the clean / adversarial / mixed tables. Each method takes the
    options it has (``steps`` for pgd / apgd / auto, ``loss`` and ``restarts`` for apgd, ``queries``
    for square / hsj / auto...); an option no given method takes is refused. ``options`` as for
    :func:`plan_evaluation` (``out``, ``split``, ``classes``, ``trust_model``, ``overrides``, ``seed``...).
    ``min_eps``: also bisect each attacked image's minimal eps in (0, largest eps] per method
    (:mod:`robustlab.attacks.min_eps`: ``RUN/min_eps.csv``, ``plots/min_eps.png``, a metrics.md section)."""
    from robustlab.attacks.spec import _OPTIONS, AttackMethod, parse_attack_fraction
    from robustlab.attacks.variant import make_attacks

    attack_fraction = parse_attack_fraction(fraction, what="--fraction")
    names = [AttackMethod.parse(m.strip().lower(), what="attack", thing="--method") for m in methods]
    flags = {"steps": steps, "step": step, "random_start": random_start, "loss": loss, "queries": queries, "restarts": restarts}
    unused = [k for k, v in flags.items() if v is not None and not any(k in _OPTIONS[m] for m in names)]
    if unused:
        takers = sorted({m.value for k in unused for m in AttackMethod if k in _OPTIONS[m]})
        given = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise RobustlabError(f"{given} {'is an option' if len(unused) == 1 else 'are options'} of {' / '.join(takers)} only", thing="robustlab attack", fix=f"add --method {takers[0]}, or drop {'it' if len(unused) == 1 else 'them'}")
    eps_values = [e.strip() for text in eps for e in str(text).split(",") if e.strip()]
    variants = []
    for m in names:
        opts = {k: v for k, v in flags.items() if v is not None and k in _OPTIONS[m]}
        variants.extend(make_attacks(m, eps_values, norm=norm, direction=direction, **opts))
    if min_eps:
        from robustlab.attacks.min_eps import BISECTIONS, check_min_eps_method

        for m in names:
            check_min_eps_method(m)
    output = AdversarialOutput(save_images, BISECTIONS if min_eps else 0)
    plan = plan_evaluation(detector, data, attacks=variants, attack_fraction=attack_fraction, sanity=sanity, adversarial=output, **options)
    return run(plan, log=log)


def evaluate(
    detector: Detector,
    data: Dataset,
    *,
    variants: Sequence[Variant] = (),
    attack_fraction: float = 1.0,
    threshold: float | None = None,
    threshold_selection: Any = None,
    out: "str | Path | None" = None,
    force: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
    checks: Sequence[Check] = (),
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> EvaluationResult:
    """Score ``data`` clean and under each variant; with ``out``, also write the run folder.

    The notebook form of the engine (:func:`robustlab.evaluation.engine.evaluate_variants`, whose
    documentation gives the options); ``out`` adds the reporting step. Returns the
    :class:`~robustlab.results.EvaluationResult` (``run_dir`` set when a folder was written).
    """
    engine_options = dict(variants=variants, attack_fraction=attack_fraction, threshold=threshold, threshold_selection=threshold_selection, seed=seed, batch_size=batch_size, progress=progress, checks=checks, bootstrap=bootstrap)
    if out is None:
        return evaluate_variants(detector, data, hooks=hooks, **engine_options)
    from robustlab.reporting.runfolder import write_run_folder
    from robustlab.runs import RunFolder

    plan = EvaluationPlan(detector, data, tuple(variants), attack_fraction, seed=seed, bootstrap=bootstrap)
    with RunFolder(out, force=force, inputs=(detector, data, threshold_selection)) as folder:
        examples = example_collector(plan)
        result = evaluate_variants(detector, data, hooks=[examples, *hooks], **engine_options)
        return write_run_folder(folder, result, data, examples=examples).result
