"""Policies: rules over the rows of a run that CI gates on, and baseline comparisons.

A policy is a YAML file with a list of rules::

    rules:
      - clean.accuracy >= 0.90
      - fgsm[eps=8/255].accuracy >= 0.50
      - drop(jpeg[severity=3].f1) <= 0.05        # clean minus corrupted
      - worst-case.accuracy >= 0.30
      - regression(*.auc) <= 0.01                # baseline minus this run (needs --baseline)
      - rule: mixed[fgsm,eps=8/255].f1 >= 0.8     # a rule can carry a name for JUnit
        name: mixed FGSM F1

Grammar of one rule (whitespace free between tokens)::

    rule     := value OP number
    value    := ref | drop(ref) | regression(ref)
    ref      := selector "." metric
    selector := "*" | NAME [ "[" item ("," item)* "]" ]
    item     := KEY "=" VALUE | NAME                  (a bare NAME names the variant)
    OP       := >= | <= | > | < | == | !=
    number   := 0.9 | 90% | 8/255

A NAME is a set (``clean``, ``adversarial``, ``mixed``, ``corrupted``, ``worst-case``) or a
variant (``fgsm``, ``pgd``, ``jpeg``...). A variant name selects its adversarial or corrupted rows
(not the mixed ones: write ``mixed[fgsm,eps=8/255]`` for those). ``KEY=VALUE`` items filter on the
row's ``param`` (``eps=0.0314,steps=10``); numbers are compared numerically, with the tolerance of
the digits written on either side (``eps=8/255`` matches ``eps=0.0314``), and among several rows
within tolerance the closest wins. ``set=`` and ``variant=`` filter on those columns.

A rule holds when it holds for every row it selects. A rule that selects no row FAILS (it never
passes silently), and so does a metric that is undefined (``null``) on a row named explicitly;
``*`` skips rows where the metric is undefined (worst-case has only accuracy).

``drop(ref.m)`` is the clean row's ``m`` minus the row's ``m`` (how much worse than clean);
``regression(ref.m)`` is the baseline's ``m`` minus this run's ``m`` for the same row. For
``misclassified`` (lower is better) both are taken the other way round, so positive is always worse.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from robustlab.errors import RobustlabError
from robustlab.yamlfile import compose_yaml, where

SET_NAMES = ("clean", "adversarial", "mixed", "corrupted", "worst-case")
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "auc", "ap")
LOWER_IS_BETTER = ("misclassified",)
OTHER_METRICS = ("n", "linf", "l2")
METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER + OTHER_METRICS
FUNCTIONS = ("drop", "regression")
TOLERANCE = 1e-9  # float noise: 1.0 - 0.99 <= 0.01 holds
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b - TOLERANCE,
    "<=": lambda a, b: a <= b + TOLERANCE,
    ">": lambda a, b: a > b + TOLERANCE,
    "<": lambda a, b: a < b - TOLERANCE,
    "==": lambda a, b: abs(a - b) <= TOLERANCE,
    "!=": lambda a, b: abs(a - b) > TOLERANCE,
}


# --------------------------------------------------------------------------- rule syntax


class RuleSyntaxError(ValueError):
    """A rule that does not parse; ``column`` is 1-based within the rule text."""

    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Item:
    """One ``KEY=VALUE`` filter inside ``[...]`` (``key`` is ``variant`` for a bare name)."""

    key: str
    value: str


@dataclass(frozen=True)
class Selector:
    """``*`` or ``NAME[items]``."""

    name: str  # "*" for every row
    items: tuple[Item, ...] = ()

    def __str__(self) -> str:
        if not self.items:
            return self.name
        inner = ",".join(it.value if it.key == "variant" and self.name in SET_NAMES else f"{it.key}={it.value}" for it in self.items)
        return f"{self.name}[{inner}]"


@dataclass(frozen=True)
class Rule:
    """A parsed rule: ``function(selector.metric) op limit``."""

    text: str
    function: str | None  # None, "drop" or "regression"
    selector: Selector
    metric: str
    op: str
    limit: float
    name: str | None = None
    line: int | None = None

    @property
    def label(self) -> str:
        return self.name or self.text

    def value_name(self, row_label: str) -> str:
        ref = f"{row_label}.{self.metric}"
        return f"{self.function}({ref})" if self.function else ref


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*(?:\d+(?:\.\d*)?|\.\d+))?\s*%?")
_VALUE = re.compile(r"[^,\]\s]+")


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def fail(self, message: str, pos: int | None = None) -> RuleSyntaxError:
        return RuleSyntaxError(message, (self.pos if pos is None else pos) + 1)

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def what(self) -> str:
        c = self.peek()
        return f"{c!r}" if c else "end of rule"

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}, found {self.what()}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> tuple[str, int] | None:
        self.skip_ws()
        m = pattern.match(self.text, self.pos)
        if not m or not m.group(0):
            return None
        start = self.pos
        self.pos = m.end()
        return m.group(0), start


def parse_number(text: str) -> float:
    """``0.9`` / ``90%`` / ``8/255`` -> float; ValueError otherwise."""
    from robustlab.metrics import parse_fraction

    s = text.strip()
    pct = s.endswith("%")
    if pct:
        s = s[:-1].strip()
    v = parse_fraction(s, what="number")
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v / 100.0 if pct else v


def parse_rule(text: str, *, name: str | None = None, line: int | None = None) -> Rule:
    """Parse one rule; raises :class:`RuleSyntaxError` with a 1-based column."""
    sc = _Scanner(text)
    got = sc.match(_NAME) if sc.peek() != "*" else None
    function = None
    if got and sc.peek() == "(":
        word, start = got
        if word not in FUNCTIONS:
            raise sc.fail(f"unknown function {word!r} (use {' or '.join(FUNCTIONS)})", start)
        function = word
        sc.pos += 1
        got = sc.match(_NAME) if sc.peek() != "*" else None
    selector = _parse_selector(sc, got)
    sc.expect(".")
    m = sc.match(_NAME)
    if m is None:
        raise sc.fail(f"expected a metric after '.', found {sc.what()}")
    metric, mpos = m
    if metric not in METRICS:
        raise sc.fail(f"unknown metric {metric!r} (use one of: {', '.join(METRICS)})", mpos)
    if function and metric in OTHER_METRICS:
        raise sc.fail(f"{function}() needs a metric with a better direction, not {metric!r} (use one of: {', '.join(HIGHER_IS_BETTER + LOWER_IS_BETTER)})", mpos)
    if function:
        sc.expect(")")
    sc.skip_ws()
    op = next((o for o in (">=", "<=", "==", "!=", ">", "<") if sc.text.startswith(o, sc.pos)), None)
    if op is None:
        raise sc.fail(f"expected a comparison (>=, <=, >, <, ==, !=), found {sc.what()}")
    sc.pos += len(op)
    num = sc.match(_NUMBER)
    if num is None:
        raise sc.fail(f"expected a number (0.9, 90% or 8/255), found {sc.what()}")
    try:
        limit = parse_number(num[0])
    except ValueError as exc:
        raise sc.fail(str(exc), num[1]) from None
    if sc.peek():
        raise sc.fail(f"unexpected {sc.what()} after the number")
    return Rule(text=" ".join(text.split()), function=function, selector=selector, metric=metric, op=op, limit=limit, name=name, line=line)


def _parse_selector(sc: _Scanner, got: tuple[str, int] | None) -> Selector:
    if got is None:
        if sc.peek() == "*":
            sc.pos += 1
            return Selector("*")
        raise sc.fail(f"expected a row (clean, worst-case, fgsm[eps=8/255], *...), found {sc.what()}")
    name = got[0]
    items: list[Item] = []
    if sc.peek() == "[":
        sc.pos += 1
        while True:
            key = sc.match(_NAME)
            if key is None:
                raise sc.fail(f"expected key=value inside [...], found {sc.what()}")
            if sc.peek() == "=":
                sc.pos += 1
                val = sc.match(_VALUE)
                if val is None:
                    raise sc.fail(f"expected a value after '{key[0]}=', found {sc.what()}")
                items.append(Item(key[0], val[0]))
            elif name in SET_NAMES:
                items.append(Item("variant", key[0]))
            else:
                raise sc.fail(f"expected '=' after {key[0]!r} (write key=value, e.g. eps=8/255)")
            if sc.peek() == ",":
                sc.pos += 1
                continue
            sc.expect("]")
            break
    return Selector(name, tuple(items))


# --------------------------------------------------------------------------- policy files


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    source: Path | None = None

    @property
    def needs_baseline(self) -> bool:
        return any(r.function == "regression" for r in self.rules)

    @property
    def name(self) -> str:
        return self.source.name if self.source else "policy"




def load_policy(path: "str | Path") -> Policy:
    """Read a policy YAML; any mistake is a one-line :class:`RobustlabError` with line and column."""
    import yaml

    path = Path(path)
    fix = "see the policy syntax in the README (Reports, policies and CI)"
    root = compose_yaml(path, what="policy", missing_fix="check the path", syntax_fix="quote rules that start with * or contain ': '")
    if root is None:
        raise RobustlabError("empty policy file", thing=path, fix="write `rules:` with a list of rules such as `- clean.accuracy >= 0.90`")
    if not isinstance(root, yaml.MappingNode):
        raise RobustlabError("a policy is a mapping with a `rules:` list", thing=where(path, root.start_mark.line + 1, root.start_mark.column + 1), fix=fix)
    rules_node = None
    for key, value in root.value:
        k = key.value if isinstance(key, yaml.ScalarNode) else None
        if k == "rules":
            rules_node = value
        elif k not in ("name", "description"):
            raise RobustlabError(f"unknown key {k!r}", thing=where(path, key.start_mark.line + 1, key.start_mark.column + 1), fix="a policy has `rules:` (and optionally `name:`, `description:`)")
    if rules_node is None:
        raise RobustlabError("no `rules:` list", thing=path, fix="write `rules:` with a list of rules such as `- clean.accuracy >= 0.90`")
    if not isinstance(rules_node, yaml.SequenceNode) or not rules_node.value:
        m = rules_node.start_mark
        raise RobustlabError("`rules:` must be a non-empty list", thing=where(path, m.line + 1, m.column + 1), fix="one rule per line, each starting with '- '")
    rules = []
    for node in rules_node.value:
        name = None
        if isinstance(node, yaml.MappingNode):
            fields = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            unknown = sorted(set(fields) - {"rule", "name"})
            if unknown or "rule" not in fields:
                m = node.start_mark
                raise RobustlabError(f"a rule given as a mapping needs `rule:` (and optionally `name:`), got {sorted(fields)}", thing=where(path, m.line + 1, m.column + 1), fix=fix)
            name_node = fields.get("name")
            name = str(name_node.value) if isinstance(name_node, yaml.ScalarNode) else None
            node = fields["rule"]
        if not isinstance(node, yaml.ScalarNode):
            m = node.start_mark
            raise RobustlabError("a rule must be a string like `clean.accuracy >= 0.90`", thing=where(path, m.line + 1, m.column + 1), fix=fix)
        line, col0 = node.start_mark.line + 1, node.start_mark.column + 1
        if node.style in ("'", '"'):
            col0 += 1
        elif node.style in ("|", ">"):
            line += 1
            col0 = 1
        try:
            rules.append(parse_rule(str(node.value), name=name, line=line))
        except RuleSyntaxError as exc:
            col = col0 + exc.column - 1 if "\n" not in str(node.value) else col0
            raise RobustlabError(f"{exc.message} in rule {' '.join(str(node.value).split())!r}", thing=where(path, line, col), fix=fix) from None
    return Policy(tuple(rules), path)


def policy_from_rules(rules: Sequence[str]) -> Policy:
    """A policy from rule strings (for notebooks): :class:`RobustlabError` on a syntax error."""
    parsed = []
    for i, text in enumerate(rules, 1):
        try:
            parsed.append(parse_rule(text, line=i))
        except RuleSyntaxError as exc:
            raise RobustlabError(f"{exc.message} in rule {text!r}", thing=f"rule {i}, column {exc.column}", fix="see the policy syntax in the README") from None
    return Policy(tuple(parsed))


# --------------------------------------------------------------------------- selecting rows


def row_label(row: Mapping[str, Any]) -> str:
    """The policy name of a row: ``clean``, ``worst-case``, ``fgsm[eps=0.0314]``, ``mixed[fgsm,eps=0.0314]``."""
    s, v, p = row["set"], row["variant"], row.get("param") or ""
    if v in ("none", "", None):
        return f"{s}[{p}]" if p else s
    if s == "mixed":
        return f"mixed[{v},{p}]" if p else f"mixed[{v}]"
    return f"{v}[{p}]" if p else v


def row_identity(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(row["set"]), str(row["variant"]), str(row.get("param") or ""))


def parse_param(param: str) -> dict[str, str]:
    out = {}
    for item in (param or "").split(","):
        k, eq, v = item.partition("=")
        if eq:
            out[k.strip()] = v.strip()
    return out


def _half_ulp(text: str) -> float:
    """Half a unit in the last written digit of a decimal (0 for an exact fraction like 8/255)."""
    t = text.strip().lower()
    if "/" in t:
        return 0.0
    mant, _, exp = t.partition("e")
    decimals = len(mant.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp.lstrip("+-").isdigit() else 0))


def _as_number(text: str) -> float | None:
    try:
        from robustlab.metrics import parse_fraction

        v = parse_fraction(text)
        return v if math.isfinite(v) else None
    except ValueError:
        return None


def select_rows(selector: Selector, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows a selector names (possibly none)."""
    set_filter = next((it.value for it in selector.items if it.key == "set"), None)
    if selector.name == "*":
        cands = list(rows)
    elif selector.name in SET_NAMES:
        cands = [r for r in rows if r["set"] == selector.name]
    else:  # a variant: its adversarial / corrupted rows, its mixed rows only with set=mixed
        cands = [r for r in rows if r["variant"] == selector.name and (r["set"] != "mixed" if set_filter is None else True)]
    distances: list[list[float]] = [[] for _ in cands]
    keep = [True] * len(cands)
    numeric_keys = 0
    for it in selector.items:
        if it.key in ("set", "variant"):
            keep = [k and r[it.key] == it.value for k, r in zip(keep, cands)]
            continue
        want = _as_number(it.value)
        if want is not None:
            numeric_keys += 1
        for i, r in enumerate(cands):
            if not keep[i]:
                continue
            have_text = parse_param(r.get("param") or "").get(it.key)
            if have_text is None:
                keep[i] = False
                continue
            have = _as_number(have_text)
            if want is None or have is None:
                keep[i] = have_text.lower() == it.value.lower()
                continue
            tol = max(_half_ulp(have_text), _half_ulp(it.value)) + 1e-9 * max(1.0, abs(want))
            d = abs(have - want)
            keep[i] = d <= tol
            distances[i].append(d)
    chosen = [(r, distances[i]) for i, r in enumerate(cands) if keep[i]]
    if numeric_keys and len(chosen) > 1:
        # several rows within tolerance: keep the closest (e.g. eps=0.03 with 7/255 and 8/255 run)
        best = min(sum(d) for _, d in chosen)
        chosen = [(r, d) for r, d in chosen if sum(d) <= best + 1e-12]
    return [r for r, _ in chosen]


