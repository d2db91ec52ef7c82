"""Virtual keys, and the spend and refusals the limits read from `requests`, as both engines keep
them (the engines give the connection, the SQL and the migration: sqlite/limits.py,
postgresql/limits.py).

Read and written at once, not through the writer's queue: `vidurai-proxy keys` is a process of its
own that must see its key stored before it exits, and the proxy reads these rarely (the keys every
couple of seconds, spend at startup, refusals per dashboard refresh). Each calling thread keeps its
own connection (proxy/storage/connections.py).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from proxy.limits.keyring import VirtualKey
from proxy.limits.limiter import Limits
from proxy.storage.connections import ThreadConnections
from proxy.storage.store import StoreError

T = TypeVar("T")

KEY_COLUMNS = (
    "id, name, tenant, provider, upstream_key_env, requests_per_minute, tokens_per_minute, "
    "budget_usd_per_day, budget_usd_per_month, created_at, revoked_at"
)
# What `vidurai-proxy keys update` may change, in UPDATE_KEY's order.
CHANGEABLE = (
    "upstream_key_env",
    "requests_per_minute",
    "tokens_per_minute",
    "budget_usd_per_day",
    "budget_usd_per_month",
)
# The `error` a refused request's row carries: "limit: <name>".
REJECTED_PREFIX = "limit: "


def _key(row: tuple[Any, ...]) -> VirtualKey:
    return VirtualKey(
        id=row[0],
        name=row[1],
        tenant=row[2],
        provider=row[3],
        upstream_key_env=row[4],
        limits=Limits(*row[5:9]),
        created_at=row[9],
        revoked_at=row[10],
    )


class LimitsStore(ThreadConnections):
    """The `virtual_keys` table and the limits' reads of `requests` in one database."""

    ERRORS: ClassVar[tuple[type[Exception], ...]]  # the driver's: said as StoreError
    # (id, name, key_hash, tenant, provider, upstream_key_env, 4 limits, created_at, updated_at);
    # nothing inserted when the name is taken
    INSERT_KEY: ClassVar[str]
    SELECT_KEYS: ClassVar[str]  # key_hash, then KEY_COLUMNS
    # per CHANGEABLE column (change it?, its value), then updated_at, name; live keys only
    UPDATE_KEY: ClassVar[str]
    REVOKE_KEY: ClassVar[str]  # (revoked_at, updated_at, name); live keys only
    SPEND_SINCE: ClassVar[str]  # (since) -> tenant, dollars
    REJECTIONS_SINCE: ClassVar[str]  # (len(REJECTED_PREFIX) + 1, since, REJECTED_PREFIX + "%")

    database: str  # for messages: a path, or a URL without its password

    @abc.abstractmethod
    def _migrate(self) -> None:
        """Apply pending migrations (`vidurai-proxy keys` may run before any proxy has)."""

    def migrate(self) -> None:
        try:
            self._migrate()
        except self.ERRORS as exc:
            raise StoreError(f"database {self.database}: {exc}".strip()) from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        yield self._conn()

    def _on(self, call: Callable[[Any], T]) -> T:
        """`call(connection)`, a driver's error said as StoreError."""
        try:
            with self._connection() as conn:
                return call(conn)
        except self.ERRORS as exc:
            raise StoreError(f"database {self.database}: {exc}".strip()) from None

    def _changed(self, sql: str, params: tuple[Any, ...]) -> bool:
        """Whether the statement changed one row."""
        return self._on(lambda conn: int(conn.execute(sql, params).rowcount) == 1)

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self._on(lambda conn: list(conn.execute(sql, params).fetchall()))

    def add_key(self, key: VirtualKey, key_hash: str) -> bool:
        """Store a new key; False if a key of that name exists already."""
        identity = (key.id, key.name, key_hash, key.tenant, key.provider, key.upstream_key_env)
        times = (key.created_at, key.created_at)
        return self._changed(self.INSERT_KEY, (*identity, *key.limits.values(), *times))

    def keys(self) -> list[VirtualKey]:
        """Every key, revoked ones too, by name."""
        return sorted(self.keys_by_hash().values(), key=lambda key: key.name)

    def keys_by_hash(self) -> dict[str, VirtualKey]:
        """Every key, revoked ones too (so a revoked key is told apart from an unknown one)."""
        return {row[0]: _key(row[1:]) for row in self._rows(self.SELECT_KEYS)}

    def update_key(self, name: str, changes: dict[str, Any], now: float) -> bool:
        """Set the given CHANGEABLE columns of a live key; False if there is none."""
        unknown = set(changes) - set(CHANGEABLE)
        if unknown:
            raise ValueError(f"not changeable: {sorted(unknown)}")
        params: list[Any] = []
        for column in CHANGEABLE:
            params += (column in changes, changes.get(column))
        return self._changed(self.UPDATE_KEY, (*params, now, name))

    def revoke_key(self, name: str, now: float) -> bool:
        return self._changed(self.REVOKE_KEY, (now, now, name))

    def spend_since(self, since: float) -> dict[str, float]:
        """US dollars each tenant spent from `since` on, as the requests table recorded it."""
        return {tenant: float(spend) for tenant, spend in self._rows(self.SPEND_SINCE, (since,))}

    def rejections_since(self, since: float) -> list[tuple[str, str, int]]:
        """(tenant, limit name, requests refused) from `since` on."""
        params = (len(REJECTED_PREFIX) + 1, since, REJECTED_PREFIX + "%")
        return [
            (tenant, name, int(count)) for tenant, name, count in self._rows(self.REJECTIONS_SINCE, params)
        ]


def update_assignments(placeholder: str) -> str:
    """UPDATE_KEY's SET list in an engine's placeholder style: each column kept unless told."""
    return ", ".join(f"{c} = CASE WHEN {placeholder} THEN {placeholder} ELSE {c} END" for c in CHANGEABLE)
