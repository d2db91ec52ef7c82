"""`vidurai-proxy keys create|list|update|revoke`: virtual keys in the proxy's own database."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..config import ConfigError, load_config
from ..logs import configure_logging
from ..storage import MigrationError, StoreError, open_store
from ..storage.limits import LimitsStore
from .keyring import VirtualKey, new_key
from .limiter import Limits

_LIMIT_OPTIONS = (
    ("--rpm", "requests_per_minute", int, "requests per minute"),
    ("--tpm", "tokens_per_minute", int, "tokens per minute (input, output and cache tiers)"),
    ("--budget-usd-day", "budget_usd_per_day", float, "US dollars per UTC day"),
    ("--budget-usd-month", "budget_usd_per_month", float, "US dollars per UTC month"),
)


def _limit(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A positive number, or "none" (on update: back to the [limits] default)."""

    def parse_limit(raw: str) -> Any:
        if raw.strip().lower() == "none":
            return None
        value = parse(raw)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{raw!r}: expected a positive number or none")
        return value

    return parse_limit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidurai-proxy keys",
        description="Virtual keys: give each person a key and limits; the proxy sends the real "
        "provider key upstream in its place. Uses the proxy's configuration and database.",
    )
    parser.add_argument("--config", help="configuration file (default: $VIDURAI_CONFIG or vidurai.ini)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="issue a key; it is printed once, on the last line")
    create.add_argument("--name", required=True, help="who or what the key is for (unique)")
    create.add_argument("--provider", required=True, choices=("anthropic", "openai"))
    create.add_argument(
        "--upstream-key-env",
        required=True,
        help="the environment variable holding the real provider key in the proxy's environment "
        "(its name is stored, never its value)",
    )
    update = commands.add_parser("update", help="change a key's limits or its upstream key variable")
    update.add_argument("name")
    update.add_argument("--upstream-key-env")
    for flag, column, parse, help_text in _LIMIT_OPTIONS:
        create.add_argument(
            flag, dest=column, metavar="N", type=_limit(parse), help=f"{help_text}; default: [limits]"
        )
        # Absent unless given, so "--rpm none" (back to the default) differs from not saying.
        update.add_argument(
            flag,
            dest=column,
            metavar="N",
            type=_limit(parse),
            default=argparse.SUPPRESS,
            help=f"{help_text} or none",
        )
    commands.add_parser("list", help="every key, its limits and whether it is revoked")
    revoke = commands.add_parser("revoke", help="refuse the key from now on (within seconds)")
    revoke.add_argument("name")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging(config.logging)  # to stderr: stdout is the command's answer alone
        store = open_store(config.storage).limits()  # the proxy's own database, either engine
    except ConfigError as exc:
        print(f"vidurai-proxy keys: {exc}", file=sys.stderr)
        return 2
    try:
        store.migrate()
        return _run(store, args)
    except MigrationError as exc:
        print(f"vidurai-proxy keys: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"vidurai-proxy keys: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _run(store: LimitsStore, args: argparse.Namespace) -> int:
    now = time.time()
    if args.command == "create":
        key, digest = new_key()
        limits = Limits(*(getattr(args, column) for _, column, _, _ in _LIMIT_OPTIONS))
        record = VirtualKey(
            os.urandom(8).hex(), args.name, digest[:16], args.provider, args.upstream_key_env, limits, now
        )
        if not store.add_key(record, digest):
            print(f"vidurai-proxy keys: a key named {args.name!r} exists already", file=sys.stderr)
            return 1
        if args.upstream_key_env not in os.environ:
            print(f"note: {args.upstream_key_env} is not set here; the proxy needs it in its environment")
        print(f"created {args.name!r} ({args.provider}, {_describe(limits)}) in {store.database}")
        print("the key is shown this once; the proxy keeps only its hash:")
        print(key)
        return 0
    if args.command == "list":
        for found in store.keys():
            state = "revoked" if found.revoked_at is not None else "active"
            print(
                f"{found.name}\t{found.provider}\t{state}\ttenant={found.tenant}\t"
                f"upstream_key_env={found.upstream_key_env}\t{_describe(found.limits)}"
            )
        return 0
    if args.command == "update":
        changes: dict[str, Any] = {
            column: getattr(args, column) for _, column, _, _ in _LIMIT_OPTIONS if hasattr(args, column)
        }
        if args.upstream_key_env:
            changes["upstream_key_env"] = args.upstream_key_env
        if not changes:
            print("vidurai-proxy keys update: nothing to change", file=sys.stderr)
            return 2
        if not store.update_key(args.name, changes, now):
            print(f"vidurai-proxy keys: no active key named {args.name!r}", file=sys.stderr)
            return 1
        print(f"updated {args.name!r}")
        return 0
    if not store.revoke_key(args.name, now):
        print(f"vidurai-proxy keys: no active key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.name!r}; proxies refuse it within seconds")
    return 0


def _describe(limits: Limits) -> str:
    shown = [f"{name}={value:g}" for name, value in limits.set()]
    return ", ".join(shown) if shown else "[limits] defaults"
