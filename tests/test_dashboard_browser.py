"""GET /dashboard in a real headless Chromium: after traffic it shows what /metrics.json says."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from playwright.async_api import Browser, Page, ViewportSize

from proxy.records import RequestRecord, SessionRecord, Usage
from tests.conftest import ProxyFactory, anthropic_client, openai_client
from tests.databases import write_db

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LAPTOP: ViewportSize = {"width": 1440, "height": 900}
RECENT_ROWS = 25  # rows of the latest-requests table (dashboard.js)


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def wait_for_requests(http: aiohttp.ClientSession, base: str, count: int) -> dict[str, Any]:
    """/metrics.json once the writer has committed `count` requests."""
    deadline = time.monotonic() + 10
    while True:
        metrics = await get_json(http, f"{base}/metrics.json")
        if metrics["totals"]["requests"] >= count or time.monotonic() > deadline:
            assert metrics["totals"]["requests"] == count
            return metrics
        await asyncio.sleep(0.1)


async def send_traffic(base: str) -> int:
    """Both providers, JSON and streaming, a long conversation, an unpriced model and an error."""
    long_history: list[dict[str, Any]] = []
    for turn in range(14):
        long_history.append(
            {
                "role": "user" if turn % 2 == 0 else "assistant",
                "content": f"Turn {turn}: " + "notes about the deployment plan " * 60,
            }
        )
    long_history.append({"role": "user", "content": "Summarise the plan in one line."})
    async with anthropic_client(base) as claude, openai_client(base + "/v1") as gpt:
        await claude.messages.create(
            model="claude-sonnet-5", max_tokens=64, messages=[{"role": "user", "content": "Hello there"}]
        )
        async with claude.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Stream please"}]
        ) as s:
            await s.get_final_message()
        await claude.messages.create(model="claude-sonnet-5", max_tokens=64, messages=long_history)  # type: ignore[arg-type]
        await claude.messages.create(
            model="claude-fake-1",
            max_tokens=64,  # no price: unpriced
            messages=[{"role": "user", "content": "Unknown model"}],
        )
        await gpt.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "Hi"}])
        stream = await gpt.chat.completions.create(
            model="gpt-5.4-mini", stream=True, messages=[{"role": "user", "content": "Stream it"}]
        )
        async for _ in stream:
            pass
        with pytest.raises(Exception, match="429"):
            await gpt.chat.completions.create(model="fake-429", messages=[{"role": "user", "content": "x"}])
    return 7


def parse(text: str) -> float | None:
    """A number as the page shows it: 1,234 / $0.0123 / 12.5% / 850 ms / 1.25 s / – (none)."""
    text = text.strip()
    if text == "–":
        return None
    scale = 1000.0 if text.endswith(" s") else 1.0
    return float(re.sub(r"[$,%]| m?s$", "", text)) * scale


def close_enough(text: str, value: Any, key: str) -> bool:
    """The shown text rounds `value` the way the page formats `key`."""
    shown = parse(text)
    if value is None or shown is None:
        return shown is None and value is None
    if key.endswith("_usd"):
        tolerance = 0.00005 if abs(value) < 1 else 0.005
    elif key.endswith("_pct"):
        tolerance = 0.05
    elif key.endswith("_ms"):
        tolerance = 0.5 if value < 1000 else 5
    else:
        tolerance = 0.5
    return bool(abs(shown - value) <= tolerance + 1e-9)


async def cells(page: Page, selector: str) -> dict[str, str]:
    """`data-col` -> text of the cells of the one row `selector` matches."""
    pairs = await page.eval_on_selector_all(
        f"{selector} td[data-col]", "tds => tds.map(td => [td.dataset.col, td.textContent])"
    )
    return dict(pairs)


async def assert_page_matches(page: Page, metrics: dict[str, Any]) -> None:
    totals = metrics["totals"]
    shown = await page.eval_on_selector_all(
        "[data-total]", "nodes => nodes.map(n => [n.dataset.total, n.textContent])"
    )
    assert len(shown) == 16
    for key, text in shown:
        assert close_enough(text, totals[key], key), (key, text, totals[key])

    aggregates = (
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "tokens_saved",
        "savings_pct",
        "cost_usd",
        "cost_saved_usd",
    )
    assert await page.locator("#by-provider tbody tr").count() == len(metrics["by_provider"])
    for item in metrics["by_provider"]:
        row = await cells(page, f'#by-provider tr[data-provider="{item["provider"]}"]')
        for key in (*aggregates, "avg_duration_ms"):
            assert close_enough(row[key], item[key], key), (item["provider"], key, row[key], item[key])
    assert await page.locator("#by-model tbody tr").count() == len(metrics["by_model"])
    for item in metrics["by_model"]:
        selector = f'#by-model tr[data-provider="{item["provider"]}"][data-model="{item["model"]}"]'
        row = await cells(page, selector)
        for key in (*aggregates, "unpriced_requests"):
            assert close_enough(row[key], item[key], key), (item["model"], key, row[key], item[key])

    assert await page.locator("#sessions tbody tr").count() == len(metrics["top_sessions"])
    for session in metrics["top_sessions"]:
        row = await cells(page, f'#sessions tr[data-id="{session["id"]}"]')
        assert row["state"] == ("active" if session["expired_at"] is None else "expired")
        for key in (
            "requests",
            "messages",
            "input_tokens",
            "tokens_saved",
            "savings_pct",
            "cost_usd",
            "cost_saved_usd",
            "summary_calls",
        ):
            assert close_enough(row[key], session[key], key), (session["id"], key, row[key])
        if session["summary_calls"]:  # the summary calls' cost, next to the savings it came off
            assert close_enough(row["summary_cost_usd"], session["summary_cost_usd"], "summary_cost_usd")

    recent = metrics["recent_requests"][:RECENT_ROWS]
    shown_ids = await page.eval_on_selector_all("#requests tbody tr", "trs => trs.map(tr => tr.dataset.id)")
    assert shown_ids == [request["id"] for request in recent]  # newest first
    for request in recent:
        row = await cells(page, f'#requests tr[data-id="{request["id"]}"]')
        assert row["model"] == (request["model"] or "–")
        assert row["status"] == str(request["status"])
        assert row["error"] == (request["error"] or "")
        for key in ("tokens_saved", "cost_usd", "duration_ms", "overhead_ms"):
            assert close_enough(row[key], request[key], key), (request["id"], key, row[key])
        if request["tokens_original_est"] is not None:
            before, after = row["tokens_original_est"].split(" → ")
            assert (parse(before), parse(after)) == (
                request["tokens_original_est"],
                request["tokens_forwarded_est"],
            )

    # One stacked bar per minute that had input tokens or cost. The page read its metrics after
    # `metrics` (no traffic since), so its hour may have slid on by a minute with nothing in it.
    generated_at = float(await page.eval_on_selector("body", "b => b.dataset.generatedAt"))
    assert generated_at >= metrics["generated_at"]
    first_minute = int(generated_at // 60) * 60 - 59 * 60
    for chart, keys in (
        ("chart-tokens", ("tokens_forwarded_est", "tokens_saved")),
        ("chart-cost", ("cost_usd", "cost_saved_usd")),
    ):
        busy = [
            p["minute"]
            for p in metrics["per_minute"]
            if any(p[k] for k in keys) and p["minute"] >= first_minute
        ]
        drawn = await page.eval_on_selector_all(
            f"#{chart} g.bar", "gs => gs.map(g => Number(g.dataset.minute))"
        )
        assert drawn == busy, chart


async def assert_routed(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(f"{base}/dashboard") as response:
        if response.content_type != "text/html":
            pytest.fail(
                f"GET /dashboard answered {response.status} {response.content_type}: "
                "create_app must add proxy.dashboard.routes()"
            )


async def open_dashboard(browser: Browser, base: str) -> tuple[Page, list[str]]:
    """The page loaded and drawn once; the returned list collects console errors and stray requests."""
    page = await browser.new_page(viewport=LAPTOP)
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # Nothing may leave for the internet: every request goes to the proxy itself.
    page.on(
        "request",
        lambda req: (
            None
            if req.url.startswith(base + "/") or req.url.startswith("data:")
            else problems.append(f"request to {req.url}")
        ),
    )
    await page.goto(f"{base}/dashboard?refresh=1")
    await page.wait_for_selector("body[data-generated-at]")
    await page.wait_for_selector('#health[data-state="ok"]')
    return page, problems


async def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    """A PNG under artifacts/ (gitignored), kept for whoever looks at a test run."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def test_dashboard_shows_what_metrics_json_has(
    browser: Browser, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    base = await make_proxy()
    await assert_routed(http, base)
    count = await send_traffic(base)
    metrics = await wait_for_requests(http, base, count)
    assert metrics["totals"]["errors"] == 1 and metrics["totals"]["unpriced_requests"] == 1

    page, problems = await open_dashboard(browser, base)
    await assert_page_matches(page, metrics)
    assert "ok · v" in (await page.text_content("#health") or "")
    assert not await page.is_visible("#problem")
    # A later request shows up on the next refresh, without reloading the page.
    async with anthropic_client(base) as claude:
        await claude.messages.create(
            model="claude-sonnet-5", max_tokens=8, messages=[{"role": "user", "content": "One more"}]
        )
    metrics = await wait_for_requests(http, base, count + 1)
    await page.wait_for_function(
        "t => Number(document.body.dataset.generatedAt) >= t", arg=metrics["generated_at"]
    )
    await assert_page_matches(page, metrics)
    await screenshot(page, "dashboard.png")
    assert problems == []
    await page.close()


