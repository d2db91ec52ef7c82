"""A small frontier: what the main settings trade, quality against cost, with compress() in-process.

Each point is the run's settings with a few overridden; each is played on the agent sessions (with
and without cache markers) and on LoCoMo (Anthropic: questions, neutral message, turn by turn).
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from proxy.config import CompressionConfig

from . import agent_bench, locomo_bench
from .agent_sessions import AgentSession
from .locomo import Conversation
from .parallel import run_all
from .replay import in_process, settings_for

# The frontier's LoCoMo sample (unless --frontier-full): every fifth question, and turn by turn on
# the two shortest conversations, which keeps a point to seconds.
QUESTION_STRIDE = 5
TURN_CONVERSATIONS = 2
# Around the defaults of proxy/config.py: a longer verbatim tail, smaller and bigger fold steps,
# longer old tool results kept, a smaller recall block.
DEFAULT_POINTS = (
    "keep_recent=12",
    "chunk_messages=10",
    "chunk_messages=40",
    "tool_result_max_tokens=1500",
    "recall_budget_tokens=2000",
)


def parse_point(text: str) -> dict[str, str]:
    """`key=value,key=value` as [compression] overrides."""
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {key.strip(): value.strip() for key, value in pairs}


def unknown_keys(point: dict[str, str]) -> list[str]:
    fields = {f.name for f in attrs.fields(CompressionConfig)}
    return [key for key in point if key not in fields]


@attrs.frozen
class Inputs:
    """The requests every point plays, prepared once: agent sessions by variant, and a LoCoMo plan."""

    agents: dict[str, list[AgentSession]]
    locomo: locomo_bench.Plan | None
    description: str


def inputs(agents: dict[str, list[AgentSession]], conversations: list[Conversation], full: bool) -> Inputs:
    """All agent sessions; LoCoMo on Anthropic, in full or (the default, to stay fast) every
    QUESTION_STRIDE-th question and turn by turn on the TURN_CONVERSATIONS shortest conversations."""
    if not conversations:
        return Inputs(agents, None, "")
    if full:
        plan = locomo_bench.plan(conversations, ["anthropic"], conversations)
        return Inputs(agents, plan, "LoCoMo: every question; turn by turn on every conversation")
    sampled = [attrs.evolve(c, questions=c.questions[::QUESTION_STRIDE]) for c in conversations]
    shortest = sorted(conversations, key=lambda c: c.turns)[:TURN_CONVERSATIONS]
    plan = locomo_bench.plan(sampled, ["anthropic"], shortest)
    names = ", ".join(c.name for c in shortest)
    return Inputs(agents, plan, f"LoCoMo: every {QUESTION_STRIDE}th question; turn by turn on {names}")


def measure(overrides: dict[str, str], prepared: Inputs) -> dict[str, Any]:
    """One point's figures: per agent variant and for LoCoMo on Anthropic."""
    settings = settings_for({f"compression_{k}": v for k, v in overrides.items()})
    figures: dict[str, Any] = {}
    for variant, sessions in prepared.agents.items():
        forwarded = in_process(agent_bench.requests_of(sessions, variant), settings)
        figures[variant] = agent_bench.tally(sessions, forwarded).figures()
    if prepared.locomo is not None:
        rows = locomo_bench.tally(prepared.locomo, in_process(prepared.locomo.requests, settings))
        figures["locomo"] = locomo_bench.total(rows).figures()
    return figures


def measure_all(points: dict[str, dict[str, str]], prepared: Inputs, jobs: int) -> dict[str, Any]:
    """Every point's figures, the points played in up to `jobs` processes at once."""
    results = run_all([functools.partial(measure, o, prepared) for o in points.values()], jobs)
    return dict(zip(points, results, strict=True))


HEADER = (
    f"{'point':<30} {'mk support':>10} {'mk warm':>7} {'nm support':>10} {'nm tokens':>9} "
    f"{'reduction':>9} {'recall':>7} {'coverage':>8} {'lc warm':>7}"
)


def _agent_cells(figures: dict[str, Any] | None, cost: str) -> str:
    if figures is None:
        return f"{'-':>10} {'-':>7}" if cost == "warm_cost_ratio" else f"{'-':>10} {'-':>9}"
    width = 6 if cost == "warm_cost_ratio" else 8
    return f"{figures['support']:>10.1%} {figures[cost]:>{width}.2f}x"


def row(name: str, figures: dict[str, Any]) -> str:
    lc = figures.get("locomo")
    locomo = f"{'-':>9} {'-':>7} {'-':>8} {'-':>7}"
    if lc is not None:
        locomo = (
            f"{lc['reduction']:>9.1%} {lc['evidence_recall']:>7.1%} {lc['fact_coverage']:>8.1%} "
            f"{lc['turn_warm_cost_ratio']:>6.2f}x"
        )
    return (
        f"{name:<30} {_agent_cells(figures.get('markers'), 'warm_cost_ratio')} "
        f"{_agent_cells(figures.get('no-markers'), 'cold_cost_ratio')} {locomo}"
    )


def print_frontier(points: dict[str, dict[str, Any]], description: str) -> None:
    print("\nFrontier, compress() in-process (each point: the run's settings with these overridden).")
    print("mk: agent sessions with cache markers, support and warm cost; nm: without markers, support")
    print("and tokens; then LoCoMo on Anthropic: reduction, evidence recall, fact coverage, and the")
    print("warm input cost turn by turn. Costs are forwarded over original.")
    print(f"Agent: every session of the run. {description}.\n" if description else "")
    print(HEADER + "\n" + "-" * len(HEADER))
    for name, figures in points.items():
        print(row(name, figures))
