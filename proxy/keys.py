"""Typed application state: every shared object sits behind one of these keys."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .admin import AdminGuard
from .cluster import Cluster
from .config import Config
from .limits.gate import Gate
from .pricing import PriceTable
from .prom import PromMetrics
from .providers import Anthropic, OpenAI
from .sessions import SessionRegistry
from .storage import Store
from .summarizer import Summarizer
from .tokens import Calibration

CONFIG = web.AppKey("config", Config)
ADMIN = web.AppKey("admin", AdminGuard)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
ANTHROPIC = web.AppKey("anthropic", Anthropic)
OPENAI = web.AppKey("openai", OpenAI)
STORE = web.AppKey("store", Store)
SESSIONS = web.AppKey("sessions", SessionRegistry)
PRICES = web.AppKey("prices", PriceTable)
PROM = web.AppKey("prom", PromMetrics)
CALIBRATION = web.AppKey("calibration", Calibration)
CLUSTER = web.AppKey("cluster", Cluster)
SUMMARIZER = web.AppKey("summarizer", Summarizer)
STARTED_AT = web.AppKey("started_at", float)
LIMITS = web.AppKey("limits", Gate)
