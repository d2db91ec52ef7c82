"""The generated conversations of tests/compression_support.py are valid; vidurai's logs reach structlog."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs
from vidurai.core.viveka import VivekaEngine

from proxy.compression import route_vidurai_logs
from proxy.compression.structure import problems
from proxy.providers import Anthropic, OpenAI
from tests.compression_support import anthropic_agent, anthropic_chat, openai_agent


@pytest.fixture(autouse=True, scope="module")
def _quiet_vidurai() -> None:
    route_vidurai_logs()


@pytest.mark.parametrize("body", [anthropic_chat(40), anthropic_agent(12)])
def test_generated_anthropic_conversations_are_valid(body: dict[str, Any]) -> None:
    assert problems(Anthropic.shape, body["messages"]) == []


def test_generated_openai_conversation_is_valid() -> None:
    assert problems(OpenAI.shape, openai_agent(6)["messages"]) == []


def test_vidurai_logs_go_to_structlog_at_debug() -> None:
    try:
        route_vidurai_logs(debug=True)
        with capture_logs() as logs:
            VivekaEngine()  # vidurai logs through loguru as it starts
        assert logs and all(entry["log_level"] == "debug" for entry in logs)
        assert any("Viveka" in entry["event"] for entry in logs)
        route_vidurai_logs(debug=False)  # the proxy logs at info: nothing to format
        with capture_logs() as logs:
            VivekaEngine()
        assert logs == []
    finally:
        route_vidurai_logs(debug=True)
