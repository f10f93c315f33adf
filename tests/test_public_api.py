"""Tests for the package's public surface."""

import subprocess
import sys

import throttle
import throttle.testing

EXPECTED = {
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


def test_import_needs_no_optional_extras() -> None:
    """`import throttle` loads no adapter dependency (openai, httpx, httpx2, redis)."""
    code = (
        "import sys, throttle; "
        "loaded = [m for m in ('openai', 'httpx', 'httpx2', 'redis') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_testing_module_exports() -> None:
    """The public testing module offers the simulator and the manual clock."""
    assert "SimulatedAPI" in throttle.testing.__all__
    assert "ManualClock" in throttle.testing.__all__
    assert throttle.testing.__all__ == sorted(throttle.testing.__all__)
