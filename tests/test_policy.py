"""Policies: rule syntax (errors with line and column), row selection (eps matched numerically),
drop/regression arithmetic, missing rows failing, JUnit output, baseline compatibility.

Rows are real metrics rows computed by robustlab.metrics from labels and scores; no TensorFlow here.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from robustlab.errors import RobustlabError
from robustlab.metrics import metrics_row, row_from_correct
from robustlab.reporting.baseline import check_comparable, compare_rows
from robustlab.reporting.junit import junit_xml
from robustlab.reporting.policy import (
    RuleSyntaxError,
    evaluate_policy,
    load_policy,
    parse_rule,
    policy_from_rules,
    policy_markdown,
    select_rows,
)

CONTRACT_RULES = [
    "clean.accuracy >= 0.90",
    "fgsm[eps=8/255].accuracy >= 0.50",
    "drop(jpeg[severity=3].f1) <= 0.05",
    "worst-case.accuracy >= 0.3",
    "regression(*.auc) <= 0.01",
]


def _scores(y: np.ndarray, flip: int, seed: int) -> np.ndarray:
    """Scores that are right except for ``flip`` images (a confident, real score vector)."""
    rng = np.random.default_rng(seed)
    s = np.where(y == 1, rng.uniform(0.6, 1.0, len(y)), rng.uniform(0.0, 0.4, len(y)))
    wrong = rng.choice(len(y), size=flip, replace=False)
    s[wrong] = 1.0 - s[wrong]
    return s


def make_rows(*, clean_flip: int = 5, fgsm8_flip: int = 30, jpeg3_flip: int = 12, seed: int = 0) -> list[dict]:
    """clean (n=100), fgsm at 2/255 and 8/255 (n=40, params as the attack module writes them),
    their mixed rows, jpeg severity 3, worst-case."""
    y = np.repeat([0, 1], 50)
    ya = np.repeat([0, 1], 20)
    rows = [metrics_row(y, _scores(y, clean_flip, seed), threshold=0.5, set="clean")]
    for param, flip in (("eps=0.0078", 6), ("eps=0.0314", fgsm8_flip)):
        s = _scores(ya, flip, seed + 1)
        rows.append(metrics_row(ya, s, threshold=0.5, set="adversarial", variant="fgsm", param=param, linf=float(param[4:]) * 255))
        rows.append(metrics_row(np.concatenate([y, ya]), np.concatenate([_scores(y, clean_flip, seed), s]), threshold=0.5, set="mixed", variant="fgsm", param=param))
    rows.append(metrics_row(y, _scores(y, jpeg3_flip, seed + 2), threshold=0.5, set="corrupted", variant="jpeg", param="severity=3"))
    correct = np.ones(100, bool)
    correct[:60] = False
    rows.append(row_from_correct(correct, set="worst-case", variant="none", param="", threshold=0.5, note="right only if right everywhere"))
    return [r.to_dict() for r in rows]


def by_label(rows: list[dict], kind: str, variant: str = "none", param: str = "") -> dict:
    return next(r for r in rows if (r["set"], r["variant"], r["param"]) == (kind, variant, param))


# --------------------------------------------------------------------------- syntax


def test_contract_rules_parse() -> None:
    rules = [parse_rule(t) for t in CONTRACT_RULES]
    assert [(r.function, r.selector.name, r.metric, r.op) for r in rules] == [
        (None, "clean", "accuracy", ">="),
        (None, "fgsm", "accuracy", ">="),
        ("drop", "jpeg", "f1", "<="),
        (None, "worst-case", "accuracy", ">="),
        ("regression", "*", "auc", "<="),
    ]
    assert rules[1].selector.items[0].key == "eps" and rules[1].selector.items[0].value == "8/255"
    assert rules[3].limit == pytest.approx(0.3)
    assert parse_rule("clean.f1 >= 90%").limit == pytest.approx(0.9)


@pytest.mark.parametrize(
    "text, column, words",
    [
        ("clean.acc >= 0.9", 7, "unknown metric 'acc'"),
        ("clean.accuracy => 0.9", 16, "expected a comparison"),
        ("drop(clean.accuracy <= 1", 21, "expected ')'"),
        ("foo(clean.accuracy) <= 1", 1, "unknown function 'foo'"),
        ("clean.accuracy >= high", 19, "expected a number"),
        ("fgsm[eps].accuracy >= 0.5", 9, "expected '='"),
        ("clean.accuracy >= 0.9 or more", 23, "unexpected"),
        ("drop(*.n) <= 3", 8, "better direction"),
        ("clean.accuracy >= 1/0", 19, "not a number"),
    ],
    ids=["metric", "operator", "paren", "function", "number", "item", "trailing", "drop-of-n", "div-zero"],
)
def test_syntax_errors_have_a_column(text: str, column: int, words: str) -> None:
    with pytest.raises(RuleSyntaxError) as err:
        parse_rule(text)
    assert err.value.column == column
    assert words in err.value.message


def test_policy_file_error_gives_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text('rules:\n  - clean.accuracy >= 0.90\n  - "fgsm[eps=8/255].acuracy >= 0.50"\n', encoding="utf-8")
    with pytest.raises(RobustlabError) as err:
        load_policy(p)
    msg = err.value.one_line()
    assert "line 3, column 22" in msg and "acuracy" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "text, where",
    [
        ("rules:\n  - clean.accuracy >= 0.9\n  - *.auc >= 0.5\n", "line 3"),  # YAML alias syntax
        ("rules: [\n", "line 2"),
        ("rule:\n  - clean.accuracy >= 0.9\n", "line 1, column 1"),
        ("rules: []\n", "line 1"),
        ("rules:\n  - {rule: clean.accuracy >= 0.9, why: x}\n", "line 2"),
    ],
    ids=["yaml-alias", "unclosed", "unknown-key", "empty", "bad-mapping"],
)
def test_bad_policy_files(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(RobustlabError) as err:
        load_policy(p)
    assert where in err.value.one_line()


def test_named_rules_and_quoted_columns(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("rules:\n  - rule: clean.accuracy >= 0.9\n    name: clean accuracy\n  - '*.auc >= 0.5'\n", encoding="utf-8")
    pol = load_policy(p)
    assert [r.label for r in pol.rules] == ["clean accuracy", "*.auc >= 0.5"]
    assert [r.line for r in pol.rules] == [2, 4]


# --------------------------------------------------------------------------- selecting rows


def test_eps_matches_numerically_with_the_written_precision() -> None:
    rows = make_rows()
    sel = lambda text: [(r["set"], r["param"]) for r in select_rows(parse_rule(text).selector, rows)]  # noqa: E731
    assert sel("fgsm[eps=8/255].accuracy >= 0") == [("adversarial", "eps=0.0314")]
    assert sel("fgsm[eps=2/255].accuracy >= 0") == [("adversarial", "eps=0.0078")]
    assert sel("fgsm[eps=0.031372549].accuracy >= 0") == [("adversarial", "eps=0.0314")]
    assert sel("fgsm[eps=0.03].accuracy >= 0") == [("adversarial", "eps=0.0314")]  # closest within 0.005
    assert sel("fgsm[eps=4/255].accuracy >= 0") == []
    assert sel("fgsm.accuracy >= 0") == [("adversarial", "eps=0.0078"), ("adversarial", "eps=0.0314")]
    assert sel("mixed[fgsm,eps=8/255].f1 >= 0") == [("mixed", "eps=0.0314")]
    assert sel("fgsm[eps=8/255,set=mixed].f1 >= 0") == [("mixed", "eps=0.0314")]
    assert sel("jpeg[severity=3].f1 >= 0") == [("corrupted", "severity=3")]
    assert sel("jpeg[severity=2].f1 >= 0") == []
    assert len(sel("*.accuracy >= 0")) == len(rows)


# --------------------------------------------------------------------------- judging


def test_contract_policy_verdicts_and_amounts() -> None:
    rows = make_rows(fgsm8_flip=30, jpeg3_flip=12, clean_flip=5)
    base = make_rows(fgsm8_flip=30, jpeg3_flip=12, clean_flip=5)
    rep = evaluate_policy(policy_from_rules(CONTRACT_RULES), rows, base)
    verdicts = {r.rule.text: r.passed for r in rep.results}
    clean_acc = by_label(rows, "clean")["accuracy"]
    fgsm_acc = by_label(rows, "adversarial", "fgsm", "eps=0.0314")["accuracy"]
    drop_f1 = by_label(rows, "clean")["f1"] - by_label(rows, "corrupted", "jpeg", "severity=3")["f1"]
    assert clean_acc == pytest.approx(0.95) and fgsm_acc == pytest.approx(0.25)
    assert verdicts == {
        "clean.accuracy >= 0.90": True,
        "fgsm[eps=8/255].accuracy >= 0.50": False,
        "drop(jpeg[severity=3].f1) <= 0.05": drop_f1 <= 0.05,
        "worst-case.accuracy >= 0.3": True,
        "regression(*.auc) <= 0.01": True,  # identical baseline
    }
    fgsm = next(r for r in rep.results if r.rule.text.startswith("fgsm"))
    assert "short by 0.2500" in fgsm.message and "fgsm[eps=0.0314]" in fgsm.message
    n_failed = sum(not v for v in verdicts.values())
    assert not rep.passed and rep.summary().startswith(f"policy failed: {n_failed} of 5 rules")


def test_drop_is_clean_minus_row_and_reversed_for_misclassified() -> None:
    rows = make_rows(jpeg3_flip=15)
    clean, jpeg = by_label(rows, "clean"), by_label(rows, "corrupted", "jpeg", "severity=3")
    res = evaluate_policy(policy_from_rules(["drop(jpeg[severity=3].accuracy) <= 1", "drop(jpeg[severity=3].misclassified) <= 100"]), rows).results
    assert res[0].checks[0].value == pytest.approx(clean["accuracy"] - jpeg["accuracy"])
    assert res[1].checks[0].value == pytest.approx(jpeg["misclassified"] - clean["misclassified"])
    assert res[0].checks[0].value > 0 and res[1].checks[0].value > 0  # worse is positive either way


def test_regression_against_a_worse_run_fails_by_the_right_amount() -> None:
    base = make_rows(fgsm8_flip=10)
    run = make_rows(fgsm8_flip=18)
    rep = evaluate_policy(policy_from_rules(["regression(fgsm[eps=8/255].accuracy) <= 0.1", "regression(*.accuracy) <= 0.1"]), run, base)
    expected = by_label(base, "adversarial", "fgsm", "eps=0.0314")["accuracy"] - by_label(run, "adversarial", "fgsm", "eps=0.0314")["accuracy"]
    assert expected == pytest.approx(0.2)
    assert [r.passed for r in rep.results] == [False, False]
    assert "over by 0.1000" in rep.results[0].message
    assert evaluate_policy(policy_from_rules(["regression(*.accuracy) <= 0.1"]), run, None).results[0].message.startswith("needs a baseline")


def test_missing_rows_and_undefined_metrics_fail_never_pass() -> None:
    rows = make_rows()
    rep = evaluate_policy(
        policy_from_rules(["pgd[eps=8/255].accuracy >= 0", "fgsm[eps=4/255].accuracy >= 0", "worst-case.auc >= 0", "blur.accuracy <= 1", "*.auc >= 0"]),
        rows,
    )
    assert [r.passed for r in rep.results] == [False, False, False, False, True]
    assert "no row pgd[eps=8/255] in this run" in rep.results[0].message
    assert "fgsm[eps=0.0314]" in rep.results[1].message  # lists what the run has
    assert "undefined" in rep.results[2].message
    # without a clean row, drop() cannot be judged
    no_clean = [r for r in rows if r["set"] != "clean"]
    assert not evaluate_policy(policy_from_rules(["drop(jpeg[severity=3].f1) <= 1"]), no_clean).passed


# --------------------------------------------------------------------------- JUnit


def test_junit_has_one_case_per_rule_with_failures() -> None:
    rows = make_rows()
    rules = ["clean.accuracy >= 0.90", "fgsm[eps=8/255].accuracy >= 0.50", "pgd.accuracy >= 0.1", 'clean.f1 >= 0.5']
    rep = evaluate_policy(policy_from_rules(rules), rows)
    root = ET.fromstring(junit_xml(rep, properties={"run": "runs/<x>&"}).encode("utf-8"))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == rules
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["fgsm[eps=8/255].accuracy >= 0.50", "pgd.accuracy >= 0.1"]
    assert "short by" in cases[1].find("failure").get("message")  # type: ignore[union-attr]
    assert suite.find("properties/property").get("value") == "runs/<x>&"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- baselines


def test_baseline_with_different_sets_is_refused() -> None:
    a = {"run": {"data": {"fingerprint": "abc"}}, "rows": make_rows()}
    check_comparable(a, {"run": {"data": {"fingerprint": "abc"}}, "rows": make_rows(seed=3)}, baseline_path="b")
    with pytest.raises(RobustlabError, match="different data set"):
        check_comparable(a, {"run": {"data": {"fingerprint": "xyz"}}, "rows": make_rows()}, baseline_path="b")
    fewer = [r for r in make_rows() if r["variant"] != "jpeg"]
    with pytest.raises(RobustlabError, match=r"only in this run: jpeg\[severity=3\]"):
        check_comparable(a, {"run": {}, "rows": fewer}, baseline_path="b")
    bigger = make_rows()
    bigger[0] = dict(bigger[0], n=200)
    with pytest.raises(RobustlabError, match="sizes differ"):
        check_comparable(a, {"run": {}, "rows": bigger}, baseline_path="b")


def test_comparison_marks_regressions_only() -> None:
    base, run = make_rows(fgsm8_flip=10), make_rows(fgsm8_flip=18)
    comp = {(c.row["set"], c.row["param"]): c for c in compare_rows(run, base)}
    assert comp[("adversarial", "eps=0.0314")].regressed
    assert not comp[("clean", "")].regressed
    acc = next(d for d in comp[("adversarial", "eps=0.0314")].deltas if d.metric == "accuracy")
    assert acc.delta == pytest.approx(-0.2)
    mis = next(d for d in comp[("adversarial", "eps=0.0314")].deltas if d.metric == "misclassified")
    assert mis.delta == 8 and mis.regressed


# --------------------------------------------------------------------------- operating points, intervals, inconclusive


def interval_rows(n: int = 200, flip: int = 16, bootstrap: int = 1000) -> list[dict]:
    """clean (n images, ``flip`` wrong: accuracy 1 - flip/n), with bootstrap intervals."""
    y = np.repeat([0, 1], n // 2)
    return [metrics_row(y, _scores(y, flip, 0), threshold=0.5, set="clean", bootstrap=bootstrap).to_dict()]


def test_operating_point_metrics_and_aliases_parse() -> None:
    assert parse_rule("clean.tpr@fpr=0.01 >= 0.9").metric == "tpr_at_fpr_0.01"
    assert parse_rule("clean.tpr@fpr=1% >= 0.9").metric == "tpr_at_fpr_0.01"
    assert parse_rule("clean.tpr_at_fpr_0.001 >= 0.5").metric == "tpr_at_fpr_0.001"
    assert parse_rule("clean.fpr@tpr=0.95 <= 0.1").metric == "fpr_at_tpr_0.95"
    r = parse_rule("pgd[eps=8/255].fake_accuracy >= 0.5")
    assert (r.selector.name, r.metric, r.bound) == ("pgd", "fake_accuracy", None)
    r = parse_rule("clean.accuracy.lo >= 0.90")
    assert (r.metric, r.bound) == ("accuracy", "lo")
    assert parse_rule("clean.tpr@fpr=0.01.hi <= 1").bound == "hi"


@pytest.mark.parametrize(
    "text,words",
    [
        ("clean.tpr@fpr=0.05 >= 0.9", "unknown metric 'tpr@fpr=0.05'"),
        ("clean.f1.lo >= 0.9", "'f1' has no interval"),
        ("clean.accuracy.mid >= 0.9", "expected lo or hi"),
        ("drop(clean.accuracy.lo) <= 0.1", "takes a metric, not an interval bound"),
    ],
    ids=["alias-not-computed", "bound-without-interval", "bad-bound", "bound-in-function"],
)
def test_operating_point_syntax_errors(text: str, words: str) -> None:
    with pytest.raises(RuleSyntaxError) as e:
        parse_rule(text)
    assert words in e.value.message


def test_new_metrics_and_bounds_are_judged() -> None:
    rows = interval_rows()
    clean = rows[0]
    lo, hi = clean["accuracy_ci"]
    rep = evaluate_policy(policy_from_rules([f"clean.accuracy.lo >= {lo - 0.001}", f"clean.accuracy.hi <= {hi - 0.001}", "clean.real_accuracy >= 0.5", "clean.eer <= 0.5", "drop(fgsm.eer) <= 0.2"]), rows + make_rows()[1:2])
    assert [r.status for r in rep.results] == ["passed", "failed", "passed", "passed", "passed"]
    assert "clean.accuracy.hi" in rep.results[1].message
    off = interval_rows(bootstrap=0)
    res = evaluate_policy(policy_from_rules(["clean.accuracy.lo >= 0.5"]), off).results[0]
    assert not res.passed and "--bootstrap 0" in res.message


@pytest.mark.parametrize("mode,passed", [("fail", False), ("pass", True), ("warn", True)])
def test_straddling_interval_is_inconclusive_with_the_n_that_decides(mode: str, passed: bool) -> None:
    rows = interval_rows()  # accuracy 0.92 at n=200, interval about +-0.04
    clean = rows[0]
    lo, hi = clean["accuracy_ci"]
    assert lo < 0.91 < hi
    rep = evaluate_policy(policy_from_rules(["clean.accuracy >= 0.91", "clean.accuracy >= 0.5", "clean.accuracy >= 0.99"]), rows, inconclusive=mode)
    undecided, clear, failed = rep.results
    assert undecided.inconclusive and undecided.status == "inconclusive" and undecided.passed is passed
    assert clear.status == "passed" and failed.status == "failed"  # far from the limit: decided
    check = undecided.checks[0]
    h, d = clean["accuracy"] - lo, clean["accuracy"] - 0.91
    assert check.needed_n == int(np.ceil(200 * (h / d) ** 2)) and check.needed_n > 200
    assert f"about n={check.needed_n} would decide it" in undecided.message
    assert rep.to_dict()["rules"][0]["status"] == "inconclusive" and rep.to_dict()["inconclusive"] == 1
    assert not rep.passed  # the 0.99 rule fails in every mode
    md = policy_markdown(rep)
    assert "❔ inconclusive" in md and f"--inconclusive {mode}" in md
    suite = ET.fromstring(junit_xml(rep).encode("utf-8")).find("testsuite")
    case = suite.findall("testcase")[0]  # type: ignore[union-attr]
    if mode == "fail":
        assert case.find("failure").get("type") == "PolicyInconclusive"  # type: ignore[union-attr]
    elif mode == "warn":
        assert case.find("skipped") is not None and suite.get("skipped") == "1"  # type: ignore[union-attr]
    else:
        assert case.find("failure") is None and case.find("skipped") is None
        assert "INCONCLUSIVE" in case.find("system-out").text  # type: ignore[union-attr]


def test_without_intervals_rules_are_decided_by_the_value() -> None:
    rep = evaluate_policy(policy_from_rules(["clean.accuracy >= 0.91"]), interval_rows(bootstrap=0))
    assert rep.passed and not rep.inconclusive
