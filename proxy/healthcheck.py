"""`vidurai-proxy health`: exit 0 when the proxy configured here answers GET /health with "ok".

For container health checks and service monitors: it reads the same configuration as the proxy
(file and VIDURAI_* variables), so it follows a changed port, and needs nothing but the stdlib.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from .config import ConfigError, load_config

PROG = "vidurai-proxy health"
TIMEOUT_S = 4.0
# Where to reach a proxy that listens on every interface: its loopback address.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


def health_url(host: str, port: int) -> str:
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def main(argv: list[str]) -> int:
    """Exit 0 when healthy; 1 with one line on stderr otherwise."""
    if argv:
        print(
            f"{PROG}: takes no arguments (configure it as the proxy: VIDURAI_CONFIG, VIDURAI_*)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    url = health_url(config.server.host, config.server.port)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = json.load(response).get("status")
    except (OSError, ValueError) as exc:  # refused, timed out, not JSON, HTTP error
        print(f"{PROG}: {url}: {exc}", file=sys.stderr)
        return 1
    if status != "ok":
        print(f"{PROG}: {url}: status {status!r}", file=sys.stderr)
        return 1
    return 0
