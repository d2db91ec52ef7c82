"""The built wheel, installed into a fresh venv, runs as `vidurai-proxy` from an unrelated directory."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ANTHROPIC_KEY
from tests.fake_upstream import FakeUpstream
from tests.process import proxy_env, run_to_exit, running

REPO = Path(__file__).resolve().parent.parent
# What a wheel is built from; a copy, so a stale build/ or egg-info in the checkout cannot leak in.
SOURCES = ("proxy", "setup.cfg", "pyproject.toml", "README.md")


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the built wheel (a real, non-editable install); its bin/ directory.

    The wheel's dependencies are not downloaded again: the venv sees the project's .venv
    site-packages through a .pth line (which, unlike a site directory, runs none of its .pth
    files, so the checkout's editable install stays invisible), and `pip check` proves they
    satisfy the wheel's requirements.
    """
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip"]
    build_log = _run(*pip, "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                     "-w", work / "dist", source)  # fmt: skip
    assert "absent from the `packages` configuration" not in build_log
    assert "BuildBackendWarning" not in build_log and "SetuptoolsDeprecationWarning" not in build_log
    (wheel,) = (work / "dist").glob("vidurai_proxy-*.whl")

    target = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", target)
    python = target / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (purelib / "reused-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    _run(*pip, "--python", python, "check")
    return target / "bin"


def test_wheel_holds_the_package_data_and_the_command(venv: Path, tmp_path: Path) -> None:
    code = (
        "import proxy, importlib.metadata as m;"
        "from proxy.storage.migrations import load_migrations, migrations_dir;"
        "print(proxy.__file__);"
        "print('|'.join(load_migrations(migrations_dir(e))[-1].name for e in ('sqlite', 'postgresql')));"
        "print(m.entry_points(group='console_scripts')['vidurai-proxy'].value)"
    )
    location, first, entry = _run(venv / "python", "-c", code, cwd=tmp_path).split()
    assert location.startswith(str(venv.parent)) and "site-packages" in location
    sqlite_last, postgresql_last = first.split("|")  # both engines' migrations are in the wheel
    assert sqlite_last == postgresql_last and sqlite_last.endswith(".sql")
    assert entry == "proxy.__main__:main"
    site = Path(location).parent
    assert {p.name for p in (site / "static").iterdir()} >= {
        "dashboard.html",
        "dashboard.js",
        "dashboard.css",
    }
    assert "vidurai-proxy export" in _run(venv / "vidurai-proxy", "export", "--help", cwd=tmp_path)
    assert "usage: vidurai-proxy" in _run(venv / "python", "-m", "proxy", "--help", cwd=tmp_path)


async def test_installed_command_proxies_and_records_from_any_directory(
    venv: Path, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = proxy_env(
        VIDURAI_SERVER_PORT="0",
        VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL=fake_upstream.anthropic_base_url,
        VIDURAI_UI_TERMINAL="off",
    )
    async with running([str(venv / "vidurai-proxy")], elsewhere, env) as proxy:
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        async with aiohttp.ClientSession() as http:
            async with http.post(proxy.url + "/v1/messages", json=body, headers=headers) as response:
                assert response.status == 200
                assert (await response.json())["type"] == "message"
            async with http.get(proxy.url + "/dashboard") as response:
                assert response.status == 200
        assert await proxy.stop() == 0

    database = elsewhere / "vidurai.db"
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT endpoint, status, model FROM requests").fetchall()
    assert rows == [("messages", 200, "claude-sonnet-4-5")]
    exported = await run_to_exit([str(venv / "vidurai-proxy"), "export", "--format", "csv"], elsewhere, env)
    assert exported.returncode == 0, exported.stderr
    assert "claude-sonnet-4-5" in exported.stdout
