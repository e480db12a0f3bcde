"""junit.xml: one test case per policy rule, for CI systems.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from robustlab.reporting.policy import PolicyReport

# --------------------------------------------------------------------------- JUnit


def junit_xml(report: PolicyReport, *, suite_name: str | None = None, properties: Mapping[str, Any] | None = None) -> str:
    """JUnit XML with one ``<testcase>`` per rule: ``<failure>`` for a failed one (type
    ``PolicyInconclusive`` for an inconclusive rule counted as failed), ``<skipped>`` for an
    inconclusive one under ``--inconclusive warn``, plain for a passed one."""
    import xml.etree.ElementTree as ET

    name = suite_name or f"robustlab policy {report.policy.name}"
    n, f = len(report.results), len(report.failed)
    warned = [r for r in report.inconclusive if r.passed and report.inconclusive_mode == "warn"]
    top = ET.Element("testsuites", name="robustlab", tests=str(n), failures=str(f), errors="0")
    suite = ET.SubElement(top, "testsuite", name=name, tests=str(n), failures=str(f), errors="0", skipped=str(len(warned)), time="0")
    if properties:
        props = ET.SubElement(suite, "properties")
        for k, v in properties.items():
            if v is not None:
                ET.SubElement(props, "property", name=str(k), value=str(v))
    classname = "robustlab.policy." + re.sub(r"[^A-Za-z0-9_]+", "_", Path(report.policy.name).stem).strip("_")
    for res in report.results:
        case = ET.SubElement(suite, "testcase", classname=classname, name=res.rule.label, time="0")
        details = "\n".join(c.message for c in res.checks) or res.message
        if res.rule.line is not None:
            details = f"{report.policy.name} line {res.rule.line}: {res.rule.text}\n{details}"
        if res in warned:
            ET.SubElement(case, "skipped", message=f"inconclusive: {res.message}")
            ET.SubElement(case, "system-out").text = details
        elif res.passed:
            ET.SubElement(case, "system-out").text = ("INCONCLUSIVE (counted as passed)\n" if res.inconclusive else "") + details
        else:
            fail = ET.SubElement(case, "failure", message=res.message, type="PolicyInconclusive" if res.inconclusive else "PolicyFailed")
            fail.text = details
    ET.indent(top)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode") + "\n"
