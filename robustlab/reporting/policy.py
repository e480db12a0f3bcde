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
lower-is-better metrics (``misclassified``, ``fpr_at_tpr_0.95``, ``eer``, ``brier``, ``ece``)
both are taken the other way round, so positive is always worse.

Metrics are the row's columns (``accuracy``, ``balanced_accuracy``, ``fake_accuracy``,
``tpr_at_fpr_0.01``...); ``tpr@fpr=0.01``, ``tpr@fpr=0.001`` and ``fpr@tpr=0.95`` are accepted
for ``tpr_at_fpr_0.01``, ``tpr_at_fpr_0.001`` and ``fpr_at_tpr_0.95``.

Intervals: ``accuracy``, ``auc`` and ``tpr_at_fpr_0.01`` carry a bootstrap 95% interval
(``*_ci``). ``ref.metric.lo`` / ``ref.metric.hi`` compare its bounds (``clean.accuracy.lo >=
0.90``: holds only when the whole interval is above 0.90). A plain ``>=`` / ``<=`` / ``>`` / ``<``
rule on such a metric whose interval straddles the limit (``lo < limit < hi``) is
``inconclusive``: the data cannot tell which side the detector is on. ``inconclusive`` says how
it counts: ``fail`` (the default), ``pass``, or ``warn`` (passes, reported as a warning). Its
message gives the sample size that would decide it: an interval's half-width shrinks as
``1/sqrt(n)``, so with ``h`` the distance from the value to the interval's end on the limit's side
and ``d`` the distance from the value to the limit, ``n * (h / d)**2`` images would put the limit
outside the interval (an estimate: it assumes the value stays where it is).
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
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "auc", "ap", "balanced_accuracy", "real_accuracy", "fake_accuracy", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001")
LOWER_IS_BETTER = ("misclassified", "fpr_at_tpr_0.95", "eer", "brier", "ece")
OTHER_METRICS = ("n", "linf", "l2")
METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER + OTHER_METRICS
INTERVAL_METRICS = ("accuracy", "auc", "tpr_at_fpr_0.01")  # those with a ``METRIC_ci`` [lo, hi]
BOUNDS = ("lo", "hi")
ALIASES = {("tpr", "fpr"): "tpr_at_fpr_{}", ("fpr", "tpr"): "fpr_at_tpr_{}"}  # tpr@fpr=0.01 -> tpr_at_fpr_0.01
INCONCLUSIVE_MODES = ("fail", "pass", "warn")
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
    bound: str | None = None  # "lo" / "hi": the metric's interval bound, not its value

    @property
    def label(self) -> str:
        return self.name or self.text

    def value_name(self, row_label: str) -> str:
        ref = f"{row_label}.{self.metric}" + (f".{self.bound}" if self.bound else "")
        return f"{self.function}({ref})" if self.function else ref


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*(?:\d+(?:\.\d*)?|\.\d+))?\s*%?")
_VALUE = re.compile(r"[^,\]\s]+")
_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.\d+)?(?:@[A-Za-z]+=\d*\.?\d+(?:/\d+)?%?)?")


def canonical_metric(text: str) -> str | None:
    """``tpr@fpr=0.01`` / ``tpr@fpr=1%`` -> ``tpr_at_fpr_0.01``; a row column name as is; None if unknown."""
    if "@" not in text:
        return text if text in METRICS else None
    left, _, rest = text.partition("@")
    key, _, value = rest.partition("=")
    pattern = ALIASES.get((left.lower(), key.lower()))
    if pattern is None:
        return None
    try:
        want = parse_number(value)
    except ValueError:
        return None
    return next((m for m in METRICS if m.startswith(pattern.format("")) and abs(float(m[len(pattern.format("")):]) - want) < 1e-12), None)


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
    m = sc.match(_METRIC)
    if m is None:
        raise sc.fail(f"expected a metric after '.', found {sc.what()}")
    written, mpos = m
    metric = canonical_metric(written)  # type: ignore[assignment]
    if metric is None:
        raise sc.fail(f"unknown metric {written!r} (use one of: {', '.join(METRICS)}; or tpr@fpr=0.01, tpr@fpr=0.001, fpr@tpr=0.95)", mpos)
    if function and metric in OTHER_METRICS:
        raise sc.fail(f"{function}() needs a metric with a better direction, not {metric!r} (use one of: {', '.join(HIGHER_IS_BETTER + LOWER_IS_BETTER)})", mpos)
    bound = None
    if sc.peek() == ".":
        sc.pos += 1
        b = sc.match(_NAME)
        if b is None or b[0] not in BOUNDS:
            raise sc.fail(f"expected lo or hi after '{written}.', found {repr(b[0]) if b else sc.what()}", b[1] if b else None)
        if metric not in INTERVAL_METRICS:
            raise sc.fail(f"{metric!r} has no interval (.lo / .hi exist for {', '.join(INTERVAL_METRICS)})", b[1])
        if function:
            raise sc.fail(f"{function}() takes a metric, not an interval bound (drop .{b[0]})", b[1])
        bound = b[0]
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
    return Rule(text=" ".join(text.split()), function=function, selector=selector, metric=metric, op=op, limit=limit, name=name, line=line, bound=bound)


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
    inconclusive: bool = False  # the interval straddles the limit (``passed`` is then the point value's verdict)
    needed_n: int | None = None  # for an inconclusive check: images that would decide it (None: none would)


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    passed: bool  # the verdict that counts (an inconclusive rule: as the ``inconclusive`` mode says)
    message: str  # one line: what was found; for a failure, by how much
    checks: tuple[Check, ...] = ()
    inconclusive: bool = False  # no row failed, and some row's interval straddles the limit

    @property
    def status(self) -> str:
        """``passed`` | ``failed`` | ``inconclusive``."""
        return "inconclusive" if self.inconclusive else ("passed" if self.passed else "failed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.text,
            "name": self.rule.name,
            "line": self.rule.line,
            "passed": self.passed,
            "status": self.status,
            "message": self.message,
            "checks": [{"row": c.row, "value": c.value, "passed": c.passed, "by": c.by, "message": c.message, "inconclusive": c.inconclusive, "needed_n": c.needed_n} for c in self.checks],
        }


