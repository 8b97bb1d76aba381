"""Checks on deploy/: the files parse, agree with each other and with the code, and hold no secrets.

Nothing here needs Docker, Kubernetes or a network: the files are read and validated as data.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# The execution service's metric contract; deploy/README.md lists the same names.
CONTRACT_METRICS = frozenset(
    {
        "sapphire_orders_total",
        "sapphire_fills_total",
        "sapphire_risk_denials_total",
        "sapphire_position",
        "sapphire_position_notional",
        "sapphire_gross_exposure",
        "sapphire_pnl",
        "sapphire_drawdown",
        "sapphire_trading_state",
        "sapphire_target_age_seconds",
        "sapphire_bus_lag_messages",
        "sapphire_dead_letters_total",
        "sapphire_decision_latency_seconds",
    }
)
HISTOGRAMS = frozenset({"sapphire_decision_latency_seconds"})
METRIC_NAME = re.compile(r"\bsapphire_[a-z0-9_]+")

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
TEXT_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def _load_yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s_objects(kind: str, name: str) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in _load_yaml_docs(path)
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name
    ]


def _one_k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = _k8s_objects(kind, name)
    assert len(found) == 1, f"expected one {kind} {name!r} under deploy/k8s, found {len(found)}"
    return found[0]


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, histogram series folded back to their base name."""
    names = set()
    for series in METRIC_NAME.findall(expr):
        bases = {series.removesuffix(s) for s in ("_bucket", "_sum", "_count")} & HISTOGRAMS
        names.add(bases.pop() if bases else series)
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/sapphire-trading.json").read_text())
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    exprs += [str(v.get("query", "")) for v in dashboard.get("templating", {}).get("list", [])]
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def _dockerfile_cmd() -> list[str]:
    lines = [ln for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.startswith("CMD")]
    assert len(lines) == 1, "the Dockerfile needs exactly one CMD"
    return json.loads(lines[0].removeprefix("CMD").strip())  # exec form: a JSON array


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# --- every file parses -----------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    assert _load_yaml_docs(path), f"{path} is empty"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_json_file_under_deploy_parses(path: Path) -> None:
    assert json.loads(path.read_text())


def test_deploy_folder_has_the_expected_files() -> None:
    # The parse tests pass vacuously on a missing file; this keeps them honest.
    for relative in (
        "Dockerfile",
        "dagster-production.yaml",
        "helm/dagster-values.yaml",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/dashboards/sapphire-trading.json",
        "k8s/execution-service.yaml",
        "k8s/redis.yaml",
        "k8s/vllm.yaml",
        "k8s/secret.template.yaml",
    ):
        assert (DEPLOY / relative).is_file(), relative


# --- the Dagster instance -----------------------------------------------------------------------


def test_production_instance_config_passes_dagsters_own_schema() -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator import QueuedRunCoordinator

    config, custom_instance_class = dagster_instance_config(str(DEPLOY), "dagster-production.yaml")
    assert custom_instance_class is None

    # The top-level schema treats each pluggable class's config as opaque; check it separately.
    coordinator = config["run_coordinator"]
    assert (coordinator["module"], coordinator["class"]) == ("dagster", "QueuedRunCoordinator")
    result = validate_config(QueuedRunCoordinator.config_type(), coordinator["config"])
    assert result.success, result.errors
    assert coordinator["config"]["max_concurrent_runs"] > 0

    assert config["telemetry"] == {"enabled": False}
    assert config["nux"] == {"enabled": False}


