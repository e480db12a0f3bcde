"""Suites: what ``robustlab evaluate --suite S.yaml`` runs, in the same strings as the CLI flags::

    name: ci-quick
    attacks: ["fgsm:eps=2/255,8/255", "pgd:eps=8/255,steps=10"]   # as --attack
    corruptions: ["jpeg:1-5", "blur:1-5"]                          # as --corruption
    attack_fraction: 0.3                                           # the attacked share of the set
    policy: ../policies/ci-quick.yaml                              # relative to this file

Attack strings are parsed by :func:`robustlab.attacks.parse_attacks`, corruption strings by
:func:`robustlab.corruptions.parse_corruptions` (both imported only when the suite is used). Any
mistake is a one-line :class:`RobustlabError` naming the file and line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError
from robustlab.yamlfile import compose_yaml

SUITE_KEYS = ("name", "description", "attacks", "corruptions", "attack_fraction", "policy")


@dataclass(frozen=True)
class Suite:
    source: Path
    name: str
    attacks: tuple[str, ...] = ()
    corruptions: tuple[str, ...] = ()
    attack_fraction: float | None = None
    policy: Path | None = None
    lines: tuple[tuple[str, int], ...] = ()  # (entry, line) for error messages

    def _line(self, entry: str) -> str:
        line = next((ln for e, ln in self.lines if e == entry), None)
        return f"{self.source}: line {line}" if line else str(self.source)

    def variants(self) -> list[Any]:
        """The attack and corruption variants (attacks first), each string checked on its own."""
        out: list[Any] = []
        if self.attacks:
            try:
                from robustlab.attacks.variant import parse_attacks
            except ModuleNotFoundError:
                raise RobustlabError("this robustlab has no attacks module", thing=self.source, fix="remove `attacks:` from the suite or update robustlab") from None
            for text in self.attacks:
                try:
                    parse_attacks([text])
                except RobustlabError as exc:
                    raise RobustlabError(f"attack {text!r}: {exc.problem}", thing=self._line(f"attack:{text}"), fix=exc.fix) from None
            out.extend(parse_attacks(list(self.attacks)))
        if self.corruptions:
            try:
                from robustlab.corruptions.variant import parse_corruptions
            except ModuleNotFoundError:
                raise RobustlabError("this robustlab has no corruptions module", thing=self.source, fix="remove `corruptions:` from the suite or update robustlab") from None
            for text in self.corruptions:
                try:
                    parse_corruptions([text])
                except RobustlabError as exc:
                    raise RobustlabError(f"corruption {text!r}: {exc.problem}", thing=self._line(f"corruption:{text}"), fix=exc.fix) from None
            out.extend(parse_corruptions(list(self.corruptions)))
        return out

    def to_info(self) -> dict[str, Any]:
        return {
            "file": str(self.source),
            "name": self.name,
            "attacks": list(self.attacks),
            "corruptions": list(self.corruptions),
            "attack_fraction": self.attack_fraction,
            "policy": None if self.policy is None else str(self.policy),
        }


def load_suite(path: "str | Path") -> Suite:
    """Read and check a suite YAML (not yet its attack/corruption strings: see :meth:`Suite.variants`)."""
    import yaml

    from robustlab.metrics import parse_fraction

    path = Path(path)
    fix = "see configs/suites/ and the README (Reports, policies and CI)"
    root = compose_yaml(path, what="suite", missing_fix="check the path (ready suites are in configs/suites/)", syntax_fix=fix)
    if not isinstance(root, yaml.MappingNode):
        raise RobustlabError("a suite is a mapping with attacks:, corruptions:, attack_fraction:, policy:", thing=path, fix=fix)
    values: dict[str, Any] = {}
    lines: list[tuple[str, int]] = []
    for key, node in root.value:
        k = key.value if isinstance(key, yaml.ScalarNode) else None
        where = f"{path}: line {key.start_mark.line + 1}"
        if k not in SUITE_KEYS:
            raise RobustlabError(f"unknown key {k!r}", thing=where, fix=f"a suite has: {', '.join(SUITE_KEYS)}")
        if k in ("attacks", "corruptions"):
            if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
                values[k] = ()
                continue
            if not isinstance(node, yaml.SequenceNode) or not all(isinstance(n, yaml.ScalarNode) for n in node.value):
                raise RobustlabError(f"{k} must be a list of strings like {'fgsm:eps=8/255' if k == 'attacks' else 'jpeg:1-5'}", thing=where, fix=fix)
            values[k] = tuple(n.value for n in node.value)
            lines += [(f"{k[:-1]}:{n.value}", n.start_mark.line + 1) for n in node.value]
        elif k == "attack_fraction":
            try:
                v = parse_fraction(str(node.value), what="attack_fraction") if isinstance(node, yaml.ScalarNode) else None
            except ValueError:
                v = None
            if v is None or not 0.0 < v <= 1.0:
                raise RobustlabError(f"attack_fraction {getattr(node, 'value', '?')!r} is not a number in (0, 1]", thing=where, fix="write e.g. attack_fraction: 0.3")
            values[k] = v
        elif k == "policy":
            if not isinstance(node, yaml.ScalarNode) or not node.value:
                raise RobustlabError("policy must be a path", thing=where, fix="write e.g. policy: ../policies/ci-quick.yaml")
            p = Path(node.value).expanduser()
            p = p if p.is_absolute() else path.parent / p
            if not p.is_file():
                raise RobustlabError(f"policy file {node.value!r} not found (looked at {p})", thing=where, fix="a relative policy path is relative to the suite file")
            values[k] = p
        else:
            values[k] = str(node.value) if isinstance(node, yaml.ScalarNode) else None
    if not values.get("attacks") and not values.get("corruptions"):
        raise RobustlabError("the suite runs nothing: no attacks and no corruptions", thing=path, fix="add attacks: [...] and/or corruptions: [...]")
    return Suite(
        source=path,
        name=values.get("name") or path.stem,
        attacks=tuple(values.get("attacks", ())),
        corruptions=tuple(values.get("corruptions", ())),
        attack_fraction=values.get("attack_fraction"),
        policy=values.get("policy"),
        lines=tuple(lines),
    )