@dataclass
class PolicyReport:
    policy: Policy
    results: list[RuleResult] = field(default_factory=list)
    inconclusive_mode: str = "fail"  # how inconclusive rules counted: fail | pass | warn

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    @property
    def inconclusive(self) -> list[RuleResult]:
        return [r for r in self.results if r.inconclusive]

    def summary(self) -> str:
        """One line: ``policy failed: 2 of 5 rules (P.yaml): rule: message; ...``."""
        undecided = self.inconclusive
        extra = ""
        if undecided:
            how = {"fail": "counted as failed", "pass": "counted as passed", "warn": "passed with a warning"}[self.inconclusive_mode]
            extra = f", {len(undecided)} inconclusive ({how})"
        if self.passed:
            n = len(self.results) - len(undecided)
            tail = "; ".join(f"{r.rule.label}: {r.message}" for r in undecided)
            return f"policy passed: {n} of {len(self.results)} rules ({self.policy.name}){extra}" + (f": {tail}" if tail else "")
        parts = "; ".join(f"{r.rule.label}: {r.message}" for r in self.failed)
        return f"policy failed: {len(self.failed)} of {len(self.results)} rules ({self.policy.name}){extra}: {parts}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": None if self.policy.source is None else str(self.policy.source),
            "passed": self.passed,
            "failed": len(self.failed),
            "inconclusive": len(self.inconclusive),
            "inconclusive_mode": self.inconclusive_mode,
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


