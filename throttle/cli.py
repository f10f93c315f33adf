"""The ``throttle`` command: ``run``, ``demo`` and ``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from throttle import __version__
from throttle.errors import ConfigurationError, ThrottleError
from throttle.job_figures import theoretical_minimum
from throttle.limit_settings import Limits
from throttle.metrics import PrometheusMetrics, serve_metrics
from throttle.progress import limits_line
from throttle.run_options import RunOptions
from throttle.runner import JobRunner
from throttle.testing import Faults, ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.demo_requests import demo_request


async def _demo(requests: int, tpm: int, rpm: int, latency: float) -> int:
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=rpm, tpm=tpm),
        start_level=0.0,
        latency=latency,
        # Answers use all of max_tokens (demo requests ask at most 499), so usage equals what
        # the server charged (prompt plus max_tokens): throttle's count is checked against it.
        completion_tokens=500,
    )
    with tempfile.TemporaryDirectory(prefix="throttle-demo-") as folder:
        requests_file = Path(folder) / "requests.jsonl"
        with requests_file.open("w") as handle:
            handle.writelines(json.dumps(demo_request(i)) + "\n" for i in range(requests))
        async with SimulatedAPI(config) as sim:
            print(
                f"Simulated API on {sim.base_url}: RPM {rpm:,}, TPM {tpm:,}, bucket drained by "
                "other traffic. throttle is not told the limits: it learns them from headers."
            )
            print(f"Running {requests:,} chat requests from {requests_file} ...", flush=True)
            options = RunOptions(
                requests_file,
                Path(folder) / "results.jsonl",
                f"{sim.base_url}/chat/completions",
                "sk-demo",
            )
            runner = JobRunner(options, live_progress=sys.stderr.isatty())
            status = await runner.run()
        print(runner.progress.summary())
        stats = sim.stats
        print(
            f"The server's own count: {stats.received:,} requests received, "
            f"{stats.succeeded:,} accepted, {stats.total_429} x 429, "
            f"{stats.charged_tokens:,} tokens charged;"
        )
        minimum = theoretical_minimum(stats.charged_tokens, stats.succeeded, tpm, rpm)
        print(limits_line(minimum, runner.progress.elapsed(), "configured"))
    return status


def _run_options(args: argparse.Namespace) -> RunOptions:
    key = os.environ.get(args.api_key_env)
    if not key:
        raise ConfigurationError(
            f"set the API key in ${args.api_key_env} (or name another variable with --api-key-env)"
        )
    limits = Limits(rpm=args.rpm, tpm=args.tpm) if args.rpm or args.tpm else None
    output = args.output or args.requests.with_name(args.requests.stem + "_results.jsonl")
    if output.resolve() == args.requests.resolve():
        raise ConfigurationError("the results file must not be the input file")
    if args.max_attempts < 1 or args.max_concurrency < 1:
        raise ConfigurationError("--max-attempts and --max-concurrency must be at least 1")
    return RunOptions(
        args.requests,
        output,
        args.url,
        key,
        limits,
        args.max_attempts,
        args.max_concurrency,
        args.retry_failed,
        args.redis or os.environ.get("THROTTLE_REDIS_URL") or None,
        args.redis_failure_policy,
    )


async def _run(args: argparse.Namespace) -> int:
    options = _run_options(args)
    metrics = None
    if args.metrics_port is not None:
        metrics = PrometheusMetrics()
        serve_metrics(metrics, args.metrics_port)
    runner = JobRunner(
        options,
        live_progress=sys.stderr.isatty() and not args.no_progress,
        show_progress=not args.no_progress,
        on_event=metrics,
    )
    if metrics is not None:
        metrics.watch_load(runner.load)
        metrics.watch_job(runner.progress)
    status = await runner.run()
    print(runner.progress.summary(), file=sys.stderr)
    if runner.fatal:
        print(f"throttle: error: {runner.fatal}", file=sys.stderr)
    elif runner.interrupted:
        print("throttle: interrupted; run the same command again to finish", file=sys.stderr)
    return status


def _model_spec(text: str) -> tuple[str, ModelLimits]:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"expected NAME:RPM:TPM[:GROUP], got {text!r}")
    try:
        rpm, tpm = int(parts[1]), int(parts[2])
        return parts[0], ModelLimits(rpm=rpm, tpm=tpm, group=parts[3] if len(parts) == 4 else None)
    except (ValueError, ConfigurationError) as exc:
        raise argparse.ArgumentTypeError(f"bad model limits {text!r}: {exc}") from exc


async def _simulate(args: argparse.Namespace) -> int:
    config = SimulatorConfig(
        models=dict(args.model),
        default_limits=ModelLimits(rpm=args.rpm, tpm=args.tpm, rpd=args.rpd),
        start_level=args.start_level,
        latency=args.latency,
        latency_jitter=args.jitter,
        quota_tokens=args.quota_tokens,
        rate_limit_headers=not args.no_rate_limit_headers,
        retry_after_header=args.retry_after_header,
        faults=Faults(
            server_error=args.server_error_rate,
            overloaded=args.overloaded_rate,
            drop=args.drop_rate,
            truncate=args.truncate_rate,
            seed=args.seed,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SimulatedAPI(config, port=args.port) as sim:
        print(f"simulated OpenAI API listening on {sim.base_url} (stats: GET /_stats)")
        print(config.describe(), flush=True)
        await stop.wait()
        print(f"stopping; {sim.stats.as_dict()}", flush=True)
    return 0


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


def _parser() -> argparse.ArgumentParser:
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
    run.add_argument("--max-attempts", type=int, default=6, help="attempts per request")
    run.add_argument(
        "--max-concurrency",
        type=int,
        default=256,
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
    for fault in ("server-error", "overloaded", "drop", "truncate"):
        sim.add_argument(
            f"--{fault}-rate",
            type=float,
            default=0.0,
            help=f"share of requests that get the {fault} fault",
        )
    sim.add_argument("--seed", type=int, default=0, help="random seed of the faults")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``throttle`` command line; return the exit status."""
    args = _parser().parse_args(argv)
    level = args.log_level
    shows_progress = args.command == "demo" or not getattr(args, "no_progress", True)
    if shows_progress and level == "WARNING":
        level = "INFO"  # periodic progress lines when not on a terminal
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return asyncio.run(_run(args))
        if args.command == "demo":
            if args.requests < 1:
                raise ConfigurationError("--requests must be at least 1")
            return asyncio.run(_demo(args.requests, args.tpm, args.rpm, args.latency))
        return asyncio.run(_simulate(args))
    except (ThrottleError, OSError) as exc:
        print(f"throttle: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
