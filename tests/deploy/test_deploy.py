"""Deployment artifacts are validated here, since no Docker engine or cluster runs on these machines.

promtool checks the Prometheus configs and rules and runs the rule unit tests; the Kubernetes manifests are checked
against their schemas (kubernetes-validate), the compose file against the compose specification's schema
(check-jsonschema's vendored copy); the Grafana dashboard and the alerting rules may only name metrics the code
exports.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
METRIC = re.compile(r"\b(rmad_[a-z0-9_]+)\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (`make test` installs Debian's prometheus package)")
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=PROM, timeout=120)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_prometheus_configs_are_valid(config: str) -> None:
    out = _promtool("check", "config", config)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerting_rules_are_valid_and_their_unit_tests_pass() -> None:
    check = _promtool("check", "rules", "rules.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    unit = _promtool("test", "rules", "rules_test.yml")
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_kubernetes_manifests_match_their_schemas() -> None:
    import kubernetes_validate

    docs = 0
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            kubernetes_validate.validate(doc, "1.33.0", strict=True)
            docs += 1
    assert docs >= 10


def test_every_deployment_has_probes_and_resources() -> None:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Deployment":
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", path
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", path
                assert c["resources"]["requests"] and c["resources"]["limits"], path


def test_compose_file_matches_the_compose_specification() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert {"worker-1", "worker-2", "ingest", "api", "prometheus", "grafana", "redis"} <= set(compose["services"])


def _exported_metric_names() -> set[str]:
    """Every sample name the service can export, after importing all of service/ (metrics register on import)."""
    import service
    from service.metrics import REGISTRY

    for mod in pkgutil.walk_packages(service.__path__, "service."):
        try:
            importlib.import_module(mod.name)
        except ImportError:  # an optional runtime extra (e.g. onnxruntime-gpu) absent here
            continue
    names: set[str] = set()
    for family in REGISTRY.collect():
        base = family.name
        names.add(base)
        if family.type == "counter":
            names.add(base + "_total")
        elif family.type == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        elif family.type == "info":
            names.add(base + "_info")
    return names


def _queries() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "rmad-overview.json").read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    out += [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    return out


def test_dashboard_and_rules_only_name_exported_metrics() -> None:
    exported = _exported_metric_names()
    missing = {(where, name) for where, expr in _queries() for name in METRIC.findall(expr) if name not in exported}
    assert not missing, f"queries name metrics the code does not export: {sorted(missing)}"


def test_dashboard_covers_what_operators_watch() -> None:
    text = " ".join(expr for _, expr in _queries())
    for needed in (
        "rmad_ingest_messages_total",
        "rmad_worker_consumer_lag_seconds",
        "rmad_worker_end_to_end_seconds_bucket",
        "rmad_worker_alerts_total",
        "rmad_http_request_duration_seconds_bucket",
    ):
        assert needed in text
