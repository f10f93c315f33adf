"""The ``throttle`` command line's options: what each subcommand accepts, and its help."""

from __future__ import annotations

import argparse
from pathlib import Path

from throttle import __version__
from throttle.batch_cli import add_batch_run_options, add_batches_options
from throttle.errors import ConfigurationError
from throttle.limit_settings import default_max_in_flight
from throttle.testing import ModelLimits


def _model_spec(text: str) -> tuple[str, ModelLimits]:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"expected NAME:RPM:TPM[:GROUP], got {text!r}")
    try:
        rpm, tpm = int(parts[1]), int(parts[2])
        return parts[0], ModelLimits(rpm=rpm, tpm=tpm, group=parts[3] if len(parts) == 4 else None)
    except (ValueError, ConfigurationError) as exc:
        raise argparse.ArgumentTypeError(f"bad model limits {text!r}: {exc}") from exc


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to every optional option's help, unless it already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or (action.help is not None and "(default" in action.help):
            return action.help
        return super()._get_help_string(action)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level_option(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``--log-level``: on the top level it sets the default, after a subcommand it wins."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        metavar="LEVEL",
        help="logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: WARNING; "
        "INFO when progress lines are logged)",
    )


def _subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name, help=summary, description=summary, formatter_class=_HelpFormatter
    )
    # SUPPRESS: the top-level value stays unless the option is given after the subcommand.
    _log_level_option(command, argparse.SUPPRESS)
    return command


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``throttle`` command line."""
    parser = argparse.ArgumentParser(
        prog="throttle",
        description="Send OpenAI API requests at the highest rate the limits allow.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _log_level_option(parser, "WARNING")
    commands = parser.add_subparsers(dest="command", required=True)
    run = _subcommand(commands, "run", "send a JSONL file of requests, resumably")
    run.add_argument(
        "requests",
        type=Path,
        help="JSONL file: one request body per line, or one Batch API line "
        "(custom_id, method, url, body) per line",
    )
    run.add_argument(
        "--url",
        required=True,
        help="for request bodies, the full endpoint URL (.../v1/chat/completions); for Batch "
        "API lines, the base URL (https://api.openai.com/v1) each line's url is joined to "
        "(required)",
    )
    run.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="results file (default: REQUESTS_results.jsonl)",
    )
    run.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the key",
    )
    run.add_argument(
        "--rpm",
        type=float,
        default=None,
        help="requests per minute ceiling (default: none, the limit is learned)",
    )
    run.add_argument(
        "--tpm",
        type=float,
        default=None,
        help="tokens per minute ceiling (default: none, the limit is learned)",
    )
    run.add_argument(
        "--max-attempts",
        type=int,
        default=6,
        help="attempts per request; 429 rate limits are not counted (they only wait)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one attempt may take before it is abandoned and retried",
    )
    run.add_argument(
        "--max-concurrency",
        type=int,
        default=default_max_in_flight(),
        help="requests processed at once, queued or in flight",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="also re-run lines whose result is an error",
    )
    run.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="share limits with every worker on this Redis: redis://[:PASSWORD@]HOST:PORT/DB, "
        "rediss://... for TLS (default: $THROTTLE_REDIS_URL, which keeps the password out of "
        "the process list; without either, limits are local)",
    )
    run.add_argument(
        "--redis-failure-policy",
        choices=("fail_closed", "fail_open"),
        default="fail_closed",
        help="while Redis is unreachable: admit nothing (fail_closed; the job stops after "
        "30 s, resumable) or admit on local limits (fail_open)",
    )
    run.add_argument("--no-progress", action="store_true", help="show no progress")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default: none, no metrics)",
    )
    add_batch_run_options(run)
    batches = _subcommand(
        commands, "batches", "show or cancel the batches of a job run with --mode batch"
    )
    add_batches_options(batches)
    demo = _subcommand(commands, "demo", "run a job against the built-in simulated API")
    demo.add_argument("--requests", type=int, default=3000, help="chat requests to send")
    demo.add_argument("--tpm", type=int, default=3_000_000, help="the API's tokens per minute")
    demo.add_argument("--rpm", type=int, default=10_000, help="the API's requests per minute")
    demo.add_argument("--latency", type=float, default=0.2, help="seconds per answer")
    sim = _subcommand(commands, "simulate", "run the simulated OpenAI API until Ctrl-C")
    sim.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    sim.add_argument("--rpm", type=int, default=3000, help="default requests per minute")
    sim.add_argument("--tpm", type=int, default=1_000_000, help="default tokens per minute")
    sim.add_argument(
        "--rpd",
        type=int,
        default=None,
        help="default requests per day (default: none, no daily limit)",
    )
    sim.add_argument(
        "--model",
        type=_model_spec,
        action="append",
        default=[],
        metavar="NAME:RPM:TPM[:GROUP]",
        help="limits of one model, repeatable (default: every model has the default limits)",
    )
    sim.add_argument("--start-level", type=float, default=1.0, help="0 (drained) to 1 (full)")
    sim.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    sim.add_argument("--jitter", type=float, default=0.0, help="extra random latency, seconds")
    sim.add_argument(
        "--quota-tokens",
        type=int,
        default=None,
        help="insufficient_quota after this many tokens per organization (default: none, "
        "unlimited quota)",
    )
    for fault in ("server-error", "overloaded", "drop", "truncate", "spike"):
        sim.add_argument(
            f"--{fault}-rate",
            type=float,
            default=0.0,
            help=f"share of requests that get the {fault} fault",
        )
    sim.add_argument(
        "--spike-seconds",
        type=float,
        default=5.0,
        help="how long a latency spike holds its answer",
    )
    sim.add_argument(
        "--seed", type=int, default=0, help="random seed of the faults and of batch outcomes"
    )
    sim.add_argument(
        "--batch-time-scale",
        type=float,
        default=1000.0,
        help="Batch API: simulated seconds per second of wall time",
    )
    sim.add_argument(
        "--batch-lines-per-second",
        type=float,
        default=50.0,
        help="Batch API: requests each batch answers per simulated second",
    )
    sim.add_argument(
        "--batch-enqueued-tokens",
        type=int,
        default=None,
        help="Batch API: enqueued-token limit per model and organization (default: none, "
        "unlimited)",
    )
    sim.add_argument(
        "--batch-expired-share",
        type=float,
        default=0.0,
        help="Batch API: share of lines that expire (batch_expired)",
    )
    sim.add_argument(
        "--batch-failed-share",
        type=float,
        default=0.0,
        help="Batch API: share of lines answered 500 server_error",
    )
    sim.add_argument(
        "--no-rate-limit-headers",
        action="store_true",
        help="send no x-ratelimit-* headers (some models do not)",
    )
    sim.add_argument(
        "--retry-after-header",
        action="store_true",
        help="send retry-after-ms / retry-after on 429s (Azure does)",
    )
    return parser