def test_production_instance_reads_every_postgres_setting_but_the_port_from_the_environment() -> (
    None
):
    config = yaml.safe_load((DEPLOY / "dagster-production.yaml").read_text())
    postgres_db = config["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in postgres_db.items() if k != "port"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }


def test_production_run_launcher_config_passes_the_k8s_run_launcher_schema() -> None:
    # dagster-k8s is installed in the image, not in the project environment; run where it exists.
    dagster_k8s = pytest.importorskip("dagster_k8s")
    from dagster._config import validate_config

    config = yaml.safe_load((DEPLOY / "dagster-production.yaml").read_text())
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors


def test_production_run_launcher_is_the_k8s_one_with_its_image_from_the_environment() -> None:
    launcher = yaml.safe_load((DEPLOY / "dagster-production.yaml").read_text())["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert launcher["config"]["job_image"] == {"env": "DAGSTER_K8S_JOB_IMAGE"}
    assert launcher["config"]["job_namespace"] == {"env": "DAGSTER_K8S_JOB_NAMESPACE"}


def test_helm_values_and_production_instance_agree_on_the_run_queue_and_secrets() -> None:
    instance = yaml.safe_load((DEPLOY / "dagster-production.yaml").read_text())
    values = yaml.safe_load((DEPLOY / "helm/dagster-values.yaml").read_text())

    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    instance_limit = instance["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queued["maxConcurrentRuns"] == instance_limit

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    helm_secrets = {s["name"] for s in launcher["envSecrets"]}
    assert (
        helm_secrets
        == set(instance["run_launcher"]["config"]["env_secrets"])
        == {"sapphire-secrets"}
    )
    assert values["telemetry"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False


def test_helm_user_deployment_serves_the_code_location_in_production_mode() -> None:
    values = yaml.safe_load((DEPLOY / "helm/dagster-values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    module = _pyproject()["tool"]["dagster"]["module_name"]
    assert deployment["codeServerArgs"] == ["-m", module]
    assert deployment["port"] == 4000
    assert {"name": "SAPPHIRE_ENV", "value": "production"} in deployment["env"]
    assert {"name": "sapphire-secrets"} in deployment["envSecrets"]


# --- the image ----------------------------------------------------------------------------------


def test_dockerfile_cmd_serves_the_module_named_in_pyproject() -> None:
    cmd = _dockerfile_cmd()
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == _pyproject()["tool"]["dagster"]["module_name"]
    assert cmd[cmd.index("-p") + 1] == "4000"
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0"


def test_dockerfile_syncs_the_lock_before_copying_the_code_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "python:3.11-slim-bookworm" in text
    deps_sync = text.index("--no-install-project")
    assert text.index("COPY pyproject.toml uv.lock") < deps_sync < text.index("COPY . .")
    assert re.search(r"^EXPOSE\s.*\b4000\b", text, re.MULTILINE)
    assert re.search(r"DAGSTER_HOME=/opt/dagster/home\b", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_image_installs_the_production_extra_in_lockstep_with_dagster() -> None:
    # Postgres storage and the K8sRunLauncher come from the locked `production` extra, so they
    # move together with dagster-gcp instead of being pinned by hand in the image.
    project = _pyproject()["project"]
    integration = next(d for d in project["dependencies"] if d.startswith("dagster-gcp=="))
    version = integration.split("==", 1)[1]
    extra = project["optional-dependencies"]["production"]
    assert f"dagster-postgres=={version}" in extra and f"dagster-k8s=={version}" in extra
    syncs = re.findall(r"uv sync [^\n]*", (DEPLOY / "Dockerfile").read_text())
    assert syncs and all("--extra production" in s for s in syncs)


# --- Kubernetes -------------------------------------------------------------------------------


def test_execution_service_runs_exactly_one_replica_replaced_by_recreate() -> None:
    deployment = _one_k8s_object("Deployment", "sapphire-execution")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}

    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["sapphire", "exec"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    assert {"name": "SAPPHIRE_ENV", "value": "production"} in container["env"]


def test_redis_persists_the_bus_with_an_append_only_file_on_a_volume() -> None:
    config_map = _one_k8s_object("ConfigMap", "sapphire-redis-config")
    settings = dict(
        line.split(None, 1)
        for line in config_map["data"]["redis.conf"].splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "everysec"
    assert settings["maxmemory-policy"] == "noeviction"

    statefulset = _one_k8s_object("StatefulSet", "sapphire-redis")
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == settings["dir"] and "data" in claims


def test_vllm_runs_on_one_gpu_with_a_health_readiness_probe_and_a_service() -> None:
    deployment = _one_k8s_object("Deployment", "sapphire-vllm")
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["command"] == ["vllm", "serve"]
    assert container["args"][container["args"].index("--port") + 1] == "8000"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod_spec["nodeSelector"] and pod_spec["tolerations"]
    service = _one_k8s_object("Service", "sapphire-vllm")
    assert service["spec"]["ports"][0]["port"] == 8000


# --- metrics ----------------------------------------------------------------------------------


def test_readme_metric_contract_is_the_one_the_tests_enforce() -> None:
    readme = (DEPLOY / "README.md").read_text()
    section = readme.split("## Metric contract", 1)[1]
    listed = set(re.findall(r"^\| `(sapphire_[a-z0-9_]+)`", section, re.MULTILINE))
    assert listed == CONTRACT_METRICS


def test_dashboard_queries_use_only_contract_metrics_and_show_all_of_them() -> None:
    used = set().union(*(_metric_names(expr) for expr in _dashboard_exprs()))
    assert used <= CONTRACT_METRICS, f"not in the contract: {sorted(used - CONTRACT_METRICS)}"
    assert used == CONTRACT_METRICS, f"not on the dashboard: {sorted(CONTRACT_METRICS - used)}"


def test_dashboard_shows_decision_latency_p50_and_p99_from_the_histogram() -> None:
    exprs = " ".join(_dashboard_exprs())
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, " in exprs
    assert "sapphire_decision_latency_seconds_bucket" in exprs


def test_alert_rules_use_only_contract_metrics() -> None:
    rules = _alert_rules()
    used = set().union(*(_metric_names(rule["expr"]) for rule in rules))
    assert used <= CONTRACT_METRICS, f"not in the contract: {sorted(used - CONTRACT_METRICS)}"


def test_alert_rules_cover_the_operator_scenarios() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    assert "== 2" in exprs["SapphireTradingHalted"]
    assert "sapphire_drawdown" in exprs["SapphireDrawdownHigh"]
    assert "sapphire_target_age_seconds" in exprs["SapphireTargetStale"]
    assert "increase(sapphire_dead_letters_total" in exprs["SapphireDeadLettersIncreasing"]
    assert "sapphire_fills_total" in exprs["SapphireFillsStopped"]


def test_prometheus_loads_the_alert_rules_file_beside_it() -> None:
    for name in ("prometheus.yml", "prometheus-local.yml"):
        config = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
        assert config["rule_files"] == ["alerts.yml"]
        assert "sapphire-execution" in {job["job_name"] for job in config["scrape_configs"]}


def test_grafana_datasource_uid_is_the_one_the_dashboard_uses() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uids = {ds["uid"] for ds in provisioned["datasources"]}
    dashboard = json.loads((DEPLOY / "grafana/dashboards/sapphire-trading.json").read_text())
    used = {p["datasource"]["uid"] for p in _panels(dashboard["panels"]) if "datasource" in p}
    assert used and used <= uids


# --- secrets ----------------------------------------------------------------------------------

# A key that names a credential; keys that name *where* a secret lives (secretName, envSecrets,
# secretKeyRef...) are references, not values, and are skipped.
SENSITIVE_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key)")
REFERENCE_KEY = re.compile(r"(?i)(name|names|ref|secrets)$")
# What a credential's value may be in a committed file: nothing, a placeholder or an env reference.
PLACEHOLDER = re.compile(r"^(|<[^<>]+>|CHANGE_ME\w*|\$\{\w+\}|\$\(\w+\))$")
URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@")
PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
ENV_ASSIGNMENT = re.compile(r"\b([A-Z][A-Z0-9_]*)=([^\s\"']+)")


def _secret_findings(node: Any, where: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}"
            sensitive = bool(SENSITIVE_KEY.search(str(key))) and not REFERENCE_KEY.search(str(key))
            if sensitive and isinstance(value, str | int | float) and not isinstance(value, bool):
                if not PLACEHOLDER.match(str(value)):
                    yield f"{path} has a literal value"
            elif sensitive and isinstance(value, dict) and set(value) != {"env"}:
                yield f"{path} is neither a placeholder nor an env reference"
            else:
                yield from _secret_findings(value, path)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _secret_findings(item, f"{where}[{i}]")
    elif isinstance(node, str):
        match = URL_WITH_PASSWORD.search(node)
        if match and not PLACEHOLDER.match(match.group(1)):
            yield f"{where} holds a URL with a password"


def _text_findings(text: str) -> Iterator[str]:
    if PRIVATE_KEY_BLOCK.search(text):
        yield "a private key block"
    for name, value in ENV_ASSIGNMENT.findall(text):
        if SENSITIVE_KEY.search(name) and not PLACEHOLDER.match(value):
            yield f"{name}= has a literal value"


def test_secret_scanner_catches_literal_credentials() -> None:
    # The scan below passing means nothing unless it can fail.
    assert list(_secret_findings({"stringData": {"EXCHANGE_SECRET": "hunter2"}}))
    assert list(_secret_findings({"password": {"value": "x"}}))
    assert list(_secret_findings({"url": "redis://user:hunter2@redis:6379/0"}))
    assert list(_text_findings("ENV EXCHANGE_API_KEY=abc123"))
    assert not list(_secret_findings({"password": {"env": "DAGSTER_PG_PASSWORD"}}))
    assert not list(_secret_findings({"EXCHANGE_SECRET": "<from-secret-store>"}))
    assert not list(_secret_findings({"postgresqlSecretName": "dagster-postgresql-secret"}))


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_file_under_deploy_holds_a_real_secret(path: Path) -> None:
    text = path.read_text()
    findings = list(_text_findings(text))
    if path.suffix in {".yaml", ".yml"}:
        for doc in _load_yaml_docs(path):
            findings += _secret_findings(doc)
    elif path.suffix == ".json":
        findings += _secret_findings(json.loads(text))
    assert not findings, f"{path.relative_to(REPO)}: {findings}"
