"""Unit: the compose file, Dockerfile and console script agree with the code."""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import yaml

from crsmon.cli import main

ROOT = Path(__file__).parents[2]


def test_compose_services_run_real_cli_commands() -> None:
    """Each crsmon service in docker-compose.yml runs a command the CLI has."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    built = {n: s for n, s in compose["services"].items() if s.get("build")}
    assert built
    for name, service in built.items():
        command = main.commands[service["command"][0]]
        sub = service["command"][1] if len(service["command"]) > 1 else ""
        if isinstance(command, click.Group):
            assert sub in command.commands, name
    for service in compose["services"].values():
        if "image" in service:
            assert "healthcheck" in service


def test_dockerfile_copies_paths_that_exist() -> None:
    """Every path the Dockerfile copies is in the repository."""
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_console_script_is_crsmon_main() -> None:
    """pyproject declares the `crsmon` console script as crsmon.cli:main."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["crsmon"] == "crsmon.cli:main"
    assert project["project"]["requires-python"] == ">=3.11"
