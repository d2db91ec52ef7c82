"""compress(): a request body in, a smaller valid one out (or None to forward the original)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from ..config import CompressionConfig
from ..tokens import estimate_request, request_tokens
from .chunks import plan, request_ends
from .content import query_text
from .digest import is_header
from .memory import Chunk, SessionMemory, chunk_key
from .policy import UNCACHED, CachePrices, History
from .recall import Candidate, render, select
from .shape import ConversationShape
from .structure import blocks, has_thinking, problems, role, thinking_blocks
from .summaries import EXTRACTIVE, MODEL, MODEL_DIGEST_INTRO, SummaryBook, SummaryJob, fold_key, summary_lines
from .toolcut import cut_tool_results

log = structlog.get_logger(__name__)

# Constant on purpose: the first bytes of the folded prefix must not change when a chunk is added.
DIGEST_INTRO = (
    "[Vidurai proxy: earlier messages, folded to save tokens: their telling lines quoted verbatim, "
    "in order, … marking left-out text. Turns that matter to the latest message are quoted in full "
    "at its end.]"
)


# Half, not all, of the cache reads recall replaces: folds rewrite the cached prefix now and then.
# Chosen with the earlier chunked digests (conv-30 turn by turn with Claude's cache warm: 0.78x
# uncompressed at half, 1.24x at all of it, 3.04x with no limit); with the verbatim digests and
# folds that pay, LoCoMo turn by turn costs 0.71x at half (make bench-compression).
WARM_RECALL_SHARE = 0.5


@attrs.frozen
class CompressionResult:
    """What compress() did; body None means: forward the original bytes unchanged."""

    body: dict[str, Any] | None
    tokens_original_est: int
    tokens_forwarded_est: int
    messages_original: int
    messages_forwarded: int
    messages_folded: int
    reason: str
    summarizers: tuple[str, ...] = ()  # who wrote each folded chunk's digest: "extractive" or "model"
    to_summarize: tuple[SummaryJob, ...] = ()  # whole chunks for the summarizer (summarizer = model)


def _estimate(body: Mapping[str, Any]) -> tuple[list[int], int]:
    try:
        return request_tokens(dict(body))
    except Exception:  # an odd body is counted as zero; compress() then leaves it alone
        return [], 0


def compress(
    shape: ConversationShape,
    body: Mapping[str, Any],
    memory: SessionMemory | None,
    settings: CompressionConfig,
    warm_read_ratio: float | None = None,
    prices: CachePrices = UNCACHED,
    summaries: SummaryBook | None = None,
) -> CompressionResult:
    """Fold old turns of a long conversation; never raises and never changes `body`.

    `shape`: how the provider's messages are read and written (its adapter's `shape`).
    `memory` None: the caller knows there is nothing to fold (below the threshold); only counted.

    `warm_read_ratio`: the cache-read price over the input price when the provider likely still
    caches this conversation (see proxy.prompt_cache), else None. `prices`: what the provider's
    prompt cache charges for this request (UNCACHED when it caches nothing), which decides when a
    fold pays. `summaries`: where model-written digests are kept, with summarizer = model (else None).
    """
    per_message, fixed = _estimate(body)
    original = sum(per_message) + fixed
    count = 0
    try:
        messages = body.get("messages")
        count = len(messages) if isinstance(messages, list) else 0
        tokens = (per_message, fixed)
        book = summaries if settings.summarizer == MODEL else None
        return _compress(shape, body, memory, settings, tokens, prices, warm_read_ratio, book)
    except Exception as exc:
        log.warning("compression failed open", provider=shape.name, error=type(exc).__name__)
        reason = f"failed_open:{type(exc).__name__}"
        return CompressionResult(None, original, original, count, count, 0, reason)


def _unchanged(
    original: int, count: int, reason: str, jobs: tuple[SummaryJob, ...] = ()
) -> CompressionResult:
    if reason.startswith("invalid"):  # our rewrite broke a rule of the provider's: a bug to look at
        log.warning("compression skipped", reason=reason)
    else:  # too small, not worth it, or the client's own choice: normal operation
        log.debug("compression skipped", reason=reason)
    return CompressionResult(None, original, original, count, count, 0, reason, to_summarize=jobs)


def _manages_own_context(body: Mapping[str, Any], messages: list[Any]) -> bool:
    """Anthropic context editing or compaction: the client (or the API for it) decides what the model
    sees, and a second compressor on the same history would undo its cache and its choices."""
    edits = body.get("context_management")
    if isinstance(edits, dict) and edits.get("edits"):
        return True
    return any(isinstance(b, dict) and b.get("type") == "compaction" for m in messages for b in blocks(m))


def _compress(
    shape: ConversationShape,
    body: Mapping[str, Any],
    memory: SessionMemory | None,
    settings: CompressionConfig,
    tokens: tuple[list[int], int],  # each message's estimate, and the system prompt's and tools'
    prices: CachePrices,
    warm_read_ratio: float | None,
    book: SummaryBook | None,
) -> CompressionResult:
    per_message, fixed = tokens
    original = sum(per_message) + fixed
    messages = body.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    if not settings.enabled:
        return _unchanged(original, count, "disabled")
    if not isinstance(messages, list):
        return _unchanged(original, count, "input:messages_not_a_list")
    if memory is None or count < settings.threshold_messages or original <= settings.min_tokens:
        return _unchanged(original, count, "below_threshold")
    if not all(isinstance(m, dict) for m in messages):
        return _unchanged(original, count, "input:message_not_an_object")
    if _manages_own_context(body, messages):
        return _unchanged(original, count, "client_context_management")

    def digest_tokens(a: int, b: int) -> int:
        return memory.chunk(shape, messages[a:b], a).digest_tokens

    # What replaying the fold decisions needs: where earlier requests ended, what each message costs.
    history = History(
        per_message, request_ends(messages), fixed, settings.threshold_messages, settings.min_tokens
    )
    cut = plan(shape, messages, settings.keep_recent, settings.chunk_messages, prices, history, digest_tokens)
    # The part of a chunk reached so far (no cache to keep) is folded now, digested again as it grows.
    chunks = [
        memory.chunk(shape, messages[a:b], a, remember_digest=not (cut.partial and b == cut.folded_end))
        for a, b in cut.chunks
    ]
    intro, writers = DIGEST_INTRO, tuple(EXTRACTIVE for _ in chunks)
    jobs: tuple[SummaryJob, ...] = ()
    if book is not None:
        intro = MODEL_DIGEST_INTRO
        jobs = _summary_jobs(shape, messages, memory, cut.complete, chunks)
        chunks, writers = _summarized(memory, book, chunks, cut.partial, cached=prices != UNCACHED)
    folded_end = cut.folded_end
    out: list[Any] = list(messages[: cut.start])
    if chunks:
        gone = messages[cut.start : folded_end]
        out.extend(m for m in gone if shape.is_instruction(m))  # instructions are kept, not summarised
        # After the task: the constant intro, then one digest per chunk.
        out = shape.with_digests(out, [intro, *(c.digest for c in chunks)], gone, messages[folded_end:])
    if cut.cut_tools:
        out.extend(
            cut_tool_results(shape, m, settings.tool_result_max_tokens)
            for m in messages[folded_end : cut.verbatim]
        )
    else:
        out.extend(messages[folded_end : cut.verbatim])
    out.extend(messages[cut.verbatim :])
    if not chunks and all(a is b for a, b in zip(out, messages, strict=True)):
        return _unchanged(original, count, "no_fold_pays", jobs)
    budget = recall_budget(settings, sum(c.tokens for c in chunks), warm_read_ratio)
    if chunks and budget > 0:
        out[-1] = _with_recall(shape, out[-1], memory, chunks, budget)
    forwarded = {**body, "messages": out}
    why = _check(shape, messages, out)
    if why:
        return _unchanged(original, count, f"invalid:{why}", jobs)
    estimate = estimate_request(forwarded)
    if estimate >= original:
        return _unchanged(original, count, "not_smaller", jobs)
    folded = folded_end - cut.start
    return CompressionResult(
        forwarded, original, estimate, count, len(out), folded, "compressed", writers, jobs
    )


def _summary_jobs(
    shape: ConversationShape,
    messages: list[Any],
    memory: SessionMemory,
    complete: tuple[int, ...],
    folded: list[Chunk],
) -> tuple[SummaryJob, ...]:
    """The whole chunks before the fold limit, folded or not yet, that still want a summary: asked for
    ahead of their fold, so the fold that first takes them can mostly use it."""
    known = {(c.start, c.end): c.key for c in folded}
    spans = {
        known.get((a, b)) or chunk_key(shape, messages[a:b], a): (a, b)
        for a, b in itertools.pairwise(complete)
    }
    return tuple(
        SummaryJob(key, shape.name, summary_lines(shape, messages[spans[key][0] : spans[key][1]]))
        for key in memory.to_summarize(list(spans))
    )


def _summarized(
    memory: SessionMemory, book: SummaryBook, chunks: list[Chunk], partial: bool, cached: bool
) -> tuple[list[Chunk], tuple[str, ...]]:
    """The folded chunks, those whose digest is their summary carrying it (compression/summaries.py):
    with a prompt cache as this fold was first decided, without one every summary stored; and who
    wrote each digest."""
    whole = chunks[:-1] if partial else chunks  # the part of a chunk reached so far has none
    keys = [c.key for c in whole]
    chosen = (memory.fold_summarized(keys, book, fold_key(keys)) if cached else keys) if keys else []
    texts = memory.summaries(chosen, book) if chosen else {}
    used = [attrs.evolve(c, digest=texts[c.key]) if c.key in texts else c for c in chunks]
    return used, tuple(MODEL if c.key in texts else EXTRACTIVE for c in chunks)


def recall_budget(settings: CompressionConfig, folded_tokens: int, warm_read_ratio: float | None) -> int:
    """Tokens the recall block may take.

    Bounded by a share of the folded tokens, so a request that folds little doesn't grow past its
    original. The block follows the client's last cache breakpoint, so every request pays it in
    full; while the provider still caches the conversation, the history it stands in for would have
    been a cache read, so it is then held to WARM_RECALL_SHARE of what those reads would cost.
    """
    budget = min(settings.recall_budget_tokens, int(settings.recall_share * folded_tokens))
    if warm_read_ratio is not None and settings.cache_aware_recall:
        budget = min(budget, int(WARM_RECALL_SHARE * warm_read_ratio * folded_tokens))
    return budget


def _with_recall(
    shape: ConversationShape, message: Any, memory: SessionMemory, chunks: list[Chunk], budget: int
) -> Any:
    """The latest user message with the recalled old turns appended as one more text block."""
    if role(message) != "user":
        return message
    query = query_text(shape, message)
    if not query.strip():
        return message  # an agent step (tool results only): recall would repeat uncached every step
    candidates: list[Candidate] = []
    date: str | None = None
    order = 0
    for chunk in chunks:
        for unit, doc in zip(chunk.units, chunk.docs, strict=True):
            date = unit.date or date
            # A unit its digest quotes whole is there already; a dated header is the date line
            # the recall block writes anyway.
            if unit.text not in chunk.digest and not is_header(unit.text):
                candidates.append(Candidate(order, doc, unit.role, date))
            order += 1
    chosen = select(memory.index, query, candidates, budget)
    if not chosen:
        return message
    return shape.with_text(message, render(memory.index, chosen))


def _check(shape: ConversationShape, messages: list[Any], out: list[Any]) -> str | None:
    """Why the rewritten list is worse than the original for the provider, or None when it is not."""
    found = problems(shape, out)
    if found:  # the client's own mistakes are no reason to forward its original instead
        before = problems(shape, messages)
        new = [p for p in found if p not in before]
        if new:
            return new[0]
    original_thinking = {id(b) for b in thinking_blocks(messages)}
    if any(id(b) not in original_thinking for b in thinking_blocks(out)):
        return "thinking_modified"
    last_assistant = next((m for m in reversed(messages) if role(m) == "assistant"), None)
    if last_assistant is not None and has_thinking(last_assistant):
        kept = {id(b) for b in thinking_blocks(out)}
        if any(id(b) not in kept for b in thinking_blocks([last_assistant])):
            return "latest_thinking_dropped"
    return shape.rewrite_problem(messages, out)