def history(now: float) -> tuple[list[SessionRecord], list[RequestRecord]]:
    """An hour of plausible traffic, so the charts have something to show."""
    models = [
        ("anthropic", "claude-sonnet-5", 2.0, 10.0),
        ("anthropic", "claude-haiku-4-5", 1.0, 5.0),
        ("openai", "gpt-5.4", 2.5, 15.0),
        ("openai", "gpt-5.4-mini", 0.75, 4.5),
    ]
    digest = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(7)]
    sessions = [
        SessionRecord(
            id=digest[n][:24],
            tenant=digest[n % 3][40:56],
            created_at=now - 3600,
            last_seen_at=now - 60 * n,
            messages=10 + 6 * n,
            expired_at=None if n < 5 else now - 120,
        )
        for n in range(7)
    ]
    requests = []
    for i in range(150):
        provider, model, price_in, price_out = models[i % 4]
        session = sessions[i % 7]
        original = 2000 + (i * 397) % 9000 + i * 40
        forwarded = original if original < 4000 else int(original * (0.35 + (i % 5) * 0.05))
        saved = original - forwarded
        output = 120 + (i * 53) % 600
        cost = (forwarded * price_in + output * price_out) / 1e6
        failed = i % 37 == 5 or i == 146
        summary = i % 25 == 3  # a model-written chunk summary: its cost comes off the savings
        requests.append(
            RequestRecord(
                id=f"hist-{i:03d}",
                created_at=now - 3540 + i * 23.5,
                provider=provider,
                endpoint="summary"
                if summary
                else "messages"
                if provider == "anthropic"
                else "chat_completions",
                method="POST",
                path="/v1/messages" if provider == "anthropic" else "/v1/chat/completions",
                session_id=session.id,
                tenant=session.tenant,
                model=model,
                stream=i % 3 != 0,
                status=529 if failed else 200,
                duration_ms=400 + (i * 131) % 2500,
                ttfb_ms=250.0,
                overhead_ms=1.5 + (i % 7) * 0.4,
                usage=Usage() if failed else Usage(forwarded, output, 0, 0),
                tokens_original_est=original,
                tokens_forwarded_est=forwarded,
                tokens_saved=None if summary else saved,
                cost_usd=None if failed else round(cost, 6),
                cost_saved_usd=None if failed else round(-cost if summary else saved * price_in / 1e6, 6),
                error="upstream overloaded_error" if failed else None,
            )
        )
    return sessions, requests