# --------------------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class Check:
    """One row's outcome under a rule."""

    row: str  # row_label
    value: float | None
    passed: bool
    by: float | None  # how far past the limit (positive = by how much it failed), None if undefined
    message: str


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    passed: bool
    message: str  # one line: what was found; for a failure, by how much
    checks: tuple[Check, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.text,
            "name": self.rule.name,
            "line": self.rule.line,
            "passed": self.passed,
            "message": self.message,
            "checks": [{"row": c.row, "value": c.value, "passed": c.passed, "by": c.by, "message": c.message} for c in self.checks],
        }


@dataclass
class PolicyReport:
    policy: Policy
    results: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        """One line: ``policy failed: 2 of 5 rules (P.yaml): rule: message; ...``."""
        if self.passed:
            return f"policy passed: {len(self.results)} of {len(self.results)} rules ({self.policy.name})"
        parts = "; ".join(f"{r.rule.label}: {r.message}" for r in self.failed)
        return f"policy failed: {len(self.failed)} of {len(self.results)} rules ({self.policy.name}): {parts}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": None if self.policy.source is None else str(self.policy.source),
            "passed": self.passed,
            "failed": len(self.failed),
            "rules": [r.to_dict() for r in self.results],
        }


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.6g}"


def _margin(op: str, value: float, limit: float) -> float:
    """How far a value is past the limit in the failing direction (<= 0 when it passes >=/<=)."""
    if op in (">=", ">"):
        return limit - value
    if op in ("<=", "<"):
        return value - limit
    return abs(value - limit)


