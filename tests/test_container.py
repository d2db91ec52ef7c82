"""The container image, as far as it can be checked without a container engine.

The Dockerfile is parsed (base image pinned, non-root user, health check, volume); the image's
entrypoint then runs as a process with exactly the environment the Dockerfile sets, and its
health check command is run against it.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp
import attrs
import pytest

from proxy.config import ConfigError, load_config
from tests.conftest import OPENAI_KEY
from tests.fake_upstream import FakeUpstream
from tests.process import proxy_env, run_to_exit, running

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the project's venv: its vidurai-proxy is the wheel's entry point


@attrs.frozen
class Instruction:
    name: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            name, _, args = current.strip().partition(" ")
            logical.append(Instruction(name.upper(), args.strip()))
        current = ""
    return logical


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each FROM stage, with ARG defaults given before the first FROM applied."""
    defaults = {}
    result: list[list[Instruction]] = []
    for item in parsed:
        if item.name == "ARG" and not result:
            key, _, value = item.args.partition("=")
            defaults[key] = value
            continue
        if item.name == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], item.args)
            result.append([Instruction("FROM", image)])
        else:
            result[-1].append(item)
    return result


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for item in stage:
        if item.name == "ENV":
            for pair in shlex.split(item.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(item: Instruction) -> list[str]:
    args = item.args.split("CMD", 1)[1] if item.name == "HEALTHCHECK" else item.args
    assert args.strip().startswith("["), f"{item.name} must use the exec form (signals reach the proxy)"
    words: list[str] = json.loads(args.strip())
    return words


DOCKERFILE = stages(instructions((REPO / "Dockerfile").read_text(encoding="utf-8")))
FINAL = DOCKERFILE[-1]


def final(name: str) -> list[Instruction]:
    return [item for item in FINAL if item.name == name]


def test_multi_stage_on_a_base_image_pinned_by_version() -> None:
    assert len(DOCKERFILE) >= 2
    for stage in DOCKERFILE:
        image = stage[0].args.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), f"{image}: pin the full version"
    # The runtime stage takes the installed venv from the build stage, not the source tree.
    copies = final("COPY")
    assert copies and all(item.args.startswith("--from=build ") for item in copies)
    assert not final("RUN") or all("pip" not in item.args for item in final("RUN"))


def test_runs_as_a_non_root_user_with_the_database_on_a_volume() -> None:
    (user,) = final("USER")
    assert user.args not in ("root", "0") and not user.args.startswith("0:")
    assert any("useradd" in item.args and user.args in item.args for item in final("RUN"))
    (volume,) = final("VOLUME")
    volumes = json.loads(volume.args)
    database = env_of(FINAL)["VIDURAI_STORAGE_DATABASE"]
    assert any(database.startswith(v.rstrip("/") + "/") for v in volumes)


def test_listens_on_all_interfaces_only_through_the_documented_variable() -> None:
    env = env_of(FINAL)
    assert env["VIDURAI_SERVER_HOST"] == "0.0.0.0"
    # Every VIDURAI_* variable of the image is a setting (a typo would stop the container).
    config = load_config(
        path=REPO / "absent.ini", env={k: v for k, v in env.items() if k.startswith("VIDURAI_")}
    )
    assert config.server.host == "0.0.0.0" and config.ui.terminal == "off"
    assert "VIDURAI_SERVER_HOST" in (REPO / "README.md").read_text(encoding="utf-8")


def test_health_check_and_entrypoint() -> None:
    (check,) = final("HEALTHCHECK")
    assert exec_form(check) == ["vidurai-proxy", "health"]
    (entrypoint,) = final("ENTRYPOINT")
    assert exec_form(entrypoint) == ["vidurai-proxy"]
    (stop,) = final("STOPSIGNAL")
    assert stop.args == "SIGTERM"


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in lines  # everything else stays out of the build context (.venv, databases, .git)
    let_in = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = [s for item in DOCKERFILE[0] if item.name == "COPY" for s in item.args.split()[:-1]]
    assert copied and {source.rstrip("/") for source in copied} <= let_in


