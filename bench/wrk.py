"""wrk as the load generator: a Lua script per request kind, one JSON summary line per run.

wrk (C, one event loop per thread) costs a fraction of the CPU of the servers it measures, so on
two shared cores the figures show the servers, not the client. The Lua script sends POST bodies
and prints wrk's own summary and latency percentiles as JSON from `done()`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import attrs

# Lua long brackets hold the bodies and headers verbatim; this level never occurs in JSON we send.
_OPEN, _CLOSE = "[==[", "]==]"

_SCRIPT = """
wrk.method = "POST"
{headers}
local bodies = {{{bodies}}}
local unique = {unique}
local limit = {limit}
local requests, sent, answered = {{}}, 0, 0
local thread_id = 0
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

function init(args)
  for i, body in ipairs(bodies) do requests[i] = wrk.format(nil, nil, nil, body) end
end

function request()
  sent = sent + 1
  if unique then
    -- A new conversation every request: its first message differs.
    return wrk.format(nil, nil, nil, string.format(bodies[1], thread_id, sent))
  end
  return requests[(sent - 1) % #requests + 1]
end

if limit > 0 then
  -- wrk has no request count: the thread stops itself and leaves a mark, and the benchmark then
  -- interrupts wrk (SIGINT), which ends the run at once and still prints the summary.
  function response(status, headers, body)
    answered = answered + 1
    if answered == limit then
      wrk.thread:stop()
      io.open({mark} .. thread_id, "w"):close()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {{"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@attrs.frozen
class WrkResult:
    requests: int
    seconds: float
    errors: int  # socket errors and timeouts
    status_errors: int  # responses with a status >= 400
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua(text: str) -> str:
    if _CLOSE in text:
        raise ValueError("text holds the Lua long-bracket terminator")
    return _OPEN + text + _CLOSE


def script(
    path: Path, headers: dict[str, str], bodies: list[str], *, unique: bool = False, limit: int = 0
) -> Path:
    """Write a wrk script: POST `bodies` in turn, or with `unique` bodies[0] % (thread, serial).

    `limit` > 0 stops each thread after that many responses.
    """
    header_lines = "\n".join(f"wrk.headers[ {_lua(k)} ] = {_lua(v)}" for k, v in headers.items())
    path.write_text(
        _SCRIPT.format(
            headers=header_lines,
            bodies=", ".join(_lua(body) for body in bodies),
            unique="true" if unique else "false",
            limit=int(limit),
            mark=_lua(str(mark_prefix(path))),
        )
    )
    return path


def mark_prefix(lua: Path) -> Path:
    """Where a script with a limit marks each thread that reached it (the thread's number appended)."""
    return lua.with_suffix(".done.")


def binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return found


def run(url: str, lua: Path, *, connections: int, seconds: float, threads: int = 1) -> WrkResult:
    """One wrk run against `url`; its summary as measured by wrk."""
    command = [
        binary(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(round(seconds), 1)}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    marks = [Path(f"{mark_prefix(lua)}{n}") for n in range(min(threads, connections))]
    for mark in marks:
        mark.unlink(missing_ok=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds + 60
    while process.poll() is None and time.monotonic() < deadline:
        if all(mark.exists() for mark in marks):
            process.send_signal(signal.SIGINT)  # every thread reached its limit
            break
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 5))
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-500:]}")
    raw = json.loads(line.removeprefix("WRK-JSON "))
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        errors=raw["errors"],
        status_errors=raw["status_errors"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )
