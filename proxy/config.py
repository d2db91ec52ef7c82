"""Configuration: every setting declared once, read from vidurai.ini and VIDURAI_* variables."""

from __future__ import annotations

import configparser
import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

import attrs

DEFAULT_CONFIG_PATH = Path("vidurai.ini")
CONFIG_VARIABLE = "VIDURAI_CONFIG"
# VIDURAI_* variables that name no setting but are still allowed (each documented in README.md).
OTHER_VARIABLES = frozenset({CONFIG_VARIABLE})
# Config.source when no file was read.
NO_FILE = "defaults"


class ConfigError(Exception):
    """An invalid setting; the message is one line naming the key and what is allowed."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError
    return value


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Empty means "not set" (None); anything else must parse."""

    def parse_optional(raw: str) -> Any:
        return parse(raw) if raw.strip() else None

    return parse_optional


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError


def _url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError
    return raw.strip().rstrip("/")


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(host.strip().lower() for host in raw.split(",") if host.strip())
    for host in hosts:
        bracketed = host.startswith("[") and host.endswith("]")
        if ("/" in host or ":" in host) and not bracketed:  # a port, a URL or a bare IPv6 address
            raise ValueError
    return hosts


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())


def _setting(
    default: str, parse: Callable[[str], Any], allowed: str, help: str, *, is_path: bool = False
) -> dict[str, Any]:
    """The metadata that makes an attrs field a setting: the class is its section, the field its key.

    `default` is the text vidurai.ini shows, parsed like any other value; `allowed` ends every error
    message about the setting; `is_path` marks a file path, which resolves against the config file's
    folder when relative (see _base_folder).
    """
    # Metadata rather than a wrapper around attrs.field: mypy's attrs plugin only recognises fields
    # made by attrs.field itself, and would take every wrapped one for a field with a default.
    return {"default": default, "parse": parse, "allowed": allowed, "help": help, "is_path": is_path}


def _choice_setting(default: str, choices: tuple[str, ...], help: str) -> dict[str, Any]:
    """A setting that takes one of `choices`: its parser and its allowed text come from the one list."""
    return _setting(default, _choice(*choices), " | ".join(choices), help)


@attrs.frozen
class ServerConfig:
    host: str = attrs.field(
        metadata=_setting(
            "127.0.0.1",
            _text,
            "a host name or IP address",
            "Address to listen on. Keep 127.0.0.1 unless other machines must reach the proxy.",
        )
    )
    port: int = attrs.field(
        metadata=_setting("8080", _port, "an integer from 0 to 65535", "TCP port to listen on.")
    )
    workers: int = attrs.field(
        metadata=_setting(
            "1",
            _positive_int,
            "a positive integer",
            "Processes serving the one port (SO_REUSEPORT), the kernel spreading connections among them; "
            "each is an instance with its own sessions and writer, all on the one database (SQLite in WAL "
            "mode, or PostgreSQL). More than 1 pays off with more cores than one process keeps busy.",
        )
    )
    max_body_mb: int = attrs.field(
        metadata=_setting(
            "64",
            _positive_int,
            "a positive integer",
            "Largest request body accepted, in MiB; larger requests get 413.",
        )
    )
    max_messages: int = attrs.field(
        metadata=_setting(
            "100000",
            _positive_int,
            "a positive integer",
            "Most messages accepted in one request; more get 400.",
        )
    )
    keepalive_timeout: float = attrs.field(
        metadata=_setting(
            "75",
            _positive_float,
            "a positive number of seconds",
            "An idle client connection is closed after this long; so is one that takes longer to send its "
            "request headers.",
        )
    )
    read_timeout: float = attrs.field(
        metadata=_setting(
            "60",
            _positive_float,
            "a positive number of seconds",
            "Longest silence allowed while a client sends its request body; then 408 and the connection is "
            "closed.",
        )
    )
    allowed_origins: tuple[str, ...] = attrs.field(
        metadata=_setting(
            "",
            _origins,
            "empty, * or a comma-separated list of origins",
            "Origins allowed by CORS; empty sends no CORS headers at all.",
        )
    )
    admin_token: str = attrs.field(
        repr=False,  # never in a log line or a traceback
        metadata=_setting(
            "",
            _text,
            "empty or a secret string",
            "When set, the dashboard, /metrics.json, /metrics and every other admin route require it "
            "(Authorization: Bearer, or the dashboard's login form); the API routes never do. Set it "
            "whenever host is not a loopback address.",
        ),
    )
    admin_hosts: tuple[str, ...] = attrs.field(
        metadata=_setting(
            "127.0.0.1, localhost, [::1]",
            _hosts,
            "* or a comma-separated list of host names, without ports ([::1] for IPv6)",
            "Host names the admin routes answer for, with any port; other Host headers get 403, which "
            "stops DNS-rebinding pages. Add the name clients use when the proxy is reached over the network.",
        )
    )