def test_compose_runs_the_image_on_loopback_with_the_volume() -> None:
    compose = (REPO / "compose.yaml").read_text(encoding="utf-8")
    assert re.search(r"^\s+build: \.$", compose, re.M)
    assert '- "127.0.0.1:8080:8080"' in compose
    (volume,) = json.loads(final("VOLUME")[0].args)
    assert re.search(rf"^\s+- \w+:{re.escape(volume)}$", compose, re.M)
    assert "VIDURAI_SERVER_ADMIN_TOKEN" in compose


def unit_section(text: str, name: str) -> list[tuple[str, str]]:
    """The `key=value` lines of one section of a systemd unit, in order (keys may repeat)."""
    section, found = "", []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")) and section == name:
            key, _, value = line.partition("=")
            found.append((key, value))
    return found


def test_systemd_unit_runs_the_console_command_with_valid_settings() -> None:
    lines = unit_section((REPO / "deploy" / "vidurai-proxy.service").read_text(encoding="utf-8"), "Service")
    service = dict(lines)
    assert service["ExecStart"].endswith("/bin/vidurai-proxy")
    assert service["KillSignal"] == "SIGTERM" and service["DynamicUser"] == "yes"
    variables = dict(value.split("=", 1) for key, value in lines if key == "Environment")
    settings = {k: v for k, v in variables.items() if k != "VIDURAI_CONFIG"}
    assert settings["VIDURAI_STORAGE_DATABASE"].startswith(f"/var/lib/{service['StateDirectory']}/")
    assert load_config(path=REPO / "absent.ini", env=settings).storage.database.startswith("/var/lib/")
    with pytest.raises(ConfigError, match="no such file"):  # the one that is not a setting is allowed
        load_config(env={"VIDURAI_CONFIG": variables["VIDURAI_CONFIG"]})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("admin_token", ["", "adm-container-9b2f"])
async def test_entrypoint_with_the_image_environment(
    tmp_path: Path, fake_upstream: FakeUpstream, admin_token: str
) -> None:
    """What `docker run` does: the ENTRYPOINT with the image's ENV, the volume, the HEALTHCHECK."""
    volume = tmp_path / "volume"
    volume.mkdir()
    image_env = {k: v for k, v in env_of(FINAL).items() if k.startswith("VIDURAI_") or k.startswith("PYTHON")}
    port = free_port()  # the health check must know it: not 0
    env = proxy_env(
        **{
            **image_env,
            # The two things a test cannot share with the image: the volume's path and the port.
            "VIDURAI_STORAGE_DATABASE": str(volume / Path(image_env["VIDURAI_STORAGE_DATABASE"]).name),
            "VIDURAI_SERVER_PORT": str(port),
            "VIDURAI_UPSTREAM_OPENAI_BASE_URL": fake_upstream.openai_base_url,
            **({"VIDURAI_SERVER_ADMIN_TOKEN": admin_token} if admin_token else {}),
        }
    )
    entrypoint = [str(BIN / exec_form(final("ENTRYPOINT")[0])[0])]
    health = exec_form(final("HEALTHCHECK")[0])
    health = [str(BIN / health[0]), *health[1:]]
    async with running(entrypoint, volume, env) as proxy:
        assert proxy.url == f"http://0.0.0.0:{port}"
        events = [json.loads(line).get("event") for line in proxy.log().splitlines() if line.startswith("{")]
        assert ("admin_unlocked" in events) is not bool(admin_token)
        checked = await run_to_exit(health, tmp_path, env)
        assert checked.returncode == 0, checked.stderr
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200
        assert await proxy.stop() == 0
    with sqlite3.connect(volume / "vidurai.db") as conn:
        assert conn.execute("SELECT status FROM requests").fetchall() == [(200,)]
    stopped = await run_to_exit(health, tmp_path, env)
    assert stopped.returncode == 1 and "vidurai-proxy health:" in stopped.stderr
