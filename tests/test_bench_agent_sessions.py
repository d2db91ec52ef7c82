"""The benchmark's agent-session conversion and next-action support (bench/agent_sessions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.agent_sessions import convert
from bench.identifiers import Support, identifiers, occurs, old_only
from bench.measures import valid

TRAJECTORY = {
    "messages": [
        {"role": "system", "content": "You run one command per turn."},
        {"role": "user", "content": "Fix URLValidator."},
        {"role": "assistant", "content": "THOUGHT: Find it.\n\n```bash\ngrep -rn URLValidator django\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\ndjango/core/validators.py:60"},
        {"role": "assistant", "content": "THOUGHT: two at once\n\n```bash\nls\n```\n\n```bash\npwd\n```"},
        {"role": "user", "content": "Please always provide EXACTLY ONE action."},
        {"role": "assistant", "content": "```bash\nsed -n '55,70p' django/core/validators.py\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\nclass URLValidator(RegexValidator):"},
    ]
}


def markers(value: Any) -> int:
    if isinstance(value, dict):
        return ("cache_control" in value) + sum(markers(v) for v in value.values())
    if isinstance(value, list):
        return sum(markers(v) for v in value)
    return 0


def test_each_assistant_turn_is_a_step_with_the_history_before_it() -> None:
    session = convert("t", TRAJECTORY, markers=True)
    assert [len(s.body["messages"]) for s in session.steps] == [1, 3, 5]
    assert [s.needed for s in session.steps] == [frozenset(), frozenset(), frozenset()]  # history too short
    assert [s.next_command for s in session.steps] == [
        "grep -rn URLValidator django",
        None,  # two bash blocks: mini-swe-agent rejected the turn, nothing ran
        "sed -n '55,70p' django/core/validators.py",
    ]
    last = session.steps[2].body
    assert last["system"] == [
        {"type": "text", "text": "You run one command per turn.", "cache_control": {"type": "ephemeral"}}
    ]
    assert [t["name"] for t in last["tools"]] == ["bash"]
    thought, call = last["messages"][1]["content"]
    assert thought == {"type": "text", "text": "THOUGHT: Find it."}
    assert call["input"] == {"command": "grep -rn URLValidator django"}
    result = last["messages"][2]["content"][0]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", call["id"])
    plain = last["messages"][3]["content"]
    assert plain == [{"type": "text", "text": TRAJECTORY["messages"][4]["content"]}]
    assert last["messages"][4]["content"] == [
        {
            "type": "text",
            "text": "Please always provide EXACTLY ONE action.",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert markers(last) == 2  # the system block and the last block, as Claude Code marks
    assert valid("anthropic", last, last)


def test_without_markers_nothing_is_marked() -> None:
    session = convert("t", TRAJECTORY, markers=False)
    assert all(markers(s.body) == 0 for s in session.steps)


def test_identifiers_are_paths_dotted_names_long_words_and_numbers_not_shell_words() -> None:
    assert identifiers("sed -n '210,225p' django/db/models/query.py") == {
        "210",
        "225",
        "django/db/models/query.py",
    }
    assert identifiers("grep -rn --include=*.py URLValidator django.core.validators") == {
        "URLValidator",
        "django.core.validators",
    }
    assert identifiers("python3 reproduce_issue.py && cat /tmp/out.txt | head -5") == {
        "reproduce_issue.py",
        "tmp/out.txt",
    }


def test_occurs_only_as_a_whole_word_or_number() -> None:
    assert occurs("query", "see the query.")
    assert not occurs("query", "a queryset")
    assert occurs("97", "    97\tregex = x")
    assert not occurs("97", "line 197")
    assert occurs("django/db/models/query.py", "/testbed/django/db/models/query.py:12")


def _body(old: str, recent: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": old}]
    messages += [{"role": ("assistant", "user")[i % 2], "content": recent} for i in range(7)]
    return {"system": [{"type": "text", "text": "Use AGENTS.md"}], "messages": messages}


def test_only_identifiers_that_only_older_history_holds_count() -> None:
    body = _body(old="django/db/models/query.py URLValidator AGENTS.md", recent="URLValidator again")
    command = "cat django/db/models/query.py AGENTS.md URLValidator missing_name"
    # URLValidator is in the last six messages, AGENTS.md in the system prompt, missing_name nowhere.
    assert old_only(command, body) == {"django/db/models/query.py"}


def test_support_counts_identifiers_kept_and_steps_with_all_of_them() -> None:
    body = _body(old="alpha_name beta_name", recent="nothing here")
    needed = frozenset(old_only("grep alpha_name beta_name", body))
    assert needed == {"alpha_name", "beta_name"}
    support = Support()
    support.add(needed, body)  # uncompressed: everything kept
    folded = {**body, "messages": [{"role": "user", "content": "beta_name"}, *body["messages"][1:]]}
    support.add(needed, folded)  # alpha_name folded away
    support.add(frozenset(), folded)  # no command ran, or none only older history held
    assert (support.identifiers, support.kept, support.steps, support.full) == (4, 3, 2, 1)


def test_a_trajectory_whose_roles_do_not_alternate_is_refused() -> None:
    broken = {"messages": [*TRAJECTORY["messages"][:2], {"role": "user", "content": "again"}]}
    with pytest.raises(ValueError, match="messages 1 and 2 are both user"):
        convert("broken", broken, markers=True)
