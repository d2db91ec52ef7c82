"""The live terminal dashboard: rich redraws the metrics from the store about once a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from rich.console import Console
from rich.layout import Layout
from rich.live import Live
from rich.text import Text

from proxy.storage import Store
from proxy.ui import panels
from proxy.ui.logbuffer import WarningBuffer, WarningLine

__all__ = ["MODES", "TerminalUI", "WarningBuffer", "WarningLine", "should_show"]

log = structlog.get_logger(__name__)
MODES = ("auto", "on", "off")
MetricsSource = Callable[[], Awaitable[dict[str, Any]]]

_HEADER = 1
# From this many columns, panels sit side by side and the requests table shows every column.
WIDE = 110
# Enough for the sessions table; the errors and warnings beside it get the rest of the width.
_SESSIONS_WIDTH = 56


def should_show(mode: str, isatty: bool) -> bool:
    """Whether to draw the live dashboard: `auto` or `on` on a terminal; never off a terminal.

    A service or CI run (stdout not a TTY) always gets plain log lines, whatever the setting,
    since cursor movement would only litter its log.
    """
    if mode not in MODES:
        raise ValueError(f"[ui] terminal = {mode!r}: expected one of {', '.join(MODES)}")
    return mode != "off" and isatty


class TerminalUI:
    """Draws the dashboard from `store.metrics_json()` (or `source`) until told to stop."""

    def __init__(
        self,
        store: Store,
        console: Console | None = None,
        warnings: WarningBuffer | None = None,
        refresh_s: float = 1.0,
        *,
        url: str = "",
        log_file: str = "",
        source: MetricsSource | None = None,
    ) -> None:
        self.store = store
        self.db_path = store.describe()
        self.console = console or Console()
        self.warnings = warnings
        self.refresh_s = refresh_s
        self.url = url
        self.log_file = log_file
        self._source: MetricsSource = source or store.metrics_json
        self._error: str | None = None
        self._updated: float | None = None

    async def fetch(self) -> dict[str, Any]:
        """The latest metrics; on failure the error is shown in the header and `{}` returned."""
        try:
            metrics = await self._source()
        except Exception as exc:  # the database may be locked or not created yet: retry next tick
            self._error = f"{type(exc).__name__}: {exc}"
            return {}
        self._error = None
        self._updated = time.time()
        return metrics

    def render(self, metrics: dict[str, Any]) -> Layout:
        """The whole screen for one /metrics.json dict, sized to the console."""
        width, height = self.console.size
        wide = width >= WIDE
        per_row = 4 if wide else 2
        top = _HEADER + panels.totals_height(per_row)
        rest = max(height - top, 9)
        recent = metrics.get("recent_requests", [])
        totals = metrics.get("totals", {})
        warnings = self.warnings.lines() if self.warnings is not None else []

        layout = Layout()
        parts = [
            Layout(
                panels.header(self.url, self.db_path, self.log_file, self._error, self._updated), size=_HEADER
            ),
            Layout(panels.totals_panel(totals, per_row), size=top - _HEADER),
        ]
        # Panels take 2 rows of border; tables 1 more for their header.
        if wide:  # sessions beside errors and warnings, a third of the room left
            middle = min(max(rest // 3, 5), 12)
            row = Layout(size=middle)
            row.split_row(
                Layout(
                    panels.sessions_panel(
                        metrics.get("top_sessions", []), totals.get("active_sessions", 0), middle - 3
                    ),
                    size=_SESSIONS_WIDTH,
                ),
                Layout(panels.problems_panel(recent, warnings, middle - 2)),
            )
            parts.append(row)
        else:  # stacked, fewer rows each
            middle = sessions = min(max(rest // 4, 4), 8)
            problems = min(max(rest // 5, 3), 6)
            middle += problems
            parts += [
                Layout(
                    panels.sessions_panel(
                        metrics.get("top_sessions", []), totals.get("active_sessions", 0), sessions - 3
                    ),
                    size=sessions,
                ),
                Layout(panels.problems_panel(recent, warnings, problems - 2), size=problems),
            ]
        parts.append(Layout(panels.requests_panel(recent, rest - middle - 3, wide)))
        layout.split_column(*parts)
        return layout

    def summary(self, metrics: dict[str, Any]) -> Text:
        """One line left on the terminal when the dashboard closes."""
        totals = metrics.get("totals", {})
        return Text(
            f"Vidurai Proxy: {panels.fmt_int(totals.get('requests', 0))} requests, "
            f"{panels.fmt_int(totals.get('tokens_saved', 0))} tokens saved "
            f"({panels.fmt_pct(totals.get('savings_pct', 0.0))}), "
            f"cost {panels.fmt_usd(totals.get('cost_usd', 0.0))}, "
            f"saved {panels.fmt_usd(totals.get('cost_saved_usd', 0.0))}."
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Redraw every `refresh_s` until `stop` is set, then restore the screen and print a summary."""
        metrics: dict[str, Any] = {}
        # screen=True: the alternate screen, so the terminal's scrollback is left as it was.
        # auto_refresh=False: redraws happen here on the event loop, not in rich's thread.
        with Live(
            console=self.console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            while not stop.is_set():
                metrics = await self.fetch() or metrics
                try:
                    live.update(self.render(metrics), refresh=True)
                except Exception as exc:  # a drawing bug must not take the proxy down with it
                    log.exception("terminal_ui.render_failed")
                    live.update(Text(f"dashboard error: {type(exc).__name__}: {exc}"), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.refresh_s)
        final = await self.fetch()
        await self.store.close()  # its read connections (a PostgreSQL store keeps a few open)
        self.console.print(self.summary(final or metrics))
