"""docker-compose.yml is valid and the api and the worker get the same, real settings.

No Docker engine is needed: `docker-compose config` only parses, interpolates and validates the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]  # no types-PyYAML in dev deps

from services.config import PROJECT_ROOT, Environment, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "compose-test-postgres-password",
    "GIANTFLOW_JWT_SECRET": "compose-test-jwt-secret",
}
# Prefixes of variables that compose would interpolate from the caller's shell: dropped so the test only
# sees the env file it writes.
CALLER_PREFIXES = ("GIANTFLOW_", "POSTGRES_", "COMPOSE_", "TEMPORAL_")
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
)
ONE_SHOT_SERVICES = frozenset({"migrate"})
APP_DEPENDS_ON = {
    "migrate": "service_completed_successfully",
    "temporal": "service_healthy",
}

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


def test_config_refuses_a_missing_jwt_secret(docker_compose: str, tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / "compose.env", {"POSTGRES_PASSWORD": REQUIRED_ENV["POSTGRES_PASSWORD"]}
    )

    result = run_compose(docker_compose, env_file, "-q")

    assert result.returncode != 0
    assert "GIANTFLOW_JWT_SECRET" in result.stderr


def test_api_and_worker_share_their_settings(services: dict[str, Any]) -> None:
    api_env = giantflow_env(services["api"])
    worker_env = giantflow_env(services["worker"])

    # The worker leaves the outbox to the relay service, which shares every other setting.
    assert worker_env.pop("GIANTFLOW_WORKER_RELAY") == "false"
    assert api_env == worker_env == giantflow_env(services["relay"])
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


def test_services_start_in_order(services: dict[str, Any]) -> None:
    assert depends_on(services["temporal"]) == {"postgres": "service_healthy"}
    assert depends_on(services["temporal-ui"]) == {"temporal": "service_healthy"}
    assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    assert depends_on(services["api"]) == APP_DEPENDS_ON
    assert depends_on(services["worker"]) == APP_DEPENDS_ON


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    long_running = set(services) - ONE_SHOT_SERVICES

    assert {"postgres", "temporal", "temporal-ui", "api", "worker", "bank-sim"} <= long_running
    missing = sorted(name for name in long_running if not services[name].get("healthcheck", {}).get("test"))
    assert not missing, f"no healthcheck: {missing}"


def test_api_and_worker_share_the_data_volume(services: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        volumes = [str(volume) for volume in services[name]["volumes"]]
        assert any(volume.startswith("giantflow-data:/data") for volume in volumes), name


def test_bank_simulator_listens_where_the_app_calls_it(services: dict[str, Any]) -> None:
    app_url = urlsplit(giantflow_env(services["api"])["GIANTFLOW_BANK_URL"])
    listen_url = urlsplit(giantflow_env(services["bank-sim"])["GIANTFLOW_BANK_URL"])

    assert app_url.hostname == "bank-sim"
    assert listen_url.hostname == "0.0.0.0"
    assert listen_url.port == app_url.port
