"""throttle: push requests through OpenAI-compatible APIs as fast as the limits allow.

The public surface is small: :class:`Throttle` (the client and scheduler), token estimation,
header parsing, the error hierarchy, limit and policy values, and the event types.
"""

from importlib.metadata import PackageNotFoundError, version

from throttle.backend import LimitBackend, MemoryBackend
from throttle.classify import Verdict, classify_response
from throttle.client import Throttle
from throttle.durations import parse_duration
from throttle.errors import (
    APIStatusError,
    ClosedError,
    ConfigurationError,
    DeadlineExceededError,
    ErrorDetails,
    InvalidRequestError,
    QuotaExhaustedError,
    RateLimitError,
    RequestTooLargeError,
    RetryExhaustedError,
    ServerError,
    ThrottleError,
    TransportError,
)
from throttle.estimate import TokenEstimate, estimate_tokens
from throttle.events import (
    AttemptFinished,
    Event,
    EventListener,
    LimitsObserved,
    QuotaBreakerOpened,
    RequestAdmitted,
    RequestFinished,
    RetryScheduled,
)
from throttle.headers import LimitReading, RateLimitSnapshot, parse_rate_limit_headers
from throttle.keys import BucketKey
from throttle.limits import AdmissionPolicy, Limits
from throttle.retry import RetryPolicy

try:
    __version__ = version("throttle")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "APIStatusError",
    "AdmissionPolicy",
    "AttemptFinished",
    "BucketKey",
    "ClosedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "ErrorDetails",
    "Event",
    "EventListener",
    "InvalidRequestError",
    "LimitBackend",
    "LimitReading",
    "Limits",
    "LimitsObserved",
    "MemoryBackend",
    "QuotaBreakerOpened",
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
    "Throttle",
    "ThrottleError",
    "TokenEstimate",
    "TransportError",
    "Verdict",
    "__version__",
    "classify_response",
    "estimate_tokens",
    "parse_duration",
    "parse_rate_limit_headers",
]