async def test_dashboard_with_an_hour_of_history(
    browser: Browser, make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    database = await write_db(tmp_path / "history.db", *history(time.time()))
    base = await make_proxy(storage_database=database)
    await assert_routed(http, base)
    metrics = await wait_for_requests(http, base, 150)
    assert any(s["summary_calls"] for s in metrics["top_sessions"])
    page, problems = await open_dashboard(browser, base)
    await assert_page_matches(page, metrics)
    assert await page.locator("#chart-tokens g.bar").count() >= 55
    await screenshot(page, "dashboard-history.png", full_page=False)  # the README's picture
    await screenshot(page, "dashboard-history-full.png")
    assert problems == []
    await page.close()


async def test_dashboard_files_are_served_from_the_package(
    proxy_url: str, http: aiohttp.ClientSession
) -> None:
    await assert_routed(http, proxy_url)
    async with http.get(f"{proxy_url}/dashboard") as response:
        assert response.status == 200 and response.content_type == "text/html"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    # Every script, stylesheet and link of the page stays on the proxy (no CDN).
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references and all(not re.match(r"^[a-z]+://|^//", ref) for ref in references), references
    for ref in (r for r in references if r.startswith("dashboard/static/")):
        async with http.get(f"{proxy_url}/{ref}") as response:
            assert response.status == 200, ref
            assert response.content_type in ("text/css", "text/javascript"), ref
    for bad in ("nothing.js", "..%2Fdashboard.py", "dashboard.html", ".hidden.css"):
        async with http.get(f"{proxy_url}/dashboard/static/{bad}") as response:
            assert response.status == 404, bad
    async with http.get(f"{proxy_url}/dashboard/", allow_redirects=False) as response:
        assert response.status == 301


async def test_locked_dashboard_login_unlocked_logout(browser: Browser, make_proxy: ProxyFactory) -> None:
    """With [server] admin_token: locked, the login form, the dashboard with its data, logged out."""
    token = "adm-browser-7d3e91c2"
    base = await make_proxy(server_admin_token=token)
    page = await browser.new_page(viewport=LAPTOP)
    try:
        await page.goto(f"{base}/dashboard")
        assert page.url == f"{base}/dashboard/login"  # locked: the browser is sent to the form
        assert (await page.request.get(f"{base}/metrics.json")).status == 401  # the browser's cookies
        await page.fill('input[name="token"]', "not-the-token")
        await page.click('button[type="submit"]')
        assert "not the admin token" in await page.text_content("main")

        await page.fill('input[name="token"]', token)
        await page.click('button[type="submit"]')
        await page.wait_for_url(f"{base}/dashboard")
        await page.wait_for_selector("body[data-generated-at]")  # metrics.json answered the page
        assert await page.is_visible("#logout")
        cookies = await page.context.cookies()
        (cookie,) = [c for c in cookies if c["name"] == "vidurai_admin"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        assert (await page.request.get(f"{base}/metrics.json")).status == 200
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-unlocked.png"))

        await page.click("#logout button")
        await page.wait_for_url(f"{base}/dashboard/login")
        assert [c for c in await page.context.cookies() if c["name"] == "vidurai_admin"] == []
        assert (await page.request.get(f"{base}/metrics.json")).status == 401
        await page.goto(f"{base}/dashboard")
        assert page.url == f"{base}/dashboard/login"  # locked again
    finally:
        await page.close()


async def test_dashboard_shows_limits_used_against_their_values(
    browser: Browser, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    # A budget (a UTC day) refuses the second request; a per-minute limit could roll over between them.
    base = await make_proxy(limits_requests_per_minute=5, limits_budget_usd_per_day="0.0001")
    message = [{"role": "user", "content": "Hi"}]
    async with anthropic_client(base) as claude:
        await claude.messages.create(model="claude-sonnet-5", max_tokens=16, messages=message)
        with pytest.raises(anthropic.RateLimitError, match="budget_usd_per_day"):
            await claude.messages.create(model="claude-sonnet-5", max_tokens=16, messages=message)
    await wait_for_requests(http, base, 2)
    page, problems = await open_dashboard(browser, base)
    row = page.locator("#limits tbody tr")
    assert await row.count() == 1
    cells = await row.locator("td").all_inner_texts()
    assert re.fullmatch(r"[01] / 5", cells[1]) and cells[3].endswith("/ $0.0001")
    assert cells[5] == "budget_usd_per_day 1"
    assert problems == []
    await page.close()
