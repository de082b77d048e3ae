"""deploy/prometheus: the rule file passes ``promtool check rules``, its unit tests pass
``promtool test rules``, the Alertmanager example passes ``amtool check-config``; every alert
carries ``for:``, a severity, a summary, a description and a runbook that exists in
docs/operations.md, and every alert has a rule test that fires it and one that holds it back."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.prom import ALERTMANAGER, OPERATIONS, RULE_TESTS, RULES

pytestmark = pytest.mark.prometheus


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules() -> None:
    out = run("promtool", "check", "rules", str(RULES))
    assert "SUCCESS" in out


def test_promtool_rule_tests_pass() -> None:
    files = sorted(str(p) for p in RULE_TESTS.glob("*.yml"))
    assert files
    out = run("promtool", "test", "rules", *files)
    assert out.count("SUCCESS") == len(files), out


def test_amtool_checks_the_alertmanager_example() -> None:
    out = run("amtool", "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in out


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "page"), ("warning", "chat")])
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    out = run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"severity={severity}",
        "alertname=GristmillLoaderFailing",
    )
    assert out.splitlines()[0] == f"gristmill-{receiver}"


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    out = set()
    for line in markdown.splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*$", line):
            text = re.sub(r"[`*_]", "", m.group(1)).lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


def test_every_alert_is_complete_and_documented() -> None:
    anchors = github_anchors(OPERATIONS.read_text())
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for a in alerts():
        assert a.get("for"), a["alert"]
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        notes = a["annotations"]
        assert notes["summary"], a["alert"]
        assert notes["description"], a["alert"]
        doc, _, anchor = notes["runbook_url"].partition("#")
        assert doc == "docs/operations.md", a["alert"]
        assert anchor == a["alert"].lower(), a["alert"]
        assert anchor in anchors, f"docs/operations.md has no section for {a['alert']}"


def test_every_alert_fires_and_holds_back_in_a_rule_test() -> None:
    fired: set[str] = set()
    held: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for t in yaml.safe_load(path.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else held).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts no rule test fires"
    assert names - held == set(), "alerts no rule test holds back"
