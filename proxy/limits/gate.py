"""The limits on the request path: one admission step before forwarding, one settlement after."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from typing import Any

import structlog
from aiohttp import web

from ..call import Call
from ..pricing import PriceTable
from ..prom import PromMetrics
from ..providers import Provider
from ..records import RequestRecord
from ..sessions import client_key
from ..storage import Store
from ..storage.limits import REJECTED_PREFIX
from .keyring import KEY_PREFIX, KeyRing, VirtualKey
from .limiter import Admission, Count, Limiter, Limits, Rejection, Reservation
from .windows import bounds

log = structlog.get_logger(__name__)

# Output a request without max_tokens (allowed in Chat Completions) is assumed to reserve: a
# common default bound of OpenAI-compatible servers. The settlement corrects it either way.
DEFAULT_OUTPUT_RESERVATION = 4096
# Tenants without a virtual key that /metrics.json lists (the most recently limited ones).
MAX_REPORTED_TENANTS = 200
_HEADER_UNITS = {"requests_per_minute": "requests", "tokens_per_minute": "tokens"}


class Gate:
    """What the request path asks of the limits: may this request go, and what did it cost."""

    def __init__(
        self,
        limiter: Limiter,
        keys: KeyRing,
        defaults: Limits,
        prices: PriceTable,
        store: Store,
        prom: PromMetrics,
    ) -> None:
        self.limiter = limiter
        self.keys = keys
        self.defaults = defaults
        self._prices = prices
        self._store = store
        self._prom = prom
        self._tenants: OrderedDict[str, Limits] = OrderedDict()

    async def admit(self, request: web.Request, call: Call, provider: Provider) -> web.Response | None:
        """None: forward (counters taken, a virtual key swapped); else the answer to send instead."""
        limits = self.defaults
        key = client_key(request.headers)
        if key.startswith(KEY_PREFIX):
            virtual = await self.keys.find(key)
            refusal = _key_refusal(virtual, provider)
            if refusal is not None:
                call.record.status, call.record.error = 401, refusal
                return web.json_response(provider.error_body(401, refusal), status=401)
            assert virtual is not None
            call.upstream_key = virtual.upstream_key()
            limits = virtual.limits.over(self.defaults)
        if not limits.any:
            return None
        self._remember(call.tenant, limits)
        outcome = await self.limiter.admit(call.tenant, limits, self._reservation(call))
        if outcome is None:
            return None
        if isinstance(outcome, Admission):
            call.admission = outcome
            call.limit_headers = _headers(provider, outcome.counts, self.limiter.clock(), taken=True)
            return None
        return self._reject(call, provider, outcome)

    def _reservation(self, call: Call) -> Reservation:
        """Estimated input tokens, and for budgets their price plus max_tokens at the output price."""
        record = call.record
        tokens = record.tokens_forwarded_est or 0
        price = self._prices.price(record.model)
        if price is None:
            return Reservation(tokens, 0.0)
        output = call.max_tokens if call.max_tokens is not None else DEFAULT_OUTPUT_RESERVATION
        return Reservation(tokens, (tokens * price.input + output * price.output) / 1_000_000)

    def _reject(self, call: Call, provider: Provider, rejection: Rejection) -> web.Response:
        record = call.record
        record.status, record.error = rejection.status, REJECTED_PREFIX + rejection.name
        self._prom.limit_rejections.labels(limit=rejection.name).inc()
        self._store.add_audit(
            record.session_id,
            "limit_rejected",
            {"limit": rejection.name, "tenant": call.tenant, "status": rejection.status},
            time.time(),
        )
        if rejection.budget:
            body = provider.quota_error_body(rejection.message)
            headers = {"x-should-retry": "false"}  # both official SDKs stop retrying on it
        else:
            body = provider.error_body(rejection.status, rejection.message)
            seconds = rejection.retry_after or 1.0
            headers = {
                "retry-after": str(math.ceil(seconds)),
                "retry-after-ms": str(math.ceil(seconds * 1000)),
            }
        headers.update(_headers(provider, rejection.counts, self.limiter.clock(), taken=False))
        return web.json_response(body, status=rejection.status, headers=headers)

    def settle(self, call: Call, record: RequestRecord) -> None:
        """The admitted request's actual tokens and dollars replace what it reserved."""
        if call.admission is None:
            return
        usage = record.usage
        tokens = usage.prompt_tokens + (usage.output_tokens or 0)
        self.limiter.settle(call.admission, tokens, record.cost_usd or 0.0)

    def _remember(self, tenant: str, limits: Limits) -> None:
        self._tenants[tenant] = limits
        self._tenants.move_to_end(tenant)
        if len(self._tenants) > MAX_REPORTED_TENANTS:
            self._tenants.popitem(last=False)

    async def seed_spend(self) -> None:
        """Today's and this month's recorded spend into the counters: budgets survive a restart."""
        now = self.limiter.clock()
        day, month = bounds("day", now), bounds("month", now)

        def read() -> tuple[dict[str, float], dict[str, float]]:
            stored = self._store.limits()
            return stored.spend_since(day[0]), stored.spend_since(month[0])

        daily, monthly = await asyncio.to_thread(read)
        await self.limiter.seed(daily, "budget_usd_per_day", day)
        await self.limiter.seed(monthly, "budget_usd_per_month", month)

    async def report(self) -> dict[str, Any]:
        """For /metrics.json: each limited tenant and key, spend against budget, rejections this month."""
        now = self.limiter.clock()
        month_start = bounds("month", now)[0]

        rejected: dict[str, dict[str, int]] = {}
        for tenant, name, count in await asyncio.to_thread(
            self._store.limits().rejections_since, month_start
        ):
            rejected.setdefault(tenant, {})[name] = count
        subjects: dict[str, tuple[VirtualKey | None, Limits]] = {
            tenant: (None, limits) for tenant, limits in self._tenants.items()
        }
        for virtual in self.keys.keys:
            if virtual.revoked_at is None:
                subjects[virtual.tenant] = (virtual, virtual.limits.over(self.defaults))
        rows = []
        for tenant, (key, limits) in subjects.items():
            try:
                usage = await self.limiter.usage(tenant, limits)
            except Exception:  # the store is down: the figures are unknown, the rest still shown
                usage = {}
            rows.append(
                {
                    "tenant": tenant,
                    "key": key.name if key is not None else None,
                    "limits": usage,
                    "rejections_this_month": rejected.get(tenant, {}),
                }
            )
        return {"store": self.health(), "defaults": dict(self.defaults.set()), "subjects": rows}

    def health(self) -> dict[str, Any]:
        limiter = self.limiter
        return {
            "store": limiter.store.name,
            "reachable": limiter.store_reachable,
            "on_store_failure": limiter.on_store_failure,
            "store_failures": limiter.store_failures,
        }