@attrs.frozen
class UpstreamConfig:
    anthropic_base_url: str = attrs.field(
        metadata=_setting(
            "https://api.anthropic.com",
            _url,
            "an http(s) URL",
            "Anthropic API base URL, without /v1 (like ANTHROPIC_BASE_URL).",
        )
    )
    openai_base_url: str = attrs.field(
        metadata=_setting(
            "https://api.openai.com/v1",
            _url,
            "an http(s) URL",
            "OpenAI-compatible API base URL, with /v1 (like OPENAI_BASE_URL).",
        )
    )
    connect_timeout: float = attrs.field(
        metadata=_setting(
            "10",
            _positive_float,
            "a positive number of seconds",
            "Seconds to wait for a connection to upstream before answering 502.",
        )
    )
    read_timeout: float = attrs.field(
        metadata=_setting(
            "600",
            _positive_float,
            "a positive number of seconds",
            "Longest silence allowed while reading from upstream (no total limit on streams); then 504.",
        )
    )


@attrs.frozen
class StorageConfig:
    database: str = attrs.field(
        metadata=_setting(
            "vidurai.db",
            _text,
            "a file path or a postgresql:// URL",
            "SQLite database file (a relative path is relative to this file's folder), or a PostgreSQL "
            "database shared by several instances: postgresql://user:password@host:5432/dbname.",
            is_path=True,
        )
    )
    store_text: bool = attrs.field(
        metadata=_setting(
            "true",
            _bool,
            "true or false",
            "Keep conversation text on disk: the memories table's turns and digests, and the sessions' "
            "snapshots a restart restores. false keeps no text at all (memories keep hashes, positions "
            "and importances; no snapshots): compression works the same, rebuilt from each request, and a "
            "restart starts sessions empty.",
        )
    )
    flush_interval: float = attrs.field(
        metadata=_setting(
            "0.5",
            _positive_float,
            "a positive number of seconds",
            "How often the single writer commits queued rows (at most 1 second is lost on a crash).",
        )
    )
    max_queued_rows: int = attrs.field(
        metadata=_setting(
            "100000",
            _positive_int,
            "a positive integer",
            "Rows kept in memory while the database cannot be written (locked, full, deleted); past this "
            "the oldest are dropped and counted in /health.",
        )
    )
    shutdown_timeout: float = attrs.field(
        metadata=_setting(
            "10",
            _positive_float,
            "a positive number of seconds",
            "On a clean stop, how long to wait for an unwritable database before giving up on the rows "
            "still queued (their number is logged).",
        )
    )


@attrs.frozen
class SessionsConfig:
    timeout: int = attrs.field(
        metadata=_setting(
            "3600",
            _positive_int,
            "a positive integer (seconds)",
            "A session idle this long is expired and its memory released.",
        )
    )
    max_active: int = attrs.field(
        metadata=_setting(
            "1000",
            _positive_int,
            "a positive integer",
            "Most sessions whose compression memory is held in RAM (about 100 KiB each for a 60-message "
            "conversation). The least recently used beyond this are snapshotted to the database and "
            "released, and reloaded on their next request.",
        )
    )
    snapshot_interval: int = attrs.field(
        metadata=_setting(
            "60",
            _positive_int,
            "a positive integer (seconds)",
            "How often the compression memory of active sessions is snapshotted to the database.",
        )
    )