def evaluate_rule(rule: Rule, rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]] | None = None) -> RuleResult:
    """Judge one rule against a run's rows (and a baseline's, for ``regression``)."""
    wildcard = rule.selector.name == "*"
    if rule.function == "regression" and baseline_rows is None:
        return RuleResult(rule, False, "needs a baseline run (--baseline RUN)")
    selected = select_rows(rule.selector, rows)
    if rule.function == "drop" and wildcard:
        selected = [r for r in selected if r["set"] != "clean"]
    if not selected:
        have = ", ".join(row_label(r) for r in rows) or "no rows"
        return RuleResult(rule, False, f"no row {rule.selector} in this run (it has: {have})")
    clean = next((r for r in rows if r["set"] == "clean"), None)
    if rule.function == "drop" and clean is None:
        return RuleResult(rule, False, "drop() needs a clean row, and this run has none")
    base_of = {row_identity(r): r for r in (baseline_rows or ())}
    sign = -1.0 if rule.metric in LOWER_IS_BETTER else 1.0
    checks: list[Check] = []
    for r in selected:
        label = row_label(r)
        name = rule.value_name(label)
        v = r.get(rule.metric)
        if rule.function == "drop":
            c = clean.get(rule.metric)  # type: ignore[union-attr]
            v = None if v is None or c is None else sign * (float(c) - float(v))
        elif rule.function == "regression":
            b = base_of.get(row_identity(r))
            if b is None:
                checks.append(Check(label, None, False, None, f"{label} is not in the baseline"))
                continue
            bv = b.get(rule.metric)
            v = None if v is None or bv is None else sign * (float(bv) - float(v))
        if v is None:
            if wildcard:
                continue
            note = r.get("note")
            checks.append(Check(label, None, False, None, f"{name} is undefined" + (f" ({note})" if note else "")))
            continue
        v = float(v)
        ok = OPS[rule.op](v, rule.limit)
        by = _margin(rule.op, v, rule.limit)
        if ok:
            msg = f"{name} = {_fmt(v)} (limit {rule.op} {_fmt(rule.limit)})"
        elif rule.op in ("==",):
            msg = f"{name} = {_fmt(v)}, needs == {_fmt(rule.limit)} (off by {_fmt(by)})"
        elif rule.op == "!=":
            msg = f"{name} = {_fmt(v)}, needs != {_fmt(rule.limit)}"
        else:
            word = "short by" if rule.op in (">=", ">") else "over by"
            msg = f"{name} = {_fmt(v)}, needs {rule.op} {_fmt(rule.limit)} ({word} {_fmt(max(by, 0.0))})"
        checks.append(Check(label, v, ok, by, msg))
    if not checks:
        return RuleResult(rule, False, f"{rule.metric} is undefined on every row {rule.selector} selects")
    failed = [c for c in checks if not c.passed]
    if not failed:
        worst = max(checks, key=lambda c: c.by if c.by is not None else -math.inf)
        more = f" and {len(checks) - 1} more rows" if len(checks) > 1 else ""
        return RuleResult(rule, True, f"{worst.message}{more}", tuple(checks))
    failed.sort(key=lambda c: -(c.by if c.by is not None else math.inf))
    shown = "; ".join(c.message for c in failed[:3])
    if len(failed) > 3:
        shown += f"; and {len(failed) - 3} more rows"
    return RuleResult(rule, False, shown, tuple(checks))


def evaluate_policy(policy: Policy, rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]] | None = None) -> PolicyReport:
    """Judge every rule; see :func:`evaluate_rule`."""
    return PolicyReport(policy, [evaluate_rule(r, rows, baseline_rows) for r in policy.rules])


def policy_markdown(report: PolicyReport) -> str:
    """A Markdown table of rule results for a CI job summary."""
    from robustlab.reporting.tables import md_escape

    verdict = "passed" if report.passed else f"FAILED ({len(report.failed)} of {len(report.results)} rules)"
    lines = [f"## Policy `{md_escape(report.policy.name)}`: {verdict}", "", "| | Rule | Result |", "| --- | --- | --- |"]
    for r in report.results:
        lines.append(f"| {'✅' if r.passed else '❌'} | `{r.rule.text.replace('|', '/')}` | {md_escape(r.message)} |")
    return "\n".join(lines) + "\n"
