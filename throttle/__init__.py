"""throttle: push requests through OpenAI-compatible APIs as fast as the limits allow.

The public surface is small: :class:`Throttle` (the client and scheduler), token estimation,
header parsing, the error hierarchy, limit and policy values, and the event types; for offline
jobs, :class:`BatchExecutor` (the Batch API) with :func:`batch_status` and
:func:`cancel_open_batches`.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from throttle.backend import BackendListener, LimitBackend, MemoryBackend
from throttle.classify import Verdict, classify_response
from throttle.client import Throttle
from throttle.durations import parse_duration
from throttle.errors import (
    APIStatusError,
    BackendUnavailableError,
    CapacityUnavailableError,
    ClosedError,
    ConfigurationError,
    DeadlineExceededError,
    ErrorDetails,
    InvalidRequestError,
    JobAbortedError,
    MisconfiguredError,
    QueueFullError,
    QuotaExhaustedError,
    RateLimitError,
    RequestTooLargeError,
    RetryExhaustedError,
    ServerError,
    StreamTruncatedError,
    ThrottleError,
    TransportError,
)
from throttle.estimate import TokenEstimate, estimate_tokens
from throttle.events import (
    AttemptFinished,
    BackendAvailabilityChanged,
    Event,
    EventListener,
    LimitsObserved,
    QuotaBreakerOpened,
    QuotaBreakerReset,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
    UsageReported,
)
from throttle.headers import LimitReading, RateLimitSnapshot, parse_rate_limit_headers
from throttle.keys import BucketKey
from throttle.limit_settings import AdmissionPolicy, Limits
from throttle.options import ThrottleOptions
from throttle.retry import RetryPolicy

if TYPE_CHECKING:  # the real signatures for type checkers; loaded lazily at run time
    from throttle.adapters.openai_sdk import wrap_openai
    from throttle.batch_admin import batch_status, cancel_open_batches
    from throttle.batch_executor import BatchExecutor
    from throttle.batch_options import BatchOptions

try:
    __version__ = version("throttle-llm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "APIStatusError",
    "AdmissionPolicy",
    "AttemptFinished",
    "BackendAvailabilityChanged",
    "BackendListener",
    "BackendUnavailableError",
    "BatchExecutor",
    "BatchOptions",
    "BucketKey",
    "CapacityUnavailableError",
    "ClosedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "ErrorDetails",
    "Event",
    "EventListener",
    "InvalidRequestError",
    "JobAbortedError",
    "LimitBackend",
    "LimitReading",
    "Limits",
    "LimitsObserved",
    "MemoryBackend",
    "MisconfiguredError",
    "PrometheusMetrics",
    "QueueFullError",
    "QuotaBreakerOpened",
    "QuotaBreakerReset",
    "QuotaExhaustedError",
    "RateLimitError",
    "RateLimitSnapshot",
    "RequestAdmitted",
    "RequestFinished",
    "RequestTooLargeError",
    "RetryExhaustedError",
    "RetryPolicy",
    "RetryScheduled",
    "ServerError",
    "StreamTruncatedError",
    "Throttle",
    "ThrottleError",
    "ThrottleOptions",
    "TokenEstimate",
    "TransportError",
    "UsageReported",
    "Verdict",
    "__version__",
    "batch_status",
    "cancel_open_batches",
    "classify_response",
    "estimate_tokens",
    "parse_duration",
    "parse_rate_limit_headers",
    "serve_metrics",
    "wrap_openai",
]


_BATCH = {
    "BatchExecutor": "throttle.batch_executor",
    "BatchOptions": "throttle.batch_options",
    "batch_status": "throttle.batch_admin",
    "cancel_open_batches": "throttle.batch_admin",
}


def __getattr__(name: str) -> Any:
    """Load ``wrap_openai``, metrics and batch mode on first use: ``import throttle`` stays light.

    (``wrap_openai`` needs the openai extra; the metrics import prometheus-client; batch mode
    imports aiohttp.)
    """
    if name in ("PrometheusMetrics", "serve_metrics"):
        from throttle import metrics  # noqa: PLC0415 - lazy on purpose

        return getattr(metrics, name)
    if name in _BATCH:
        module = importlib.import_module(_BATCH[name])
        return getattr(module, name)
    if name == "wrap_openai":
        try:
            from throttle.adapters.openai_sdk import wrap_openai  # noqa: PLC0415 - lazy on purpose
        except ImportError as exc:
            raise ImportError(
                "throttle.wrap_openai needs the openai extra: pip install 'throttle-llm[openai]'"
            ) from exc
        return wrap_openai
    raise AttributeError(f"module 'throttle' has no attribute {name!r}")