@attrs.frozen
class CompressionConfig:
    enabled: bool = attrs.field(
        metadata=_setting("true", _bool, "true or false", "Compress long conversations.")
    )
    threshold_messages: int = attrs.field(
        metadata=_setting(
            "10",
            _positive_int,
            "a positive integer",
            "Compress only conversations with at least this many messages.",
        )
    )
    min_tokens: int = attrs.field(
        metadata=_setting(
            "2000",
            _non_negative_int,
            "a non-negative integer",
            "Compress only conversations estimated above this many tokens.",
        )
    )
    keep_recent: int = attrs.field(
        metadata=_setting(
            "6",
            _positive_int,
            "a positive integer",
            "The latest messages always forwarded verbatim (widened to keep tool pairs whole).",
        )
    )
    chunk_messages: int = attrs.field(
        metadata=_setting(
            "20",
            _positive_int,
            "a positive integer",
            "Old messages are folded in chunks of this many, so the forwarded prefix stays cacheable.",
        )
    )
    recall_budget_tokens: int = attrs.field(
        metadata=_setting(
            "6000",
            _non_negative_int,
            "a non-negative integer",
            "At most this many tokens of old turns recalled verbatim for the latest user message; fewer when "
            "few turns are relevant.",
        )
    )
    recall_share: float = attrs.field(
        metadata=_setting(
            "0.3",
            _fraction,
            "a number from 0 to 1",
            "Recall at most this share of the folded history's tokens. Recalled turns are sent uncached with "
            "every user turn: lower this and the budget when prompt-cache hits matter more than recall.",
        )
    )
    cache_aware_recall: bool = attrs.field(
        metadata=_setting(
            "true",
            _bool,
            "true or false",
            "While the provider likely still caches the conversation (Claude with cache_control markers, "
            "OpenAI always; the previous request within the cache's lifetime), recall at most half of what "
            "the folded history would cost as cache reads: 5% of it for Claude.",
        )
    )
    tool_result_max_tokens: int = attrs.field(
        metadata=_setting(
            "400",
            _positive_int,
            "a positive integer",
            "Old tool results longer than this are cut to head and tail.",
        )
    )
    summarizer: str = attrs.field(
        metadata=_choice_setting(
            "extractive",
            ("extractive", "model"),
            "Who writes the digest of a folded chunk: extractive quotes its telling lines verbatim; model "
            "has Vidurai's SemanticCompressor summarise it once, in the background, with summary_model and "
            "the client's own key (an extra upstream request per chunk, recorded and priced as endpoint "
            "summary), used from the next fold on. Needs [storage] store_text.",
        )
    )
    summary_model_anthropic: str = attrs.field(
        metadata=_setting(
            "claude-haiku-4-5",
            _text,
            "a model name",
            "The model that writes chunk summaries of Anthropic conversations (summarizer = model).",
        )
    )
    summary_model_openai: str = attrs.field(
        metadata=_setting(
            "gpt-4o-mini",
            _text,
            "a model name",
            "The model that writes chunk summaries of OpenAI conversations (summarizer = model).",
        )
    )
    summary_timeout: float = attrs.field(
        metadata=_setting(
            "30",
            _positive_float,
            "a positive number (seconds)",
            "A summary call not answered within this leaves the chunk's extractive digest in place.",
        )
    )


@attrs.frozen
class ClusterConfig:
    redis_url: str = attrs.field(
        repr=False,  # may hold a password
        metadata=_setting(
            "",
            _redis_url,
            "empty or a redis://, rediss:// or unix:// URL",
            "Redis shared by every instance (processes, machines) for what they must agree on at once: the "
            "time of a session's previous request, which says whether the provider's cache is warm, and "
            "rate-limit and budget counters. Empty keeps all of it in this process. When Redis cannot be "
            "reached the proxy serves on its own state and says so in the log, /health and /metrics.",
        ),
    )
    key_prefix: str = attrs.field(
        metadata=_setting(
            "vidurai:",
            _text,
            "a string",
            "Prefix of every Redis key the proxy writes, so several deployments can share one Redis.",
        )
    )
    timeout: float = attrs.field(
        metadata=_setting(
            "0.25",
            _positive_float,
            "a positive number of seconds",
            "Longest wait for one Redis call. Past it, or on any Redis error, the request goes on with "
            "this instance's own state, and Redis is only probed once a second until it answers again.",
        )
    )


