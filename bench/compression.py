"""`make bench-compression`: what compression gives users, through the real proxy.

Two data sets, read by path and never copied into the project (../shared/datasets/README.md):
- swe-agent-dev: 40 coding-agent sessions replayed step by step as Claude Code-like requests, with
  cache markers (Claude caches; the proxy sees a warm cache) and without (nothing cached): token
  reduction, next-action support, input cost with the prompt cache warm and cold, validity
  (bench/agent_sessions.py, bench/agent_bench.py, bench/cache_cost.py);
- LoCoMo: questions (evidence recall by category), a neutral last message (fact coverage), every
  user turn in order with cache markers (input cost warm and cold), validity and compress() time
  (bench/locomo.py, bench/locomo_bench.py).
Then a small frontier over the main settings, in-process (bench/frontier.py).

    .venv/bin/python -m bench.compression                              # everything (make bench-compression)
    .venv/bin/python -m bench.compression --only agent --in-process    # fast loop for tuning
    .venv/bin/python -m bench.compression --only locomo --questions 20 --no-frontier
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog

from proxy.compression import route_vidurai_logs
from proxy.config import ConfigError

from . import agent_bench, frontier, locomo_bench, summary_cost
from .agent_sessions import DEFAULT_SWE_AGENT, AgentSession, load_sessions
from .locomo import DEFAULT_LOCOMO, Conversation, load_locomo
from .parallel import run_all
from .replay import Forwarded, Request, in_process, settings_for, through_proxy

# Issue 10's 600-turn bar for compression time: the long LoCoMo conversations.
LONG_CONVERSATION_TURNS = 600
# compress() is timed on its own, in-process, on every fifth Anthropic question of each conversation
# (warm sessions all the same): enough for a p50 and p95 at a fifth of the time.
TIMING_QUESTION_STRIDE = 5
# With Claude Code's cache markers (Claude caches, the proxy sees a warm cache), and without.
AGENT_VARIANTS = ("markers", "no-markers")


@attrs.frozen
class Run:
    """How this run sends its requests."""

    overrides: dict[str, str]  # compression_* settings, as the proxy's config takes them
    proxied: bool

    @property
    def mode(self) -> str:
        return "the real proxy to a recording fake upstream" if self.proxied else "compress() in-process"

    def forward(self, requests: list[Request]) -> Forwarded:
        if self.proxied:
            return asyncio.run(through_proxy(requests, self.overrides))
        return in_process(requests, settings_for(self.overrides))


def agent_figures(run: Run, variant: str, sessions: list[AgentSession]) -> dict[str, Any]:
    """One agent variant's figures (with summarizer = model, its summary calls' too)."""
    forwarded = run.forward(agent_bench.requests_of(sessions, variant))
    figures = agent_bench.tally(sessions, forwarded).figures()
    if forwarded.summary_calls:
        figures["summaries"] = summary_cost.figures(forwarded.summary_calls)
    return figures


def locomo_rows(
    run: Run, plan: locomo_bench.Plan
) -> tuple[dict[str, locomo_bench.Row], dict[str, Any] | None]:
    """The LoCoMo table's rows, compress() times not yet in; with summarizer = model, the figures of
    its summary calls."""
    forwarded = run.forward(plan.requests)
    calls = summary_cost.figures(forwarded.summary_calls) if forwarded.summary_calls else None
    return locomo_bench.tally(plan, forwarded), calls


def add_timing(
    rows: dict[str, locomo_bench.Row], conversations: list[Conversation], overrides: dict[str, str]
) -> dict[str, Any]:
    """compress() alone, in-process and on its own (the proxy's overhead would drown it, and a run
    beside it would slow it): every fifth Anthropic question, into the rows; p50 and p95 on the
    long conversations."""
    sampled = [attrs.evolve(c, questions=c.questions[::TIMING_QUESTION_STRIDE]) for c in conversations]
    timing = locomo_bench.plan(sampled, ["anthropic"], [])
    locomo_bench.add_times(rows, timing, in_process(timing.requests, settings_for(overrides)))
    long = [ms for row in rows.values() if row.turns >= LONG_CONVERSATION_TURNS for ms in row.times_ms]
    return {
        "long_compress_ms_p50": locomo_bench.percentile(long, 0.5),
        "long_compress_ms_p95": locomo_bench.percentile(long, 0.95),
        "long_compress_requests": len(long),
    }


def print_locomo(rows: dict[str, locomo_bench.Row], timing: dict[str, Any], mode: str) -> dict[str, Any]:
    """The LoCoMo table and the timing line; the figures of both."""
    summed = locomo_bench.print_table(rows, mode)
    print(
        f"compress() on the {LONG_CONVERSATION_TURNS}+ turn conversations, warm session: "
        f"p50 {timing['long_compress_ms_p50'] or '-'} ms, p95 {timing['long_compress_ms_p95'] or '-'} ms "
        f"({timing['long_compress_requests']} Anthropic question requests)."
    )
    return {"total": summed.figures(), "rows": {n: r.figures() for n, r in rows.items()}, **timing}


def targets(figures: dict[str, Any]) -> list[tuple[str, bool]]:
    """Issue 10's targets on the dev data, each with whether this run met it."""
    out: list[tuple[str, bool]] = []
    agent = figures.get("agent", {})
    if "markers" in agent:
        mk = agent["markers"]
        out.append(("agent, markers: warm cost <= 1.00x", mk["warm_cost_ratio"] <= 1.0))
        out.append(("agent, markers: support >= 95%", mk["support"] >= 0.95))
    if "no-markers" in agent:
        nm = agent["no-markers"]
        out.append(("agent, no markers: tokens <= 0.60x", nm["cold_cost_ratio"] <= 0.6))
        out.append(("agent, no markers: support >= 90%", nm["support"] >= 0.90))
    if agent:
        out.append(("agent: 100% valid", all(v["valid"] == 1 for v in agent.values())))
    locomo = figures.get("locomo")
    if locomo:
        t = locomo["total"]
        out.append(("LoCoMo: reduction >= 75%", t["reduction"] >= 0.75))
        out.append(("LoCoMo: evidence recall >= 90%", t["evidence_recall"] >= 0.90))
        out.append(("LoCoMo: fact coverage >= 30%", t["fact_coverage"] >= 0.30))
        out.append(("LoCoMo: turn-by-turn warm cost <= 0.80x", t["turn_warm_cost_ratio"] <= 0.8))
        out.append(("LoCoMo: 100% valid", t["valid"] == 1))
        p50 = locomo["long_compress_ms_p50"]
        out.append(("compress() p50 <= 20 ms on 600+ turns", p50 is not None and p50 <= 20))
    return out


