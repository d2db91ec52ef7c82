"""Model-written chunk summaries: Vidurai's SemanticCompressor, its LLM calls made by the proxy.

compress() hands over the whole chunks that have no summary yet (compression/summaries.py); each is
summarised once, in the background, never holding up the request that asked: Vidurai's
SemanticCompressor builds the prompt and reads the answer, and its LLMClient is the proxy's, which
calls the configured upstream through the proxy's own HTTP session with the requesting client's
own key and the configured summary model. Every call is one `requests` row (endpoint `summary`, the
session and tenant of the request that asked), priced, its cost counted as negative savings. A
failed or slow call leaves the chunk's extractive digest in place and logs one warning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDict
from vidurai.core.data_structures_v2 import CompressionResult, CompressionWindow, Message
from vidurai.core.semantic_compressor_v2 import LLMClient, SemanticCompressor

from .compression.summaries import SummaryJob
from .config import CompressionConfig
from .pricing import PriceTable
from .prom import PromMetrics
from .providers import Provider
from .records import RequestRecord
from .storage import Store, SummaryStore
from .tokens import count_text

log = structlog.get_logger(__name__)

ENDPOINT = "summary"
# Summary calls at once per process: each holds a thread while Vidurai waits for its answer, in a
# pool of their own so compress() never waits behind them.
MAX_CALLS = 4
# The client's headers a summary call carries: its credentials and the API version it speaks.
FORWARDED_HEADERS = (
    "x-api-key",
    "authorization",
    "anthropic-version",
    "openai-organization",
    "openai-project",
)


class SummaryFailed(Exception):
    """A summary call gave no summary; the message says why, for the log."""


class ProxyLLMClient(LLMClient):  # type: ignore[misc]  # vidurai ships no type hints
    """Vidurai's LLMClient whose `compress(text, system_prompt)` is one call made by the proxy."""

    def __init__(self, provider: str, model: str, call: Any) -> None:
        super().__init__(provider=provider, model=model)
        self._call = call

    def compress(self, text: str, system_prompt: str = "") -> str:
        result: str = self._call(text, system_prompt)
        return result