def _key_refusal(virtual: VirtualKey | None, provider: Provider) -> str | None:
    """Why a key that looks like the proxy's own cannot be used, or None if it can."""
    if virtual is None:
        return (
            "Unknown virtual key: this proxy never issued it (`vidurai-proxy keys list` shows those it did)."
        )
    if virtual.revoked_at is not None:
        return f"Virtual key {virtual.name!r} was revoked; ask the proxy's operator for a new one."
    if virtual.provider != provider.name:
        return f"Virtual key {virtual.name!r} is for the {virtual.provider} API, not {provider.name}'s."
    if virtual.upstream_key() is None:
        return (
            f"Virtual key {virtual.name!r}: the proxy has no {virtual.upstream_key_env} in its "
            "environment to send upstream; ask its operator to set it."
        )
    return None


def _headers(provider: Provider, counts: tuple[Count, ...], now: float, *, taken: bool) -> dict[str, str]:
    """The provider's rate-limit headers for the limits that have them (requests, tokens)."""
    headers: dict[str, str] = {}
    for count in counts:
        unit = _HEADER_UNITS.get(count.name)
        if unit is None:
            continue
        used = count.used + (count.reserved if taken else 0)
        remaining = max(int(count.limit - used), 0)
        headers.update(provider.rate_limit_headers(unit, int(count.limit), remaining, count.resets_at, now))
    return headers
