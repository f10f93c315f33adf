"""Tests for the package's public surface."""

import subprocess
import sys

import throttle
import throttle.testing

EXPECTED = {
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
    "QuotaBreakerOpened",
    "QuotaBreakerReset",
    "QueueFullError",
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
}


def test_exports_are_exactly_the_public_names_sorted() -> None:
    """`__all__` lists the public surface, sorted, and every name resolves."""
    assert set(throttle.__all__) == EXPECTED
    assert throttle.__all__ == sorted(throttle.__all__)
    for name in throttle.__all__:
        assert getattr(throttle, name) is not None


def test_version_comes_from_the_installed_metadata() -> None:
    """`__version__` is the installed distribution's version."""
    assert throttle.__version__ == "0.1.0"


def test_every_error_derives_from_one_base() -> None:
    """All exported errors are ThrottleErrors."""
    errors = [getattr(throttle, n) for n in throttle.__all__ if n.endswith("Error")]
    assert len(errors) >= 12
    assert all(issubclass(e, throttle.ThrottleError) for e in errors)


BLOCK_EXTRAS = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"openai", "httpx", "httpx2", "redis"}:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def test_import_works_without_any_adapter_extra() -> None:
    """Without openai, httpx, httpx2: throttle works and wrap_openai names its extra."""
    code = BLOCK_EXTRAS + (
        "import throttle, throttle.testing\n"
        "throttle.Throttle()\n"
        "throttle.estimate_tokens('embeddings', {'model': 'm', 'input': 'x'})\n"
        "try:\n"
        "    throttle.wrap_openai\n"
        "except ImportError as error:\n"
        "    assert 'throttle-llm[openai]' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('wrap_openai imported without openai')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


FOREIGN_LIBRARIES = ("aiohttp", "httpx", "httpx2", "openai", "prometheus_client", "redis")


def test_import_loads_no_http_metrics_or_redis_library() -> None:
    """`import throttle` and a Throttle for the adapters load none of the optional layers."""
    code = (
        "import sys, throttle\n"
        "throttle.Throttle(max_in_flight=8)\n"
        f"loaded = [name for name in {FOREIGN_LIBRARIES!r} if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_testing_module_exports() -> None:
    """The public testing module offers the simulator and the manual clock."""
    assert "SimulatedAPI" in throttle.testing.__all__
    assert "ManualClock" in throttle.testing.__all__
    assert "InFlightWatch" in throttle.testing.__all__
    assert throttle.testing.__all__ == sorted(throttle.testing.__all__)
