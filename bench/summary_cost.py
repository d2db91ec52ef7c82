"""What summarizer = model costs a user: the summary calls per conversation, their tokens and cost next
to the conversation's own, as the proxy recorded them (its `requests` rows, endpoint `summary`).

Against the fake upstream the summaries are scripted, so only their count and their input tokens
(the chunks sent to be summarised) are real; their output is a dozen words where a real model writes
up to 500 tokens. What summaries do to recall and coverage needs a real model to measure.
"""

from __future__ import annotations

from typing import Any

from .measures import ratio
from .replay import SessionCalls


def figures(calls: list[SessionCalls]) -> dict[str, Any]:
    """The sums and per-conversation means of one run's sessions."""
    sessions = len(calls)
    summaries = sum(c.summaries for c in calls)
    summary_in = sum(c.summary_input_tokens for c in calls)
    summary_out = sum(c.summary_output_tokens for c in calls)
    own_in = sum(c.input_tokens for c in calls)
    summary_cost = sum(c.summary_cost_usd for c in calls)
    own_cost = sum(c.cost_usd for c in calls)
    return {
        "conversations": sessions,
        "requests": sum(c.requests for c in calls),
        "summary_calls": summaries,
        "summary_calls_per_conversation": round(ratio(summaries, sessions), 2),
        "summary_input_tokens_per_conversation": round(ratio(summary_in, sessions)),
        "summary_output_tokens_per_conversation": round(ratio(summary_out, sessions)),
        "summary_input_share": ratio(summary_in, own_in),  # of the conversation's own input tokens
        "summary_cost_usd_per_conversation": round(ratio(summary_cost, sessions), 6),
        "summary_cost_share": ratio(summary_cost, own_cost),
    }


HEADER = (
    f"{'part':<18} {'convs':>5} {'reqs':>6} {'summaries':>9} {'per conv':>8} {'in tok/conv':>11} "
    f"{'out tok/conv':>12} {'+input':>7} {'$/conv':>9} {'+cost':>6}"
)


def print_table(parts: dict[str, dict[str, Any]]) -> None:
    """One row per part of the run (agent variants, LoCoMo)."""
    print("\nSummary calls (summarizer = model), through the real proxy to the fake upstream: extra")
    print("requests per conversation, the tokens they send and get back, +input: their input tokens")
    print("over the conversation's own upstream input tokens; $/conv at the summary model's price,")
    print("+cost: over the conversation's own cost. The fake's summaries are a dozen words; a real")
    print("model's are up to 500 tokens each.\n")
    print(HEADER + "\n" + "-" * len(HEADER))
    for name, f in parts.items():
        print(
            f"{name:<18} {f['conversations']:>5} {f['requests']:>6} {f['summary_calls']:>9} "
            f"{f['summary_calls_per_conversation']:>8.2f} {f['summary_input_tokens_per_conversation']:>11} "
            f"{f['summary_output_tokens_per_conversation']:>12} {f['summary_input_share']:>7.1%} "
            f"{f['summary_cost_usd_per_conversation']:>9.4f} {f['summary_cost_share']:>6.1%}"
        )
