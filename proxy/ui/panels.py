"""The terminal dashboard's panels, drawn from a /metrics.json dict: pure functions, no I/O."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from proxy.ui.logbuffer import WarningLine

Metrics = Mapping[str, Any]
DASH = "–"
_FIXED = {"Time": 8, "Status": 6, "Latency": 7, "Reqs": 4, "Msgs": 4}


def fmt_int(value: Any) -> str:
    """1234567 -> "1,234,567"; None -> "–" (the web dashboard formats the same way)."""
    return DASH if value is None else f"{int(value):,}"


def fmt_usd(value: Any) -> str:
    """Dollars: four decimals below $1 (a request costs fractions of a cent), two above."""
    if value is None:
        return DASH
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def fmt_pct(value: Any) -> str:
    return DASH if value is None else f"{value:.1f}%"


def fmt_ms(value: Any) -> str:
    if value is None:
        return DASH
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def fmt_clock(unix: Any) -> str:
    return DASH if unix is None else time.strftime("%H:%M:%S", time.localtime(unix))


def failed(request: Mapping[str, Any]) -> bool:
    """What /metrics.json counts as an error: an error recorded or a status of 400 and above."""
    return bool(request.get("error")) or (request.get("status") or 0) >= 400


def header(url: str, db_path: str, log_file: str, error: str | None, updated: float | None) -> Text:
    text = Text.assemble(("Vidurai Proxy", "bold cyan"), "  ")
    if error:  # first, so a narrow terminal still shows it
        text.append(f"database unreadable: {error}  ", "bold red")
    if url:
        text.append(f"{url}  dashboard {url}/dashboard  ", "bold")
    text.append(f"db {db_path}", "dim")
    if log_file:
        text.append(f"  logs {log_file}", "dim")
    if updated is not None and not error:
        text.append(f"  updated {fmt_clock(updated)}", "dim")
    text.append("  Ctrl-C stops", "dim")
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def totals_panel(totals: Mapping[str, Any], per_row: int) -> Panel:
    """Twelve figures, `per_row` label-value pairs a row (4 on a wide terminal, 2 on a narrow one)."""
    errors = totals.get("errors", 0)
    cells: list[tuple[str, str | Text]] = [
        ("Requests", fmt_int(totals.get("requests", 0))),
        ("Errors", Text(fmt_int(errors), style="bold red" if errors else "bold")),
        (
            "Sessions active/all",
            f"{fmt_int(totals.get('active_sessions', 0))} / {fmt_int(totals.get('sessions', 0))}",
        ),
        ("Savings", Text(fmt_pct(totals.get("savings_pct", 0.0)), style="bold green")),
        ("Tokens in", fmt_int(totals.get("input_tokens", 0))),
        ("Tokens out", fmt_int(totals.get("output_tokens", 0))),
        (
            "Cache read/write",
            f"{fmt_int(totals.get('cache_read_tokens', 0))} / {fmt_int(totals.get('cache_write_tokens', 0))}",
        ),
        ("Tokens saved", Text(fmt_int(totals.get("tokens_saved", 0)), style="bold green")),
        ("Cost", fmt_usd(totals.get("cost_usd", 0.0))),
        ("Cost saved", Text(fmt_usd(totals.get("cost_saved_usd", 0.0)), style="bold green")),
        ("Avg latency", fmt_ms(totals.get("avg_duration_ms"))),
        ("Avg overhead", fmt_ms(totals.get("avg_overhead_ms"))),
    ]
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in range(per_row):
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(justify="right", style="bold", no_wrap=True)
    for start in range(0, len(cells), per_row):
        grid.add_row(*(part for cell in cells[start : start + per_row] for part in cell))
    return Panel(grid, title="Totals", title_align="left", box=box.ROUNDED)


def totals_height(per_row: int) -> int:
    """Rows the totals panel takes, borders included."""
    return -(-12 // per_row) + 2


def _table(*columns: tuple[str, str]) -> Table:
    table = Table(box=None, expand=True, padding=(0, 1), pad_edge=False, header_style="bold dim")
    for name, justify in columns:
        # Short fixed-width columns keep their width; the model and error texts give way.
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
            min_width=_FIXED.get(name),
        )
    return table


def sessions_panel(sessions: Iterable[Mapping[str, Any]], active: int, rows: int) -> Panel:
    table = _table(
        ("Tenant", "left"),
        ("Session", "left"),
        ("Reqs", "right"),
        ("Msgs", "right"),
        ("Saved", "right"),
        ("Savings", "right"),
    )
    live = [s for s in sessions if s.get("expired_at") is None]
    for session in live[: max(rows, 0)]:
        table.add_row(
            (session.get("tenant") or "")[:8],
            str(session.get("id") or "")[:10],
            fmt_int(session.get("requests")),
            fmt_int(session.get("messages")),
            Text(fmt_int(session.get("tokens_saved")), style="green"),
            fmt_pct(session.get("savings_pct")),
        )
    body: RenderableType = table if live else Text("no active session", style="dim")
    return Panel(body, title=f"Active sessions ({active}), most saved first", title_align="left")


def problems_panel(
    requests: Iterable[Mapping[str, Any]], warnings: Sequence[WarningLine], rows: int
) -> Panel:
    """Upstream errors from the latest requests, then the latest warning log lines."""
    errors = [r for r in requests if failed(r)]
    # Errors first, but warnings keep at least half the room when both are there.
    shown_errors = errors[: rows - min(len(warnings), rows // 2)]
    room = rows - len(shown_errors)
    shown_warnings = list(warnings)[-room:] if room > 0 else []
    lines: list[Text] = []
    for request in shown_errors:
        lines.append(
            Text.assemble(
                (fmt_clock(request.get("created_at")) + " ", "dim"),
                (f"{request.get('status') or DASH} ", "bold red"),
                f"{request.get('model') or request.get('provider')}: ",
                (str(request.get("error") or f"HTTP {request.get('status')}"), "red"),
            )
        )
    for warning in shown_warnings:
        lines.append(
            Text.assemble(
                (fmt_clock(warning.created) + " ", "dim"), (f"{warning.level} ", "bold yellow"), warning.text
            )
        )
    for line in lines:
        line.no_wrap = True
        line.overflow = "ellipsis"
    title = f"Upstream errors ({len(errors)} in the latest requests) · warnings"
    body: RenderableType = Group(*lines) if lines else Text("none", style="dim")
    return Panel(body, title=title, title_align="left", border_style="red" if errors else "")


def requests_panel(requests: Iterable[Mapping[str, Any]], rows: int, wide: bool) -> Panel:
    """The latest requests, newest first; a narrow terminal drops the usage and cost columns."""
    columns = [
        ("Time", "left"),
        ("Provider", "left"),
        ("Model", "left"),
        ("Status", "right"),
        ("Tokens before → after" if wide else "Before → after", "right"),
    ]
    if wide:
        columns += [("Saved", "right"), ("In / out", "right"), ("Cost", "right")]
    table = _table(*columns, ("Latency", "right"))
    for request in list(requests)[: max(rows, 0)]:
        status = request.get("status")
        before, after = request.get("tokens_original_est"), request.get("tokens_forwarded_est")
        cells: list[str | Text] = [
            fmt_clock(request.get("created_at")),
            request.get("provider") or DASH,
            request.get("model") or DASH,
            Text(DASH if status is None else str(status), style="red" if failed(request) else "green"),
            DASH if before is None else f"{fmt_int(before)} → {fmt_int(after)}",
        ]
        if wide:
            cells += [
                Text(fmt_int(request.get("tokens_saved")), style="green"),
                f"{fmt_int(request.get('input_tokens'))} / {fmt_int(request.get('output_tokens'))}",
                fmt_usd(request.get("cost_usd")),
            ]
        table.add_row(*cells, fmt_ms(request.get("duration_ms")))
    return Panel(table, title="Latest requests", title_align="left")
