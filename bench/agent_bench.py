"""The agent-session table: each swe-agent-dev session replayed step by step, with Claude Code's cache
markers (Claude caches, the proxy sees a warm cache) and with every marker removed (nothing cached)."""

from __future__ import annotations

from typing import Any

import attrs

from .agent_sessions import AgentSession
from .cache_cost import PromptCache
from .identifiers import Support
from .measures import ratio, valid
from .replay import Forwarded, Request


@attrs.define
class AgentTally:
    """One variant's figures summed over its sessions."""

    sessions: int = 0
    requests: int = 0
    valid: int = 0
    original: int = 0
    forwarded: int = 0
    warm_original: float = 0.0
    warm_forwarded: float = 0.0
    support: Support = attrs.Factory(Support)

    def add_session(self, session: AgentSession, forwarded: list[dict[str, Any]]) -> None:
        """One session's steps and what upstream got for each, priced through the session's prompt cache
        (the original requests were priced the same way when the session was loaded)."""
        self.sessions += 1
        sent = PromptCache()
        for step, body in zip(session.steps, forwarded, strict=True):
            self.requests += 1
            self.valid += valid("anthropic", step.body, body)
            after = sent.play(body)
            self.original += step.cost.tokens
            self.forwarded += after.tokens
            self.warm_original += step.cost.warm
            self.warm_forwarded += after.warm
            self.support.add(step.needed, body)

    def figures(self) -> dict[str, Any]:
        """Everything the table prints, machine-readable."""
        support = self.support
        return {
            "sessions": self.sessions,
            "requests": self.requests,
            "valid": ratio(self.valid, self.requests),
            "tokens_original": self.original,
            "tokens_forwarded": self.forwarded,
            "reduction": 1 - ratio(self.forwarded, self.original),
            "support": ratio(support.kept, support.identifiers),
            "support_identifiers": support.identifiers,
            "support_steps": support.steps,
            "full_support_steps": ratio(support.full, support.steps),
            "warm_cost_original": round(self.warm_original),
            "warm_cost_forwarded": round(self.warm_forwarded),
            "warm_cost_ratio": ratio(self.warm_forwarded, self.warm_original),
            "cold_cost_ratio": ratio(self.forwarded, self.original),
        }


def requests_of(sessions: list[AgentSession], variant: str) -> list[Request]:
    """Every step of every session, a session after another, each session its own proxy session."""
    return [Request(f"{variant}-{s.name}", "anthropic", step.body) for s in sessions for step in s.steps]


def tally(sessions: list[AgentSession], forwarded: Forwarded) -> AgentTally:
    """The figures of a variant from what upstream got, in the order of requests_of."""
    out = AgentTally()
    start = 0
    for session in sessions:
        end = start + len(session.steps)
        out.add_session(session, forwarded.bodies[start:end])
        start = end
    return out


HEADER = (
    f"{'variant':<16} {'sess':>4} {'reqs':>5} {'valid':>6} {'orig tok':>10} {'fwd tok':>10} "
    f"{'reduction':>9} {'support':>8} {'ids':>5} {'full':>6} {'steps':>5} {'warm cost':>9} {'cold cost':>9}"
)


def row(name: str, figures: dict[str, Any]) -> str:
    f = figures
    return (
        f"{name:<16} {f['sessions']:>4} {f['requests']:>5} {f['valid']:>6.1%} {f['tokens_original']:>10} "
        f"{f['tokens_forwarded']:>10} {f['reduction']:>9.1%} {f['support']:>8.1%} "
        f"{f['support_identifiers']:>5} {f['full_support_steps']:>6.1%} {f['support_steps']:>5} "
        f"{f['warm_cost_ratio']:>8.2f}x {f['cold_cost_ratio']:>8.2f}x"
    )


def print_table(variants: dict[str, dict[str, Any]], mode: str) -> None:
    """The agent-session table, one row per variant."""
    print(f"\nAgent sessions (swe-agent-dev, Claude Code-like), through {mode}.")
    print("Tokens: proxy.tokens estimates summed over all requests. support: identifiers of the next")
    print("command only older history held (ids of them, over steps) still in the forwarded request;")
    print("full: steps with all of them kept. warm cost: input cost with the prompt cache warm, played")
    print("step by step (read 0.1, write 1.25), forwarded over original; cold cost: tokens, forwarded")
    print("over original. Without markers nothing is cached, so its warm cost is its token count.\n")
    print(HEADER + "\n" + "-" * len(HEADER))
    for name, figures in variants.items():
        print(row(name, figures))
