"""Session labels and tags end to end: header → row → /metrics.json → dashboard → export."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ViewportSize

from proxy.export import NO_MATCH
from proxy.export import main as export_main
from proxy.tags import parse_tags
from tests.conftest import ProxyFactory, anthropic_client, openai_client
from tests.fake_upstream import FakeUpstream

LABEL = "newcomer-openai-1"
HELLO = [{"role": "user", "content": "Hello"}]
LAPTOP: ViewportSize = {"width": 1440, "height": 900}
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def metrics(http: aiohttp.ClientSession, url: str, count: int, query: str = "") -> dict[str, Any]:
    """/metrics.json once the writer has committed `count` requests in all."""
    deadline = time.monotonic() + 10
    while True:
        async with http.get(f"{url}/metrics.json") as response:
            everything = await response.json()
        if everything["totals"]["requests"] >= count or time.monotonic() > deadline:
            assert everything["totals"]["requests"] == count
            break
        await asyncio.sleep(0.1)
    async with http.get(f"{url}/metrics.json{query}") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def export(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    out = tmp_path / "export.json"
    code = export_main(
        ["--database", str(tmp_path / "vidurai.db"), "--format", "json", "-o", str(out), *args]
    )
    return code, json.loads(out.read_text(encoding="utf-8"))


async def test_label_and_tags_from_header_to_export(
    make_proxy: ProxyFactory,
    fake_upstream: FakeUpstream,
    http: aiohttp.ClientSession,
    browser: Browser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = await make_proxy()
    payments = {"X-Vidurai-Session": LABEL, "X-Vidurai-Tags": "team=payments, user=alice@example.com"}
    async with anthropic_client(url, default_headers=payments) as claude:
        await claude.messages.create(model="claude-sonnet-5", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
        await claude.messages.create(model="claude-sonnet-5", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
    for name in ("x-vidurai-session", "x-vidurai-tags"):
        assert name not in fake_upstream.last().headers  # never forwarded
    async with openai_client(url + "/v1", default_headers={"X-Vidurai-Tags": "team=search"}) as gpt:
        await gpt.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]

    # The rows: the label on the session, the tags on each request.
    everything = await metrics(http, url, 3)
    with sqlite3.connect(tmp_path / "vidurai.db") as conn:
        labels = conn.execute("SELECT label FROM sessions WHERE label IS NOT NULL").fetchall()
        tags = conn.execute("SELECT tags FROM requests ORDER BY created_at").fetchall()
    assert labels == [(LABEL,)]
    assert [json.loads(t) for (t,) in tags] == [
        {"team": "payments", "user": "alice@example.com"},
        {"team": "payments", "user": "alice@example.com"},
        {"team": "search"},
    ]

    # /metrics.json: by tag, the label on the session, and both as filters.
    by_tag = {t["tag"]: t for t in everything["by_tag"]}
    assert set(by_tag) == {"team=payments", "user=alice@example.com", "team=search"}
    assert by_tag["team=payments"]["requests"] == 2 and by_tag["team=search"]["requests"] == 1
    assert by_tag["team=payments"]["cost_usd"] > 0 and by_tag["team=payments"]["input_tokens"] > 0
    (labelled,) = [s for s in everything["top_sessions"] if s["label"] == LABEL]
    assert labelled["requests"] == 2
    named = await metrics(http, url, 3, f"?session={LABEL}")
    assert named["totals"]["requests"] == 2 and named["totals"]["sessions"] == 1
    assert named["filter"] == {"session": LABEL, "tag": None}
    assert (await metrics(http, url, 3, f"?session={labelled['id']}"))["totals"]["requests"] == 2
    searched = await metrics(http, url, 3, "?tag=team=search")
    assert searched["totals"]["requests"] == 1
    assert searched["totals"]["cost_usd"] == by_tag["team=search"]["cost_usd"]
    async with http.get(f"{url}/metrics.json?tag=team") as response:
        assert response.status == 400 and "key=value" in (await response.json())["error"]

    # The dashboard shows the same breakdown and the session's name.
    page = await browser.new_page(viewport=LAPTOP)
    try:
        await page.goto(f"{url}/dashboard")
        await page.wait_for_selector('#by-tag tr[data-tag="team=payments"]')
        cells = await page.eval_on_selector_all(
            '#by-tag tr[data-tag="team=payments"] td', "tds => tds.map(td => td.textContent)"
        )
        assert cells[0] == "team=payments" and cells[1] == "2"
        assert await page.locator("#by-tag tbody tr").count() == 3
        shown = await page.eval_on_selector_all(
            '#sessions td[data-col="session"]', "tds => tds.map(t => t.textContent)"
        )
        assert LABEL in shown
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-tags.png"), full_page=True)
    finally:
        await page.close()

    # export: by label, by id, by tag; a name that matches nothing says so and exits NO_MATCH.
    code, rows = export(tmp_path, "--session", LABEL)
    assert code == 0 and len(rows) == 2 and {r["session_id"] for r in rows} == {labelled["id"]}
    code, rows = export(tmp_path, "--tag", "team=payments")
    assert code == 0 and len(rows) == 2
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(by_tag["team=payments"]["cost_usd"])
    code, rows = export(tmp_path, "--sessions", "--session", LABEL)
    assert code == 0 and [r["label"] for r in rows] == [LABEL]
    capsys.readouterr()
    code, rows = export(tmp_path, "--tag", "team=nobody")
    assert code == NO_MATCH and rows == []
    assert "no requests match --tag team=nobody" in capsys.readouterr().err


@pytest.mark.parametrize(
    "header",
    [
        "team",
        "team=",
        "=payments",
        "team=pay ments",
        "team=a, team=b",
        ",".join(f"k{n}=v" for n in range(17)),
    ],
)
async def test_malformed_tags_are_refused_in_the_provider_shape_and_not_forwarded(
    proxy_url: str, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, header: str
) -> None:
    headers = {
        "x-api-key": "sk-ant-test-0123456789",
        "anthropic-version": "2023-06-01",
        "X-Vidurai-Tags": header,
    }
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": HELLO}
    async with http.post(proxy_url + "/v1/messages", json=body, headers=headers) as response:
        assert response.status == 400
        error = await response.json()
    assert error["type"] == "error" and "X-Vidurai-Tags" in error["error"]["message"]
    assert fake_upstream.requests == []


def test_tag_parsing_bounds() -> None:
    assert parse_tags([]) is None and parse_tags(["  "]) is None
    assert parse_tags(["team=payments", "user=alice"]) == {"team": "payments", "user": "alice"}
    with pytest.raises(ValueError, match="longer than"):
        parse_tags(["k=" + "v" * 1100])
