"""Context compression: old turns folded into stable digests, relevant ones recalled at the end."""

from .compressor import CompressionResult, compress
from .memory import SessionMemory
from .vidurai_logs import route_vidurai_logs

__all__ = ["CompressionResult", "SessionMemory", "compress", "route_vidurai_logs"]
