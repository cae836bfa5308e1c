"""
The sample Prometheus configuration and alert rules in C{contrib/prometheus/}
(shown in README): valid, and naming only metrics tsecho serves.  Checked with
C{promtool} when it is on the PATH (Debian's C{prometheus} package has it), and
always by parsing the YAML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tsecho.metrics import ServerMetrics, registry_for

CONTRIB = Path(__file__).parent.parent / "contrib" / "prometheus"


def served_names() -> set[str]:
    """
    Every sample name a scrape of tsecho has.
    """
    registry, _ = registry_for(ServerMetrics(set()))
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {sample.name for family in families for sample in family.samples}


def test_rules_name_served_metrics() -> None:
    """
    Each alert has an expression, a duration, a severity and a summary, and
    names only metrics that tsecho serves.
    """
    rules = yaml.safe_load((CONTRIB / "tsecho-alerts.yml").read_text())
    [group] = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert set(alerts) == {"TsechoRefusingClients", "TsechoConnectionsNearLimit"}
    names = served_names()
    for rule in alerts.values():
        assert rule["for"]
        assert rule["labels"]["severity"]
        assert rule["annotations"]["summary"]
        used = set(re.findall(r"\btsecho_\w+", rule["expr"]))
        assert used
        assert used <= names, used - names


def test_scrape_config() -> None:
    """
    The scrape config loads the rules and scrapes the address README uses.
    """
    config = yaml.safe_load((CONTRIB / "prometheus.yml").read_text())
    assert config["rule_files"] == ["tsecho-alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9121"]
    assert "tcp:9121:interface=127.0.0.1" in (CONTRIB.parent.parent / "README.md").read_text()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool() -> None:
    """
    C{promtool} accepts the config and the rules, and the rules' unit tests pass.
    """
    for command in (["check", "config", "prometheus.yml"], ["test", "rules", "tsecho-alerts.test.yml"]):
        result = subprocess.run(["promtool", *command], cwd=CONTRIB, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
