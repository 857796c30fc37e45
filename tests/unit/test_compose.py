"""The container files (Dockerfile, compose/*.yml) agree with the code they run.

No Docker engine is needed: the compose files are read as YAML and checked against the settings
classes, the service modules and the CLI, so a renamed setting, port or command fails here rather
than in a container that never turns healthy.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from continuo.cli import COMMANDS
from shared.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
DOCKERFILE = REPO / "Dockerfile"
IMAGE = "continuo:dev"
SERVICE_FILES = ("ingest", "trainer", "governance", "serving")
ALL_FILES = ("infra", *SERVICE_FILES, "stack")
# Environment the image sets for Python and the shell, not read by any settings class.
NON_SETTINGS_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/readyz")


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE / f"{name}.yml").read_text())
    assert isinstance(data, dict), name
    return data


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (case-insensitive, so upper-cased)."""
    prefix = cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, AliasPath):  # pragma: no cover - none today
            names.add(str(alias.path[0]).upper())
    return names


def _service_modules() -> list[str]:
    return sorted(p.parent.name for p in (REPO / "services").glob("*/__main__.py"))


def _settings_class(module: str) -> type[CommonSettings]:
    mod = importlib.import_module(f"services.{module}.settings")
    found = [
        obj
        for obj in vars(mod).values()
        if inspect.isclass(obj)
        and issubclass(obj, CommonSettings)
        and obj is not CommonSettings
        and obj.__module__ == mod.__name__
    ]
    assert len(found) == 1, f"services.{module}.settings: expected one settings class, {found}"
    return found[0]


def _all_services() -> dict[str, dict[str, Any]]:
    """Every service of every compose file, by name (a name defined twice must be identical)."""
    services: dict[str, dict[str, Any]] = {}
    for name in ALL_FILES:
        for svc, spec in (_load(name).get("services") or {}).items():
            assert services.get(svc, spec) == spec, f"{svc} defined differently in {name}.yml"
            services[svc] = spec
    return services


