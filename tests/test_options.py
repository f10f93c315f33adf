"""Tests for the one settings object: validation, conflicts, and its documented defaults."""

from __future__ import annotations

import dataclasses
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from throttle import (
    AdmissionPolicy,
    ConfigurationError,
    Limits,
    MemoryBackend,
    Throttle,
    ThrottleOptions,
)
from throttle.options import ThrottleSettings
from throttle.run_options import RunOptions, online_executor

USAGE = Path(__file__).resolve().parent.parent / "docs" / "usage.md"


def test_backend_with_limits_is_refused_naming_both() -> None:
    """A backend holds its own limits: giving limits too is a contradiction."""
    with pytest.raises(ConfigurationError, match="backend and limits"):
        Throttle(backend=MemoryBackend(), limits=Limits(rpm=10))


def test_backend_with_an_admission_policy_is_refused_naming_both() -> None:
    """A backend holds its own admission policy: giving one too is a contradiction."""
    with pytest.raises(ConfigurationError, match="backend and admission"):
        Throttle(backend=MemoryBackend(), admission=AdmissionPolicy())


def test_options_and_keywords_together_are_refused() -> None:
    """Each setting is given once: options= and a keyword setting conflict."""
    with pytest.raises(ConfigurationError, match="options and max_in_flight"):
        Throttle(options=ThrottleOptions(), max_in_flight=4)


def test_a_configuration_error_is_a_value_error() -> None:
    """Callers catching ValueError catch bad settings too."""
    with pytest.raises(ValueError, match="max_in_flight"):
        ThrottleOptions(max_in_flight=0)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_in_flight", 0),
        ("max_in_flight", True),
        ("max_in_flight", 2.5),
        ("timeout", 0),
        ("timeout", float("nan")),
        ("auth", "basic"),
        ("default_output_tokens", -1),
        ("identity", ""),
        ("groups", {"": "pool"}),
        ("groups", None),
        ("headers", None),
        ("headers", [("x-team", "a")]),
    ],
)
def test_invalid_settings_are_refused_naming_the_setting(setting: str, value: Any) -> None:
    """Out-of-range values raise ConfigurationError when the options are built."""
    with pytest.raises(ConfigurationError):
        ThrottleOptions(**{setting: value})


def test_one_in_flight_cap_serves_admission_and_the_job_runner(tmp_path: Path) -> None:
    """`throttle run --max-concurrency` becomes the one max_in_flight the executor reads."""
    options = RunOptions(tmp_path / "in", tmp_path / "out", "http://127.0.0.1:1/x", "k")
    executor = online_executor(dataclasses.replace(options, max_concurrency=7))
    assert executor.capacity == 7


def test_keyword_settings_are_exactly_the_options_fields() -> None:
    """Throttle's typed keywords and ThrottleOptions' fields cannot drift apart."""
    fields = {field.name for field in dataclasses.fields(ThrottleOptions) if field.init}
    assert set(ThrottleSettings.__annotations__) == fields


def documented_defaults() -> dict[str, str]:
    """The settings table of docs/usage.md: setting name to its written default."""
    text = USAGE.read_text(encoding="utf-8")
    table = text.split("<!-- settings table")[1].split("<!-- end of settings table")[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, flags=re.MULTILINE)
    return dict(rows)


def test_the_documented_defaults_are_the_real_ones() -> None:
    """Every setting is in the docs table, with the default the code really uses."""
    expected = {}
    for field in dataclasses.fields(ThrottleOptions):
        if not field.init:
            continue
        factory = field.default_factory
        value = factory() if factory is not dataclasses.MISSING else field.default
        plain = value is None or isinstance(value, int | float | str | dict)
        expected[field.name] = repr(value) if plain else f"{type(value).__name__}()"
    assert documented_defaults() == expected


def test_the_in_flight_bound_is_half_the_open_file_limit_when_that_is_lower() -> None:
    """1,024 sockets by default, but never more than half the files the process may open."""
    code = "from throttle.limit_settings import default_max_in_flight as d; print(d())"

    def run_with_file_limit(limit: int) -> int:
        def lower() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        command = [sys.executable, "-c", code]
        done = subprocess.run(command, check=True, capture_output=True, text=True, preexec_fn=lower)
        return int(done.stdout)

    assert run_with_file_limit(200) == 100
    assert run_with_file_limit(8192) == 1024
