"""sse.event_data: the data of a whole event read from its bytes, as the decoder reads it."""

from __future__ import annotations

import pytest

from proxy.sse import decode_event, event_data


@pytest.mark.parametrize(
    "raw",
    [
        b'event: message_start\ndata: {"type":"message_start"}',
        b"data:x\ndata: y\n: a comment\nid: 3",
        b"\ndata",
        b"data: \xe2\x82",  # a character cut short: replaced, as the decoder does
        b"event: ping",
        b"datax: 1\ndata: ok\n\n",
    ],
)
def test_event_data_is_what_the_decoder_reads(raw: bytes) -> None:
    assert event_data(raw) == decode_event(raw + b"\n\n").data