def _env(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(spec: dict[str, Any]) -> list[str]:
    cmd = spec["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def _settings_for(spec: dict[str, Any]) -> type[CommonSettings]:
    """The settings class a Continuo container's command reads."""
    cmd = _command(spec)
    if cmd[:2] == ["python", "-m"] and cmd[2].startswith("services."):
        return _settings_class(cmd[2].removeprefix("services."))
    assert cmd[0] == "continuo", cmd
    return CommonSettings


def _dockerfile_env() -> dict[str, str]:
    """ENV of the Dockerfile's final stage (`ENV A=1 \\ B=2` form)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(pair.partition("=")[::2] for pair in line[4:].split())
    return env


CONTINUO = {svc: spec for svc, spec in _all_services().items() if spec.get("image") == IMAGE}


def test_every_file_parses_and_the_stack_includes_them_all() -> None:
    for name in ALL_FILES:
        _load(name)
    included = {Path(p).stem for p in _load("stack")["include"]}
    assert included == set(ALL_FILES) - {"stack"}
    for name in SERVICE_FILES:
        assert "infra.yml" in _load(name)["include"], f"{name}.yml must run on its own"
        assert set(_load(name)["services"]) == {name}


def test_every_service_module_has_a_compose_service() -> None:
    commands = {" ".join(_command(spec)) for spec in CONTINUO.values()}
    for module in _service_modules():
        assert f"python -m services.{module}" in commands
    assert "continuo migrate" in commands


@pytest.mark.parametrize("svc", sorted(CONTINUO))
def test_command_exists(svc: str) -> None:
    cmd = _command(CONTINUO[svc])
    if cmd[0] == "continuo":
        assert len(cmd) >= 2 and cmd[1] in COMMANDS, cmd
    else:
        assert cmd[:2] == ["python", "-m"] and len(cmd) == 3, cmd
        assert importlib.util.find_spec(f"{cmd[2]}.__main__") is not None, cmd


@pytest.mark.parametrize("svc", sorted(CONTINUO))
def test_environment_names_are_settings(svc: str) -> None:
    known = _env_names(_settings_for(CONTINUO[svc]))
    unknown = set(_env(CONTINUO[svc])) - known
    assert not unknown, f"{svc}: not read by its settings: {sorted(unknown)}"


def test_dockerfile_env_names_are_settings() -> None:
    known = _env_names(CommonSettings).union(
        *(_env_names(_settings_class(m)) for m in _service_modules())
    )
    env = _dockerfile_env()
    assert env["CONTINUO_ENV"] == "production" and env["CONTINUO_LOG_FORMAT"] == "json"
    unknown = set(env) - known - NON_SETTINGS_ENV
    assert not unknown, f"Dockerfile ENV not read by any settings: {sorted(unknown)}"


@pytest.mark.parametrize("svc", sorted(CONTINUO))
def test_settings_load_in_the_container(svc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image ENV overlaid with the service's environment: valid production settings, listening on
    every interface, at the port its health check and published port use."""
    spec = CONTINUO[svc]
    cls = _settings_for(spec)
    for name in _env_names(cls):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**_dockerfile_env(), **_env(spec)}.items():
        if name not in NON_SETTINGS_ENV:
            monkeypatch.setenv(name, value)
    settings = cls()  # type: ignore[call-arg]  # pydantic-settings reads the environment
    assert settings.environment == "production"
    assert settings.store_url.startswith("postgresql+asyncpg://")
    if cls is CommonSettings:
        return  # the one-shot migration needs the store only
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert str(settings.artifacts_dir) == "/artifacts"
    assert settings.host == "0.0.0.0", f"{svc} would bind {settings.host}, unreachable"
    assert ["artifacts:/artifacts"] == spec["volumes"]
    health = " ".join(spec["healthcheck"]["test"])
    match = HEALTH_URL.search(health)
    assert match, health
    assert int(match.group(1)) == settings.port, f"{svc} health check port"
    assert [f"{settings.port}:{settings.port}"] == spec["ports"]
    if hasattr(settings, "database_url"):
        assert settings.database_url.startswith("postgresql+asyncpg://")
        assert settings.database_url.rsplit("/", 1)[1] != settings.store_url.rsplit("/", 1)[1]


@pytest.mark.parametrize("svc", sorted(CONTINUO))
def test_continuo_containers_build_from_the_root_dockerfile(svc: str) -> None:
    build = CONTINUO[svc]["build"]
    assert (COMPOSE / build["context"]).resolve() == REPO
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize("svc", sorted(set(CONTINUO) - {"migrate"}))
def test_services_wait_for_migration_and_broker(svc: str) -> None:
    deps = CONTINUO[svc]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["kafka"]["condition"] == "service_healthy"


def test_dependencies_exist_and_have_health_checks() -> None:
    services = _all_services()
    for svc, spec in services.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert dep in services, f"{svc} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{svc} waits on {dep}'s health"


def test_images_are_pinned() -> None:
    images = [spec["image"] for spec in _all_services().values()]
    images += re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"unpinned image {image}"


def test_mounted_files_exist() -> None:
    for name in ALL_FILES:
        for svc, spec in (_load(name).get("services") or {}).items():
            for volume in spec.get("volumes") or []:
                source = volume.split(":", 1)[0]
                if source.startswith("."):
                    assert (COMPOSE / source).exists(), f"{svc}: {source}"


def test_governance_database_is_created_on_first_start() -> None:
    url = _env(CONTINUO["governance"])["GOVERNANCE_DATABASE_URL"]
    database = url.rsplit("/", 1)[1]
    sql = (COMPOSE / "postgres-init.sql").read_text()
    assert re.search(rf"CREATE DATABASE {database}\b", sql)
    pg = _all_services()["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/" in url
