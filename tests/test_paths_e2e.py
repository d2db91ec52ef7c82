"""`python -m proxy` started from another directory: the config file decides where its files are."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import aiohttp

from tests.conftest import OPENAI_KEY
from tests.fake_upstream import FakeUpstream
from tests.process import proxy_env, run_to_exit, running

COMMAND = [sys.executable, "-m", "proxy"]


async def test_relative_database_lives_beside_the_config_file(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    instance, elsewhere = tmp_path / "instance", tmp_path / "elsewhere"
    instance.mkdir()
    elsewhere.mkdir()
    ini = instance / "team.ini"
    ini.write_text(
        f"[storage]\ndatabase = team.db\n\n[upstream]\nopenai_base_url = {fake_upstream.openai_base_url}\n"
    )
    env = proxy_env(VIDURAI_CONFIG="../instance/team.ini", VIDURAI_SERVER_PORT="0", VIDURAI_UI_TERMINAL="off")
    async with running(COMMAND, elsewhere, env) as proxy:
        assert proxy.listening["config"] == str(ini)
        assert proxy.listening["database"] == str(instance / "team.db")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {OPENAI_KEY}"}) as http:
            async with http.post(proxy.url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200
        assert await proxy.stop() == 0
    with sqlite3.connect(instance / "team.db") as conn:
        assert conn.execute("SELECT endpoint, status FROM requests").fetchall() == [("chat_completions", 200)]
    assert not (elsewhere / "vidurai.db").exists()  # no stray empty database where it was started


async def test_startup_line_says_defaults_when_no_file_is_read(tmp_path: Path) -> None:
    env = proxy_env(VIDURAI_SERVER_PORT="0", VIDURAI_UI_TERMINAL="off", VIDURAI_COMPRESSION_ENABLED="false")
    async with running(COMMAND, tmp_path, env) as proxy:
        assert proxy.listening["config"] == "defaults"
        assert proxy.listening["database"] == str(tmp_path / "vidurai.db")
        assert await proxy.stop() == 0


async def test_mistyped_variable_stops_startup_with_one_line(tmp_path: Path) -> None:
    result = await run_to_exit(COMMAND, tmp_path, proxy_env(VIDURAI_SERVER_PROT="9001"))
    assert result.returncode == 2
    assert result.stderr == (
        "vidurai-proxy: configuration error: VIDURAI_SERVER_PROT names no setting; "
        "did you mean VIDURAI_SERVER_PORT ([server] port)?\n"
    )
    assert not (tmp_path / "vidurai.db").exists()
