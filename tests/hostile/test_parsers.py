"""Property tests (Hypothesis): every parser of user text gives a value or a one-line error.

Parsers: eps (``parse_eps``), severities (``parse_severities``), threshold strategies
(``parse_strategy``), policy rules (``parse_rule``: a value or its documented
:class:`RuleSyntaxError`; ``load_policy`` on real files: a value or :class:`RobustlabError`),
attack specs (``parse_attack``) and suites (``load_suite``). Anything else escaping is a crash that
would be exit 3 at the CLI. Inputs mix grammar fragments (so parses get deep) with arbitrary text.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustlab.errors import RobustlabError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NUMBERS = st.one_of(
    st.sampled_from(["0", "1", "-1", "8/255", "1/0", "0/0", "nan", "inf", "-inf", "1e309", "1e-400", "0x10", "1_0", " 3 ", "", "/", "1/", "/2", "2/3/4", "٣", "½", "1e5", "0.5", "255/255", "True", "None"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.tuples(st.integers(-300, 300), st.integers(-300, 300)).map(lambda t: f"{t[0]}/{t[1]}"),
)


def fragments(*tokens: str) -> st.SearchStrategy[str]:
    """Text built from grammar tokens, numbers and arbitrary snippets."""
    piece = st.one_of(st.sampled_from(tokens), NUMBERS, st.text(max_size=6))
    return st.lists(piece, max_size=10).map("".join)


def _is_error(exc: BaseException) -> bool:
    return isinstance(exc, RobustlabError) and "\n" not in exc.one_line() and bool(exc.problem)


@SETTINGS
@given(st.one_of(NUMBERS, st.text(max_size=20), st.floats(allow_nan=True, allow_infinity=True)))
def test_parse_eps_gives_a_fraction_or_a_one_line_error(text):
    from robustlab.attacks.spec import parse_eps

    try:
        v = parse_eps(text)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert isinstance(v, float) and math.isfinite(v) and 0.0 < v <= 1.0


@SETTINGS
@given(fragments("1", "2", "3", "5", "6", "0", "-", ",", "1-5", "5-1", " ", "x", "1.5", "-1", "99999999999999999999"))
def test_parse_severities_gives_sorted_levels_or_a_one_line_error(text):
    from robustlab.corruptions.variant import parse_severities

    try:
        v = parse_severities(text)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert v == sorted(set(v)) and v and all(isinstance(s, int) and 1 <= s <= 5 for s in v)


@SETTINGS
@given(fragments("max-f1", "f1", "youden", "precision", "recall", "fixed", "eer", "fpr", "tpr", ":", "_", "MAX_F1", " "))
def test_parse_strategy_gives_a_strategy_or_a_one_line_error(text):
    from robustlab.evaluation.thresholds import Strategy, parse_strategy

    try:
        v = parse_strategy(text)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert isinstance(v, Strategy)
        value = getattr(v, "value", None)
        assert value is None or (math.isfinite(value) and 0.0 <= value <= 1.0)


RULE_TOKENS = (
    "clean", "worst-case", "fgsm", "pgd", "jpeg", "mixed", "*", ".", "accuracy", "auc", "f1", "ece", "tpr_at_fpr_0.01",
    "[", "]", "eps=", "severity=", ",", "(", ")", "drop", "regression", ">=", "<=", ">", "<", "==", "!=", " ", "8/255", "0.5",
)


@SETTINGS
@given(fragments(*RULE_TOKENS))
def test_parse_rule_gives_a_rule_or_its_syntax_error(text):
    from robustlab.reporting.policy import Rule, RuleSyntaxError, parse_rule

    try:
        r = parse_rule(text)
    except RuleSyntaxError as exc:  # the documented error; load_policy turns it into line + column
        assert 1 <= exc.column <= len(text) + 1 and "\n" not in str(exc)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert isinstance(r, Rule)


YAML_TOKENS = RULE_TOKENS + ("rules:\n", "  - ", "\n", "name: ", "rule: ", "{", "}", ": ", "&a ", "*a", "'", '"', "- ", "\t", "%YAML", "!!python/object", "---\n", "null", "[1, 2]")


@SETTINGS
@given(fragments(*YAML_TOKENS))
def test_load_policy_gives_a_policy_or_a_one_line_error(tmp_path_factory, text):
    from robustlab.reporting.policy import Policy, load_policy

    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        p = load_policy(path)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert isinstance(p, Policy) and p.rules


ATTACK_TOKENS = ("fgsm", "pgd", "apgd", "square", "hsj", "auto", ":", "eps=", "steps=", "step=", "norm=", "inf", "2", "l2", "random_start=", "true", "false", "direction=", "evade", "frame", "both", "loss=", "ce", "margin", "queries=", "eot=", "jpeg:50-95", "+resize:0.5-1.0", "samples=", ",", "=", " ")


@SETTINGS
@given(fragments(*ATTACK_TOKENS))
def test_parse_attack_gives_variants_or_a_one_line_error(text):
    from robustlab.attacks.variant import parse_attack

    try:
        variants = parse_attack(text)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert variants
        for v in variants:
            assert isinstance(v.variant, str) and isinstance(v.param, str)


SUITE_TOKENS = YAML_TOKENS + ("attacks:\n", "corruptions:\n", "policy:\n", "attack_fraction: ", "  - fgsm:eps=8/255\n", "  - jpeg:1-5\n", "blur:3", "name: s\n")


@SETTINGS
@given(fragments(*SUITE_TOKENS))
def test_load_suite_gives_a_suite_or_a_one_line_error(tmp_path_factory, text):
    from robustlab.evaluation.suites import Suite, load_suite

    path = tmp_path_factory.mktemp("suite") / "s.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        s = load_suite(path)
    except RobustlabError as exc:
        assert _is_error(exc)
    else:
        assert isinstance(s, Suite)


@pytest.mark.parametrize("text", ["8/255", "0.05", "1", "1/1"])
def test_parse_eps_accepts_the_contract_forms(text):
    from robustlab.attacks.spec import parse_eps

    assert 0 < parse_eps(text) <= 1


def test_the_generators_reach_valid_inputs():
    """The token grammar is not all noise: known-good inputs are among what it can build."""
    from robustlab.attacks.variant import parse_attack
    from robustlab.corruptions.variant import parse_severities
    from robustlab.evaluation.thresholds import parse_strategy
    from robustlab.reporting.policy import parse_rule

    assert parse_severities("1-2,5") == [1, 2, 5]
    assert parse_strategy("precision:0.95").kind.value == "precision"
    assert parse_rule("fgsm[eps=8/255].accuracy >= 0.5").metric == "accuracy"
    assert parse_attack("pgd:eps=8/255,steps=10")


@SETTINGS
@given(st.binary(max_size=200))
def test_policy_and_suite_files_of_arbitrary_bytes_give_a_one_line_error_or_a_value(tmp_path_factory, data):
    from robustlab.evaluation.suites import load_suite
    from robustlab.reporting.policy import load_policy

    path = tmp_path_factory.mktemp("bytes") / "x.yaml"
    path.write_bytes(data)
    for load in (load_policy, load_suite):
        try:
            load(path)
        except RobustlabError as exc:
            assert _is_error(exc)
