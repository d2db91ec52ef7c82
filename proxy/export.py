"""`vidurai-proxy export`: requests or sessions as CSV or JSON, streamed row by row from the store
(a SQLite file or a PostgreSQL database).

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
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from .config import ConfigError, load_config
from .storage import Filter, StoreError, open_store
from .storage.store import ExportRows
from .tags import parse_filter

PROG = "vidurai-proxy export"
# Exit status when --session or --tag names nothing: the (empty) output is still written.
NO_MATCH = 3
# Columns holding unix seconds; exported as ISO 8601 UTC text.
TIME_COLUMNS = frozenset({"created_at", "last_seen_at", "expired_at"})


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
    parser.add_argument(
        "--database",
        metavar="PATH_OR_URL",
        help="SQLite file or postgresql:// URL (default: [storage] database)",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: vidurai.ini)")
    return parser


def _iso(value: Any) -> Any:
    if not isinstance(value, (int, float)):
        return value
    moment = datetime.fromtimestamp(value, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rows(found: ExportRows) -> Iterator[tuple[Any, ...]]:
    """The rows, one at a time as the database steps through them, with time columns as ISO text."""
    times = [i for i, name in enumerate(found.columns) if name in TIME_COLUMNS]
    for row in found.rows:
        if times:
            values = list(row)
            for i in times:
                values[i] = _iso(values[i])
            row = tuple(values)
        yield row


def write_csv(found: ExportRows, out: IO[str]) -> int:
    """Header row then one line per row; NULL is an empty cell. Returns the row count."""
    writer = csv.writer(out)
    writer.writerow(found.columns)
    count = 0
    for row in rows(found):
        writer.writerow(row)
        count += 1
    return count


def write_json(found: ExportRows, out: IO[str]) -> int:
    """One JSON array of objects, one object per line, written as rows arrive. Returns the row count."""
    count = 0
    out.write("[")
    for row in rows(found):
        out.write(",\n" if count else "\n")
        out.write(json.dumps(dict(zip(found.columns, row, strict=True)), ensure_ascii=False))
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
    names = Filter(session=args.session, tag=args.tag)
    table = "sessions" if args.sessions else "requests"
    try:
        with open_store(database).export_rows(table, args.since, args.until, names) as found:
            with _output(args.output) as out:
                return (write_csv if args.format == "csv" else write_json)(found, out)
    except StoreError as exc:
        raise ExportError(str(exc)) from None


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