def _interval(row: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    ci = row.get(f"{metric}_ci")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or any(c is None for c in ci):
        return None
    return float(ci[0]), float(ci[1])


def needed_sample_size(n: int, value: float, limit: float, interval: tuple[float, float]) -> int | None:
    """Images that would put ``limit`` outside the interval, if the value stayed where it is.

    The half-width on the limit's side (``h``: value to the interval's end facing the limit)
    shrinks as ``1/sqrt(n)``; it must fall to ``d = |value - limit|``: ``n * (h / d)**2``, rounded
    up. None when the value sits on the limit (no sample size decides it).
    """
    d = abs(value - limit)
    if d <= TOLERANCE:
        return None
    h = value - interval[0] if limit <= value else interval[1] - value
    return max(int(n) + 1, int(math.ceil(n * (h / d) ** 2)))


def _straddles(op: str, limit: float, interval: tuple[float, float]) -> bool:
    return op in (">=", "<=", ">", "<") and interval[0] < limit - TOLERANCE and interval[1] > limit + TOLERANCE


def _judge(rule: Rule, r: Mapping[str, Any], label: str, name: str, v: float) -> Check:
    """One row's defined value against the rule: passed / failed by how much, or inconclusive
    when the row's interval for a plain rule straddles the limit."""
    ok = OPS[rule.op](v, rule.limit)
    by = _margin(rule.op, v, rule.limit)
    ci = _interval(r, rule.metric) if rule.function is None and rule.bound is None else None
    if ci is not None and _straddles(rule.op, rule.limit, ci):
        need = needed_sample_size(int(r.get("n") or 0), v, rule.limit, ci)
        decide = f"about n={need} would decide it" if need is not None else "the value is on the limit: no sample size decides it"
        msg = f"{name} = {_fmt(v)}, 95% interval [{_fmt(ci[0])}, {_fmt(ci[1])}] straddles the limit {rule.op} {_fmt(rule.limit)}: inconclusive at n={r.get('n')} ({decide})"
        return Check(label, v, ok, by, msg, inconclusive=True, needed_n=need)
    if ok:
        msg = f"{name} = {_fmt(v)} (limit {rule.op} {_fmt(rule.limit)})"
    elif rule.op in ("==",):
        msg = f"{name} = {_fmt(v)}, needs == {_fmt(rule.limit)} (off by {_fmt(by)})"
    elif rule.op == "!=":
        msg = f"{name} = {_fmt(v)}, needs != {_fmt(rule.limit)}"
    else:
        word = "short by" if rule.op in (">=", ">") else "over by"
        msg = f"{name} = {_fmt(v)}, needs {rule.op} {_fmt(rule.limit)} ({word} {_fmt(max(by, 0.0))})"
    return Check(label, v, ok, by, msg)


def evaluate_rule(rule: Rule, rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]] | None = None, *, inconclusive: str = "fail") -> RuleResult:
    """Judge one rule against a run's rows (and a baseline's, for ``regression``).

    ``inconclusive`` (``fail`` | ``pass`` | ``warn``): how a rule counts when no row fails it
    but some row's interval straddles the limit (see the module docstring).
    """
    if inconclusive not in INCONCLUSIVE_MODES:
        raise ValueError(f"inconclusive must be one of {', '.join(INCONCLUSIVE_MODES)}, not {inconclusive!r}")
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
        if rule.bound is not None:
            ci = _interval(r, rule.metric)
            v = None if ci is None else ci[BOUNDS.index(rule.bound)]
        elif rule.function == "drop":
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
            if rule.bound is not None and r.get(rule.metric) is not None:
                note = "no interval: the run was evaluated with --bootstrap 0"
            checks.append(Check(label, None, False, None, f"{name} is undefined" + (f" ({note})" if note else "")))
            continue
        checks.append(_judge(rule, r, label, name, float(v)))
    if not checks:
        return RuleResult(rule, False, f"{rule.metric} is undefined on every row {rule.selector} selects")
    failed = [c for c in checks if not c.passed and not c.inconclusive]
    undecided = [c for c in checks if c.inconclusive]
    if not failed and undecided:
        shown = "; ".join(c.message for c in undecided[:3]) + (f"; and {len(undecided) - 3} more rows" if len(undecided) > 3 else "")
        return RuleResult(rule, inconclusive != "fail", shown, tuple(checks), inconclusive=True)
    if not failed:
        worst = max(checks, key=lambda c: c.by if c.by is not None else -math.inf)
        more = f" and {len(checks) - 1} more rows" if len(checks) > 1 else ""
        return RuleResult(rule, True, f"{worst.message}{more}", tuple(checks))
    failed.sort(key=lambda c: -(c.by if c.by is not None else math.inf))
    shown = "; ".join(c.message for c in failed[:3])
    if len(failed) > 3:
        shown += f"; and {len(failed) - 3} more rows"
    return RuleResult(rule, False, shown, tuple(checks))


def evaluate_policy(policy: Policy, rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]] | None = None, *, inconclusive: str = "fail") -> PolicyReport:
    """Judge every rule; see :func:`evaluate_rule` (``inconclusive``: fail | pass | warn)."""
    return PolicyReport(policy, [evaluate_rule(r, rows, baseline_rows, inconclusive=inconclusive) for r in policy.rules], inconclusive)


def status_word(result: RuleResult) -> str:
    """``PASS`` | ``FAIL`` | ``INCONCLUSIVE`` for a rule result (CLI and Markdown)."""
    return "INCONCLUSIVE" if result.inconclusive else ("PASS" if result.passed else "FAIL")


def policy_markdown(report: PolicyReport) -> str:
    """A Markdown table of rule results for a CI job summary."""
    from robustlab.reporting.tables import md_escape

    verdict = "passed" if report.passed else f"FAILED ({len(report.failed)} of {len(report.results)} rules)"
    if report.inconclusive:
        verdict += f", {len(report.inconclusive)} inconclusive (--inconclusive {report.inconclusive_mode})"
    lines = [f"## Policy `{md_escape(report.policy.name)}`: {verdict}", "", "| | Rule | Result |", "| --- | --- | --- |"]
    for r in report.results:
        icon = "❔ inconclusive" if r.inconclusive else ("✅" if r.passed else "❌")
        lines.append(f"| {icon} | `{r.rule.text.replace('|', '/')}` | {md_escape(r.message)} |")
    return "\n".join(lines) + "\n"