def frontier_figures(
    args: argparse.Namespace,
    base: dict[str, str],
    agents: dict[str, list[AgentSession]],
    conversations: list[Conversation],
) -> dict[str, Any]:
    """The frontier's points, each the run's settings with its own overrides."""
    points: dict[str, dict[str, str]] = {}
    for text in ["", *(args.point or frontier.DEFAULT_POINTS)]:
        point = frontier.parse_point(text)
        unknown = frontier.unknown_keys(point)
        if unknown:
            print(f"frontier point {text!r} skipped: no setting {', '.join(unknown)}", file=sys.stderr)
            continue
        points[text or "the run's settings"] = {
            **{k.removeprefix("compression_"): v for k, v in base.items()},
            **point,
        }
    prepared = frontier.inputs(agents, conversations, args.frontier_full)
    figures = frontier.measure_all(points, prepared, args.jobs)
    frontier.print_frontier(figures, prepared.description)
    return figures


def _assignments(text: str) -> str:
    """An argparse type: `key=value`, or several joined by commas."""
    if not all("=" in item for item in text.split(",")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE (or KEY=VALUE,KEY=VALUE)")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="What compression gives users: agent sessions and LoCoMo.")
    parser.add_argument("--locomo", default=DEFAULT_LOCOMO, help="locomo-dev.json (read, never copied)")
    parser.add_argument("--swe-agent", default=DEFAULT_SWE_AGENT, help="folder of *.traj.json sessions")
    parser.add_argument("--only", choices=("agent", "locomo"), help="one data set only")
    parser.add_argument("--sessions", type=int, default=0, help="at most this many agent sessions")
    parser.add_argument("--variant", choices=AGENT_VARIANTS, help="agent sessions: one variant only")
    parser.add_argument("--questions", type=int, default=0, help="at most this many questions each")
    parser.add_argument("--providers", default="anthropic,openai", help="LoCoMo questions: anthropic,openai")
    parser.add_argument("--in-process", action="store_true", help="call compress() directly, no proxy")
    parser.add_argument("--frontier", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--frontier-full", action="store_true", help="the frontier on every LoCoMo question and turn"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes at once: LoCoMo and the agent variants side by side, then the frontier's points",
    )
    parser.add_argument(
        "--point",
        action="append",
        type=_assignments,
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="a frontier point (repeatable; replaces the default points)",
    )
    parser.add_argument(
        "--set",
        action="append",
        type=_assignments,
        default=[],
        metavar="KEY=VALUE",
        help="a [compression] setting for this run, e.g. --set recall_budget_tokens=3000",
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure of the run to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    route_vidurai_logs(debug=False)  # as the proxy does at its default level, info
    paths = {"agent": Path(args.swe_agent), "locomo": Path(args.locomo)}
    for name, path in paths.items():
        if args.only in (None, name) and not path.exists():
            print(f"{path}: no such file or folder (pass --{name.replace('agent', 'swe-agent')} PATH)")
            return 2
    overrides = {f"compression_{k}": v for item in args.set for k, v in frontier.parse_point(item).items()}
    try:  # every setting checked before the first request, not minutes into the run
        settings_for(overrides)
        for point in args.point or ():
            settings_for({f"compression_{k}": v for k, v in frontier.parse_point(point).items()})
    except ConfigError as exc:
        print(f"bench.compression: {exc}", file=sys.stderr)
        return 2
    run = Run(overrides, proxied=not args.in_process)
    started = time.monotonic()
    print(f"Settings: {settings_for(overrides)}")
    figures: dict[str, Any] = {"settings": attrs.asdict(settings_for(overrides)), "mode": run.mode}
    agents: dict[str, list[AgentSession]] = {}
    if args.only != "locomo":
        variants = [args.variant] if args.variant else AGENT_VARIANTS
        agents = {v: load_sessions(paths["agent"], v == "markers", args.sessions) for v in variants}
    conversations: list[Conversation] = []
    jobs: list[Callable[[], Any]] = []
    if args.only != "agent":
        conversations = load_locomo(paths["locomo"])
        if args.questions:
            conversations = [attrs.evolve(c, questions=c.questions[: args.questions]) for c in conversations]
        providers = [p.strip() for p in args.providers.split(",") if p.strip()]
        plan = locomo_bench.plan(conversations, providers, conversations)
        jobs.append(functools.partial(locomo_rows, run, plan))  # the longest job: first
    jobs += [functools.partial(agent_figures, run, variant, sessions) for variant, sessions in agents.items()]
    results = run_all(jobs, args.jobs)  # side by side: LoCoMo, and the agent variants
    rows, locomo_summaries = results.pop(0) if conversations else (None, None)
    summaries: dict[str, dict[str, Any]] = {}
    if agents:
        figures["agent"] = dict(zip(agents, results, strict=True))
        agent_bench.print_table(figures["agent"], run.mode)
        summaries = {
            f"agent, {v}": f.pop("summaries") for v, f in figures["agent"].items() if "summaries" in f
        }
    if rows is not None:
        figures["locomo"] = print_locomo(rows, add_timing(rows, conversations, overrides), run.mode)
        if locomo_summaries is not None:
            summaries["LoCoMo"] = locomo_summaries
    if summaries:
        figures["summaries"] = summaries
        summary_cost.print_table(summaries)
    if args.frontier:
        figures["frontier"] = frontier_figures(args, overrides, agents, conversations)
    met = targets(figures)
    figures["targets"] = dict(met)
    print("\nTargets (issue 10): " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in met))
    print(f"Run took {time.monotonic() - started:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