@attrs.frozen
class LimitsConfig:
    requests_per_minute: int | None = attrs.field(
        metadata=_setting(
            "",
            _optional(_positive_int),
            "empty or a positive integer",
            "Requests each tenant (client key) may send per minute; more get 429 with retry-after. Empty: no "
            "limit. A virtual key's own --rpm replaces it for that key.",
        )
    )
    tokens_per_minute: int | None = attrs.field(
        metadata=_setting(
            "",
            _optional(_positive_int),
            "empty or a positive integer",
            "Tokens (input, output and both cache tiers, as upstream reports them) each tenant may use per "
            "minute. Empty: no limit.",
        )
    )
    budget_usd_per_day: float | None = attrs.field(
        metadata=_setting(
            "",
            _optional(_positive_float),
            "empty or a positive number of US dollars",
            "Spend each tenant may reach per UTC day, priced as in [pricing]; then 429 with "
            "x-should-retry: false until midnight UTC. Empty: no budget.",
        )
    )
    budget_usd_per_month: float | None = attrs.field(
        metadata=_setting(
            "",
            _optional(_positive_float),
            "empty or a positive number of US dollars",
            "Spend each tenant may reach per UTC calendar month. Empty: no budget.",
        )
    )
    on_store_failure: str = attrs.field(
        metadata=_choice_setting(
            "open",
            ("open", "closed"),
            "When the counters' store ([cluster] redis_url) cannot be reached: open forwards requests "
            "unlimited (with a warning, a /health flag and a Prometheus counter); closed answers 503.",
        )
    )


@attrs.frozen
class LoggingConfig:
    level: str = attrs.field(
        metadata=_choice_setting(
            "info",
            ("debug", "info", "warning", "error"),
            "Lowest level logged.",
        )
    )
    file: str = attrs.field(
        metadata=_setting(
            "",
            _text,
            "empty or a file path",
            "JSON-lines log file (rotated); empty logs to the terminal only. A relative path is relative "
            "to this file's folder.",
            is_path=True,
        )
    )
    max_bytes: int = attrs.field(
        metadata=_setting(
            "10485760", _positive_int, "a positive integer", "Size at which the log file is rotated."
        )
    )
    backup_count: int = attrs.field(
        metadata=_setting("5", _positive_int, "a positive integer", "Rotated log files kept.")
    )


@attrs.frozen
class UIConfig:
    terminal: str = attrs.field(
        metadata=_choice_setting(
            "auto",
            ("auto", "on", "off"),
            "Live terminal dashboard: auto or on show it when stdout is a terminal; off never does. "
            "Off a terminal (a service, CI) logs are always plain lines.",
        )
    )


@attrs.frozen
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float


@attrs.frozen
class Config:
    server: ServerConfig
    upstream: UpstreamConfig
    storage: StorageConfig
    sessions: SessionsConfig
    compression: CompressionConfig
    cluster: ClusterConfig
    limits: LimitsConfig
    logging: LoggingConfig
    ui: UIConfig
    # Model-name prefix -> price, longest prefix first so dated ids resolve to the closest entry.
    pricing: tuple[tuple[str, Price], ...] = ()
    source: str = ""


# Every Config field holding an attrs class is a section, named by the field, in vidurai.ini's order.
# get_type_hints, not the annotations: under `from __future__ import annotations` those are strings.
_SECTION_CLASSES: dict[str, type[Any]] = {
    name: hint for name, hint in get_type_hints(Config).items() if attrs.has(hint)
}


@attrs.frozen
class Setting:
    """One setting as the loader, the VIDURAI_* variables and vidurai.ini see it: its field, flattened."""

    section: str
    key: str
    default: str
    parse: Callable[[str], Any]
    allowed: str
    help: str
    is_path: bool

    @property
    def env_var(self) -> str:
        return f"VIDURAI_{self.section}_{self.key}".upper()


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(section, field.name, **field.metadata)
    for section, cls in _SECTION_CLASSES.items()
    for field in attrs.fields(cls)
)


def _parse_price(model: str, raw: str) -> Price:
    try:
        numbers = [float(part) for part in raw.split(",")]
        if len(numbers) != 4 or any(n < 0 for n in numbers):
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"[pricing] {model} = {raw!r}: expected four non-negative numbers "
            "'input, output, cache_write, cache_read' in USD per million tokens"
        ) from None
    return Price(*numbers)


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    """Read the ini file (VIDURAI_CONFIG or vidurai.ini), then VIDURAI_* variables, then overrides.

    Overrides are keyword arguments named `section_key` holding raw strings, used by tests.
    """
    env = os.environ if env is None else env
    _check_variables(env)
    if path is None:
        path = env.get(CONFIG_VARIABLE) or DEFAULT_CONFIG_PATH
    path = Path(os.path.abspath(path))
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep model names' case
    if path.exists():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    elif CONFIG_VARIABLE in env:
        raise ConfigError(f"{CONFIG_VARIABLE}={path}: no such file")

    known = {(s.section, s.key) for s in SETTINGS}
    for section in parser.sections():
        if section == "pricing":
            continue
        if section not in _SECTION_CLASSES:
            raise ConfigError(
                f"[{section}] in {path}: unknown section; known: "
                + ", ".join(sorted([*_SECTION_CLASSES, "pricing"]))
            )
        for key in parser[section]:
            if (section, key) not in known:
                raise ConfigError(f"[{section}] {key} in {path}: unknown key")

    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_CLASSES}
    for setting in SETTINGS:
        raw = setting.default
        origin = "default"
        if parser.has_option(setting.section, setting.key):
            raw, origin = parser.get(setting.section, setting.key), str(path)
        if setting.env_var in env:
            raw, origin = env[setting.env_var], setting.env_var
        override_name = f"{setting.section}_{setting.key}"
        if override_name in overrides:
            raw, origin = str(overrides.pop(override_name)), "override"
        try:
            value = setting.parse(raw)
            if setting.is_path and value and not _is_url(value):
                value = os.path.abspath(_base_folder(origin, path) / Path(value).expanduser())
            values[setting.section][setting.key] = value
        except ValueError:
            raise ConfigError(
                f"[{setting.section}] {setting.key} = {raw!r} (from {origin}): expected {setting.allowed}"
            ) from None
    if overrides:
        raise ConfigError(f"unknown setting override: {', '.join(overrides)}")

    pricing = [
        (model, _parse_price(model, raw))
        for model, raw in (parser["pricing"].items() if parser.has_section("pricing") else [])
    ]
    pricing.sort(key=lambda item: len(item[0]), reverse=True)
    sections = {name: cls(**values[name]) for name, cls in _SECTION_CLASSES.items()}
    return Config(**sections, pricing=tuple(pricing), source=str(path) if path.exists() else NO_FILE)


def _is_url(value: str) -> bool:
    """A value such as postgresql://... names a server, not a file: it is not made absolute."""
    return "://" in value


def _base_folder(origin: str, path: Path) -> Path:
    """Where a relative path setting points from: the folder of the config file in use (for its
    own values and for defaults, so a file names one instance wherever it is started), else the
    working directory (no file; a value from a variable or an override)."""
    if origin in ("default", str(path)) and path.exists():
        return path.parent
    return Path.cwd()


def _check_variables(env: Mapping[str, str]) -> None:
    """A mistyped VIDURAI_* variable would be ignored without a word: stop with the closest name."""
    prefix = "VIDURAI_"
    known = {setting.env_var: setting for setting in SETTINGS}
    for name in sorted(env):
        if not name.startswith(prefix) or name in known or name in OTHER_VARIABLES:
            continue
        # Compared without the prefix they all share, which would make anything look close.
        names = [candidate.removeprefix(prefix) for candidate in (*known, *sorted(OTHER_VARIABLES))]
        close = [prefix + match for match in difflib.get_close_matches(name.removeprefix(prefix), names, 1)]
        if close and close[0] in known:
            setting = known[close[0]]
            hint = f"did you mean {close[0]} ([{setting.section}] {setting.key})?"
        elif close:
            hint = f"did you mean {close[0]}?"
        else:
            hint = "settings are VIDURAI_<SECTION>_<KEY>, as listed in vidurai.ini"
        raise ConfigError(f"{name} names no setting; {hint}")


_PRICING_HELP = """\
[pricing]
# Prices in USD per million tokens: input, output, cache_write, cache_read.
# Matched by the longest model-name prefix, so dated ids (claude-sonnet-4-5-20250929) resolve.
# Built-in prices for current Claude and GPT models are in proxy/pricing.py; entries here
# override or extend them, e.g.:
# claude-sonnet-4-5 = 3, 15, 3.75, 0.30
# my-local-model = 0, 0, 0, 0
"""


def render_default_ini() -> str:
    """vidurai.ini as shipped: every setting with its help and default (a test keeps them in step)."""
    import textwrap

    lines = [
        "# Vidurai Proxy configuration.",
        "# Another file: VIDURAI_CONFIG=path. Any key can be overridden by an environment variable",
        "# VIDURAI_<SECTION>_<KEY>, e.g. VIDURAI_SERVER_PORT=9000. Every value below is the default.",
    ]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"[{section}]"]
        help_text = f"{setting.help} Allowed: {setting.allowed}."
        lines += ["# " + line for line in textwrap.wrap(help_text, 96, break_on_hyphens=False)]
        lines.append(f"{setting.key} = {setting.default}".rstrip())
    return "\n".join(lines) + "\n\n" + _PRICING_HELP


if __name__ == "__main__":
    print(render_default_ini(), end="")