class Summarizer:
    """Summarises chunks in the background, at most one call per chunk at a time in this process."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        providers: Mapping[str, Provider],
        store: Store,
        prices: PriceTable,
        prom: PromMetrics,
        settings: CompressionConfig,
        enabled: bool,
    ) -> None:
        self._http, self._providers = http, providers
        self._store, self._book = store, store.summaries()
        self._prices, self._prom = prices, prom
        self._settings = settings
        self.enabled = enabled
        self._pool = concurrent.futures.ThreadPoolExecutor(MAX_CALLS, thread_name_prefix="vidurai-summary")
        self._slots = asyncio.Semaphore(MAX_CALLS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._calls: set[concurrent.futures.Future[str]] = set()
        self._pending: set[str] = set()

    @property
    def book(self) -> SummaryStore | None:
        """Where compress() reads summaries, None when digests are extractive only."""
        return self._book if self.enabled else None

    def submit(
        self, jobs: tuple[SummaryJob, ...], headers: Mapping[str, str], session_id: str, tenant: str
    ) -> None:
        """Start summarising these chunks; returns at once."""
        if not self.enabled:
            return
        sent = CIMultiDict((k, v) for k, v in headers.items() if k.lower() in FORWARDED_HEADERS)
        for job in jobs:
            if job.key in self._pending:
                continue
            self._pending.add(job.key)
            task = asyncio.create_task(self._summarize(job, sent, session_id, tenant), name="vidurai-summary")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _summarize(
        self, job: SummaryJob, headers: CIMultiDict[str], session_id: str, tenant: str
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._slots:
                if await loop.run_in_executor(self._pool, self._book.summaries, [job.key]):
                    return  # another instance, or this one for another memory, wrote it meanwhile
                model = self._model(job)
                result = await loop.run_in_executor(
                    self._pool, self._compress, job, model, headers, session_id, tenant, loop
                )
                if not result.success:
                    log.warning(
                        "summary failed; the chunk keeps its extractive digest",
                        chunk=job.key[:12],
                        model=model,
                        error=result.error,
                    )
                    return
                summary = result.compressed_memory.content.strip()
                at = time.time()
                await loop.run_in_executor(
                    self._pool, self._book.add_summary, job.key, session_id, model, summary, at
                )
        except Exception:  # a database error costs the summary only
            log.exception("summary not stored", chunk=job.key[:12])
        finally:
            self._pending.discard(job.key)

    def _model(self, job: SummaryJob) -> str:
        return self._providers[job.provider].summary_model(self._settings)

    def _compress(
        self,
        job: SummaryJob,
        model: str,
        headers: CIMultiDict[str],
        session_id: str,
        tenant: str,
        loop: asyncio.AbstractEventLoop,
    ) -> CompressionResult:
        """In a pool thread: Vidurai's SemanticCompressor on the chunk, its one LLM call on the loop."""

        def call(text: str, system: str) -> str:
            coroutine = self._call(job.provider, model, system, text, headers, session_id, tenant)
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
            self._calls.add(future)
            try:
                return future.result()
            finally:
                self._calls.discard(future)

        messages = [Message(role=role, content=text, tokens=count_text(text)) for role, text in job.lines]
        window = CompressionWindow(
            messages=messages,
            start_index=0,
            end_index=len(messages),
            total_tokens=sum(m.tokens for m in messages),
        )
        compressor = SemanticCompressor(llm_client=ProxyLLMClient(job.provider, model, call))
        result: CompressionResult = compressor.compress_window(window)
        return result

    async def _call(
        self,
        provider_name: str,
        model: str,
        system: str,
        text: str,
        headers: CIMultiDict[str],
        session_id: str,
        tenant: str,
    ) -> str:
        """One summary request upstream, recorded as its own `requests` row whatever happens."""
        provider = self._providers[provider_name]
        path, body = provider.summary_call(model, system, text)
        sent = CIMultiDict(headers)
        for name, value in provider.summary_headers.items():
            sent.setdefault(name, value)
        record = RequestRecord(
            id=os.urandom(16).hex(),
            created_at=time.time(),
            provider=provider_name,
            endpoint=ENDPOINT,
            method="POST",
            path=path,
            session_id=session_id,
            tenant=tenant,
            model=model,
        )
        started = time.monotonic()
        timeout = self._settings.summary_timeout
        try:
            async with asyncio.timeout(timeout):
                url = provider.upstream_url(path, "")
                async with self._http.post(url, json=body, headers=sent) as response:
                    record.status = response.status
                    payload = await response.json(content_type=None)
            if not isinstance(payload, dict):
                raise SummaryFailed("the answer is not a JSON object")
            provider.read_usage(payload, record.usage)
            if record.status != 200:
                raise SummaryFailed(f"upstream answered {record.status}")
            answer = provider.answer_text(payload)
            if answer is None:
                raise SummaryFailed("the answer has no text")
            return answer
        except TimeoutError:
            record.error = "timeout"
            raise SummaryFailed(f"no answer within {timeout:g} s ([compression] summary_timeout)") from None
        except (aiohttp.ClientError, ValueError) as exc:
            record.error = type(exc).__name__
            raise SummaryFailed(f"{type(exc).__name__} from upstream") from None
        except SummaryFailed as exc:
            record.error = str(exc)
            raise
        finally:
            self._record(record, started)

    def _record(self, record: RequestRecord, started: float) -> None:
        record.duration_ms = round((time.monotonic() - started) * 1000, 3)
        try:
            cost = self._prices.cost(record.model, record.usage)
            record.cost_usd = cost
            # What the summary cost comes off what compression saved this session.
            record.cost_saved_usd = None if cost is None else -cost
            self._prom.observe(record)
        except Exception:  # a pricing or metrics bug must not lose the row
            log.exception("summary bookkeeping failed")
        self._store.add_request(record)

    async def close(self) -> None:
        """Stop the calls under way (their chunks keep the extractive digest) and the pool."""
        for future in list(self._calls):
            future.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def drain(self) -> None:
        """Wait for the summaries under way (tests and the benchmark)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
