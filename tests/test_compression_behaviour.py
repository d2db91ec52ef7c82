"""When compression runs, what stays stable across turns and restarts, whose content it adds, failing open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.compression import SessionMemory
from proxy.compression.structure import problems
from proxy.providers import Anthropic, OpenAI
from proxy.tokens import estimate_request
from tests.compression_support import (
    CLAUDE_CACHE,
    anthropic_agent,
    anthropic_chat,
    openai_agent,
    run,
    settings,
    texts,
)


def _prefix(body: dict[str, Any]) -> str:
    """The folded part of a forwarded Anthropic request: its first message, the task and the digests."""
    return json.dumps(body["messages"][0], sort_keys=True)


def test_small_requests_pass_through() -> None:
    few_messages = anthropic_chat(6)
    result = run("anthropic", few_messages)
    assert (result.body, result.reason) == (None, "below_threshold")
    assert result.tokens_forwarded_est == result.tokens_original_est == estimate_request(few_messages)
    short_turns = {
        **anthropic_chat(30),
        "messages": [{"role": r, "content": "hi"} for r in ["user", "assistant"] * 15],
    }
    assert run("anthropic", short_turns).reason == "below_threshold"
    assert run("anthropic", anthropic_chat(61), config=settings(enabled=False)).reason == "disabled"


def test_result_reports_counts_and_estimates() -> None:
    body = anthropic_chat(61)
    result = run("anthropic", body)
    assert result.reason == "compressed" and result.body is not None
    assert result.messages_original == len(body["messages"])
    assert result.messages_forwarded == len(result.body["messages"])
    # The digests join the task's own message: every other message they stand for is one fewer.
    assert result.messages_folded == result.messages_original - result.messages_forwarded
    assert result.tokens_original_est == estimate_request(body)
    assert result.tokens_forwarded_est == estimate_request(result.body) < result.tokens_original_est


def test_prefix_is_byte_identical_from_turn_to_turn_until_the_next_chunk_folds() -> None:
    memory = SessionMemory("s")
    full = anthropic_chat(140)["messages"]
    previous: dict[str, Any] | None = None
    folds = 0
    for end in range(40, 140, 2):  # the conversation as it grows, one exchange per request
        body = {**anthropic_chat(2), "messages": [*full[:end], {"role": "user", "content": "And sailing?"}]}
        result = run("anthropic", body, memory, prices=CLAUDE_CACHE)
        if result.body is None:  # no fold has paid yet: forwarded as sent
            assert result.reason == "no_fold_pays" and previous is None
            continue
        assert problems(Anthropic.shape, result.body["messages"]) == []
        if previous is not None:
            before, now = previous["messages"][0]["content"], result.body["messages"][0]["content"]
            if len(now) == len(before):
                assert _prefix(result.body) == _prefix(previous)
                # ...and everything after the digests up to the previous latest message, too.
                kept = len(previous["messages"]) - 1
                same = json.dumps(previous["messages"][: kept - 1])
                assert json.dumps(result.body["messages"][: kept - 1]) == same
            else:
                folds += 1
                # New digest blocks at the end; the task and the earlier digests are intact.
                assert len(now) > len(before) and now[: len(before)] == before
        previous = result.body
    assert folds >= 2


def test_same_prefix_after_restart_and_on_another_instance() -> None:
    body = anthropic_chat(81)
    warm = SessionMemory("s")
    first = run("anthropic", body, warm)
    restored = SessionMemory.restore("s", warm.snapshot())
    fresh = SessionMemory("s")
    for memory in (warm, restored, fresh):
        again = run("anthropic", body, memory)
        assert again.body is not None and first.body is not None
        assert json.dumps(again.body) == json.dumps(first.body)


def test_snapshot_restores_the_memory_and_rows_drain_once() -> None:
    memory = SessionMemory("s")
    run("anthropic", anthropic_chat(81), memory)
    rows = memory.drain_memory_rows()
    assert rows and memory.drain_memory_rows() == []
    assert {r.kind for r in rows} == {"turn", "digest"} and all(r.session_id == "s" for r in rows)
    assert len({r.content_sha for r in rows if r.kind == "turn"}) == sum(r.kind == "turn" for r in rows)
    snapshot = memory.snapshot()
    assert "vidurai" not in json.loads(snapshot)  # no copy of the turns that nothing reads
    restored = SessionMemory.restore("s", snapshot)
    assert restored.index.texts == memory.index.texts and restored.index.texts  # recall's units
    assert restored.snapshot() == snapshot
    run("anthropic", anthropic_chat(81), restored)
    assert restored.drain_memory_rows() == []  # nothing new: the snapshot had it all
    with pytest.raises(ValueError):
        SessionMemory.restore("s", json.dumps({"version": 999}))


def test_nothing_from_another_conversation_is_added() -> None:
    secret = "The vault code for the Zanzibar account is 7781-KESTREL, keep it safe."
    other = anthropic_chat(61, question="What is the Zanzibar vault code?")
    other["messages"][2] = {"role": "user", "content": secret}
    shared = SessionMemory("one-session-two-histories")  # even a memory that saw it must not leak it
    assert run("anthropic", other, shared).body is not None
    mine = anthropic_chat(61, question="What is the Zanzibar vault code?")
    for memory in (shared, SessionMemory("mine")):
        result = run("anthropic", mine, memory)
        assert result.body is not None
        forwarded = " ".join(texts(result.body))
        assert "KESTREL" not in forwarded and "7781" not in forwarded
    isolated = SessionMemory("tenant-b")
    assert "KESTREL" not in isolated.snapshot()


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b["messages"].insert(5, "not a message"),
        lambda b: b["messages"].insert(5, None),
        lambda b: b["messages"][5].pop("content"),
        lambda b: b["messages"][5].update(content=12345),
        lambda b: b["messages"][5].update(
            content=[{"type": "mystery", "payload": [1, 2, 3]}, "bare string", 7]
        ),
        lambda b: b["messages"][5].update(role="narrator"),
        lambda b: b.update(messages="not a list"),
        lambda b: b.update(messages={"role": "user"}),
        lambda b: b.update(messages=[]),
        lambda b: b["messages"][5].update(content=[{"type": "tool_result", "tool_use_id": "gone"}]),
    ],
)
def test_malformed_requests_fail_open(make: Any) -> None:
    body = anthropic_chat(61)
    make(body)
    result = run("anthropic", body)
    if result.body is None:
        assert result.reason.startswith(
            ("invalid:", "input:", "failed_open:", "below_threshold", "not_smaller")
        )
    else:
        assert result.reason == "compressed"
        assert [
            p
            for p in problems(Anthropic.shape, result.body["messages"])
            if p not in problems(Anthropic.shape, body["messages"])
        ] == []


def test_images_documents_and_unusual_blocks_compress_validly() -> None:
    body = anthropic_chat(61)
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo" * 50},
    }
    document = {
        "type": "document",
        "title": "Lease.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0" * 50},
    }
    body["messages"][2] = {"role": "user", "content": [image, {"type": "text", "text": "my cat"}, document]}
    body["messages"][3] = {
        "role": "assistant",
        "content": [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "nice cat"},
            {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "cats"}},
            {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": []},
        ],
    }
    body["messages"][-1] = {"role": "user", "content": [image, {"type": "text", "text": "Is this my cat?"}]}
    result = run("anthropic", body)
    assert result.reason == "compressed" and result.body is not None
    assert problems(Anthropic.shape, result.body["messages"]) == []
    digests = json.dumps(result.body["messages"][0])
    assert "[image]" in digests and "Lease.pdf" in digests
    assert result.body["messages"][-1]["content"][0] is image  # the latest attachment goes through untouched


def test_openai_unusual_content_compresses_validly() -> None:
    body = openai_agent(12)
    body["messages"][3]["content"] = [
        {"type": "text", "text": "part"},
        {"type": "image_url", "image_url": {"url": "data:x"}},
    ]
    body["messages"].insert(9, {"role": "developer", "content": "Prefer short answers."})
    result = run("openai", body)
    assert result.reason == "compressed" and result.body is not None
    out = result.body["messages"]
    assert problems(OpenAI.shape, out) == []
    assert {"role": "developer", "content": "Prefer short answers."} in out  # instructions are never folded


def test_exception_inside_fails_open_with_a_warning() -> None:
    from structlog.testing import capture_logs

    body = anthropic_chat(61)
    body["messages"][5] = {"role": "assistant", "content": [{"type": "text", "text": "x", "odd": {1, 2}}]}
    with capture_logs() as logs:
        result = run("anthropic", body)
    assert result.body is None and result.reason == "failed_open:TypeError"
    warning = [e for e in logs if e["log_level"] == "warning"]
    assert warning and warning[0]["error"] == "TypeError" and "x" not in json.dumps(warning[0], default=str)


def test_agent_session_with_large_tool_results_shrinks_by_a_third() -> None:
    memory = SessionMemory("agent")
    first = anthropic_agent(20, thinking=False)
    result = run("anthropic", first, memory)
    assert result.body is not None
    assert result.tokens_forwarded_est < 0.67 * result.tokens_original_est


def test_same_forwarded_body_in_another_process(tmp_path: Path) -> None:
    """Another proxy instance (its own hash seed, a fresh memory) forwards the very same bytes."""
    script = (
        "import json, logging, sys, structlog\n"
        "structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))\n"
        "from proxy.compression import SessionMemory, compress, route_vidurai_logs\n"
        "from proxy.providers import Anthropic\n"
        "from tests.compression_support import SETTINGS, anthropic_chat\n"
        "route_vidurai_logs()\n"
        "result = compress(Anthropic.shape, anthropic_chat(81), SessionMemory('other'), SETTINGS)\n"
        "sys.stdout.write(json.dumps(result.body))\n"
    )
    here = run("anthropic", anthropic_chat(81))
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HOME": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).parent.parent,
            timeout=60,
            check=True,
        )
        assert done.stdout == json.dumps(here.body)


def test_vidurai_writes_nothing_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    memory = SessionMemory("home")
    run("anthropic", anthropic_chat(81), memory)
    SessionMemory.restore("home", memory.snapshot())
    assert list(tmp_path.iterdir()) == []
