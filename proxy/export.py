"""`vidurai-proxy export`: requests or sessions as CSV or JSON, streamed row by row from SQLite.

Times are written as ISO 8601 UTC ("2026-11-26T15:04:05.123Z"), the same form --since accepts, so
the last exported created_at can start the next incremental export.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import quote

from .config import ConfigError, load_config
from .storage.reader import Filter
from .tags import parse_filter

PROG = "vidurai-proxy export"
# Exit status when --session or --tag names nothing: the (empty) output is still written.
NO_MATCH = 3
# Columns holding unix seconds; exported as ISO 8601 UTC text.
TIME_COLUMNS = frozenset({"created_at", "last_seen_at", "expired_at"})
# Per table: the time column --since/--until filter on.
TABLES = {
    "requests": "created_at",
    # A session belongs to a period if it was active in it, however long ago it started.
    "sessions": "last_seen_at",
}


class ExportError(Exception):
    """A problem the user can fix; shown as one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the mistake is what the user needs to see.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_date(raw: str) -> float:
    """2026-11-26 (midnight UTC), 2026-11-26T10:00, ...Z or ...+05:30 -> unix seconds."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not an ISO date or timestamp (e.g. 2026-11-26 or 2026-11-26T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the database and the export are in UTC
    return moment.timestamp()


def _tag(raw: str) -> tuple[str, str]:
    try:
        return parse_filter(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The export command line."""
    parser = _Parser(prog=PROG, description="Export requests (or sessions) for spreadsheets and billing.")
    parser.add_argument(
        "--format",
        choices=("csv", "json"),
        required=True,
        help="csv (header row, RFC 4180) or json (an array of objects, one per line)",
    )
    parser.add_argument(
        "--since",
        type=parse_date,
        metavar="DATE",
        help="only rows at or after DATE (ISO, UTC unless an offset is given); "
        "sessions: last seen at or after DATE",
    )
    parser.add_argument("--until", type=parse_date, metavar="DATE", help="only rows before DATE")
    parser.add_argument(
        "--session", metavar="NAME", help="only this session's rows: its X-Vidurai-Session label or its id"
    )
    parser.add_argument(
        "--tag",
        type=_tag,
        metavar="KEY=VALUE",
        help="only requests sent with this X-Vidurai-Tags tag (sessions: those with such a request)",
    )
    parser.add_argument(
        "--sessions",
        action="store_true",
        help="export the sessions table (one row per conversation, with totals) instead",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--database", metavar="PATH", help="SQLite file (default: [storage] database)")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: vidurai.ini)")
    return parser


def _connect(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise ExportError(f"database not found: {path}")
    try:
        conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro", uri=True)
        conn.execute("PRAGMA query_only = ON")
        # A running proxy may be committing; wait for it rather than failing.
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    if not set(TABLES) <= tables:
        conn.close()
        raise ExportError(f"{path} is not a Vidurai Proxy database (no requests/sessions tables)")
    return conn


def query(table: str, since: float | None, until: float | None, names: Filter) -> tuple[str, list[Any]]:
    """The SELECT for one export; every filter is a bound parameter."""
    time_column = TABLES[table]
    condition, params = names.requests() if table == "requests" else names.sessions()
    where = [condition]
    if since is not None:
        where.append(f"{time_column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{time_column} < ?")
        params.append(until)
    return f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY {time_column}, rowid", params


def _iso(value: Any) -> Any:
    if not isinstance(value, (int, float)):
        return value
    moment = datetime.fromtimestamp(value, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rows(cursor: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
    """The cursor's rows, one at a time as SQLite steps, with time columns as ISO text."""
    names = [d[0] for d in cursor.description]
    times = [i for i, name in enumerate(names) if name in TIME_COLUMNS]
    for row in cursor:
        if times:
            values = list(row)
            for i in times:
                values[i] = _iso(values[i])
            row = tuple(values)
        yield row


def write_csv(cursor: sqlite3.Cursor, out: IO[str]) -> int:
    """Header row then one line per row; NULL is an empty cell. Returns the row count."""
    writer = csv.writer(out)
    writer.writerow([d[0] for d in cursor.description])
    count = 0
    for row in rows(cursor):
        writer.writerow(row)
        count += 1
    return count


def write_json(cursor: sqlite3.Cursor, out: IO[str]) -> int:
    """One JSON array of objects, one object per line, written as rows arrive. Returns the row count."""
    names = [d[0] for d in cursor.description]
    count = 0
    out.write("[")
    for row in rows(cursor):
        out.write(",\n" if count else "\n")
        out.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or FILE written under a temporary name and renamed, so a failed export leaves no half file."""
    if path is None or path == "-":
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # stdout replaced by a text-only stream (tests, embedding)
            yield sys.stdout
            return
        stream = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
        try:
            yield stream
        finally:
            stream.flush()
            stream.detach()  # leave sys.stdout open
        return
    partial = f"{path}.part"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def export(args: argparse.Namespace) -> int:
    """Run one export; returns the number of rows written."""
    database = args.database
    if database is None:
        if args.config and not Path(args.config).is_file():
            raise ExportError(f"configuration file not found: {args.config}")
        try:
            database = load_config(args.config).storage.database
        except ConfigError as exc:
            raise ExportError(f"configuration error: {exc}") from None
    conn = _connect(database)
    try:
        names = Filter(session=args.session, tag=args.tag)
        sql, params = query("sessions" if args.sessions else "requests", args.since, args.until, names)
        cursor = conn.execute(sql, params)
        with _output(args.output) as out:
            return (write_csv if args.format == "csv" else write_json)(cursor, out)
    except sqlite3.Error as exc:
        raise ExportError(f"cannot read {database}: {exc}") from None
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    """`vidurai-proxy export ARGS`; argv excludes "export". Exit 0, or 1 with one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        count = export(args)
    except ExportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `... | head`: the reader is done; Python would otherwise complain when closing stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # unwritable --output, full disk
        print(f"{PROG}: error: {exc.filename or args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.output:
        print(f"{PROG}: {count} rows written to {args.output}", file=sys.stderr)
    if count == 0 and (args.session is not None or args.tag is not None):
        # A name that matches nothing is most likely a typo: say so, and let scripts tell.
        named = [f"--session {args.session}"] if args.session is not None else []
        named += [f"--tag {'='.join(args.tag)}"] if args.tag is not None else []
        table = "sessions" if args.sessions else "requests"
        print(f"{PROG}: no {table} match {' and '.join(named)}", file=sys.stderr)
        return NO_MATCH
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
