"""How ``badged test`` reports: a line per step like a test runner, JSON, and JUnit XML for CI systems. Pure."""

from __future__ import annotations

import json
from xml.etree import ElementTree

from badged.badge_tests import FileResult, Report


def report_text(report: Report) -> str:
    lines = []
    for result in report.files:
        if result.error is not None:
            lines.append(f"{result.path} ERROR: {result.error}")
            continue
        for step in result.steps:
            lines.append(f"{result.path}::{step.name} {'PASSED' if step.passed else 'FAILED'}")
            lines += [f"    {failure}" for failure in step.failures]
    passed, failed = report.counts
    seconds = sum(result.seconds for result in report.files)
    lines.append(f"{passed} passed, {failed} failed in {seconds:.2f} s" if failed else
                 f"{passed} passed in {seconds:.2f} s")
    return "\n".join(lines)


def report_json(report: Report) -> str:
    passed, failed = report.counts
    return json.dumps({
        "passed": report.passed, "steps_passed": passed, "failed": failed,
        "files": [{"path": result.path, "passed": result.passed, "error": result.error,
                   "seconds": round(result.seconds, 4),
                   "steps": [{"name": step.name, "passed": step.passed, "failures": list(step.failures),
                              "seconds": round(step.seconds, 4)} for step in result.steps]}
                  for result in report.files],
    }, indent=2)


def report_junit(report: Report) -> str:
    """JUnit XML: a testsuite per file, a testcase per step (a file that could not run: one errored case)."""
    suites = ElementTree.Element("testsuites", name="badged test")
    for result in report.files:
        suites.append(_suite(result))
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True)


def _suite(result: FileResult) -> ElementTree.Element:
    failures = sum(not step.passed for step in result.steps)
    suite = ElementTree.Element("testsuite", name=result.path, tests=str(len(result.steps) or 1),
                                failures=str(failures), errors=str(int(result.error is not None)),
                                time=f"{result.seconds:.3f}")
    if result.error is not None:
        case = ElementTree.SubElement(suite, "testcase", classname=result.path, name="(file)", time="0")
        ElementTree.SubElement(case, "error", message=result.error).text = result.error
    for step in result.steps:
        case = ElementTree.SubElement(suite, "testcase", classname=result.path, name=step.name,
                                      time=f"{step.seconds:.3f}")
        if not step.passed:
            ElementTree.SubElement(case, "failure", message=step.failures[0]).text = "\n".join(step.failures)
    return suite
