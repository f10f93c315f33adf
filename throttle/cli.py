"""The ``throttle`` command: ``run``, ``batches``, ``demo`` and ``simulate``."""

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

from throttle.batch_cli import batch_options, batches_command
from throttle.batch_run import batch_executor
from throttle.cli_parser import build_parser
from throttle.errors import ConfigurationError, ThrottleError
from throttle.job_figures import theoretical_minimum
from throttle.limit_settings import Limits
from throttle.metrics import PrometheusMetrics, serve_metrics
from throttle.progress import limits_line
from throttle.run_options import RunOptions
from throttle.runner import JobRunner
from throttle.testing import BatchSettings, Faults, ModelLimits, SimulatedAPI, SimulatorConfig
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
        args.timeout,
    )


_ONLINE_ONLY = {"--rpm": "rpm", "--tpm": "tpm", "--redis": "redis"}  # flag -> its argument


async def _run(args: argparse.Namespace) -> int:
    options = _run_options(args)
    metrics = None
    if args.metrics_port is not None:
        metrics = PrometheusMetrics()
        serve_metrics(metrics, args.metrics_port)
    executor = None
    if args.mode == "batch":
        executor = batch_executor(options, batch_options(args))
        unused = [flag for flag, value in _ONLINE_ONLY.items() if getattr(args, value)]
        if unused:
            logging.getLogger("throttle.batch").warning(
                "--mode batch ignores %s (online limits only)", ", ".join(unused)
            )
    runner = JobRunner(
        options,
        executor=executor,
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
            spike=args.spike_rate,
            spike_seconds=args.spike_seconds,
        ),
        batch=BatchSettings(
            time_scale=args.batch_time_scale,
            lines_per_second=args.batch_lines_per_second,
            enqueued_tokens=args.batch_enqueued_tokens,
            expired_share=args.batch_expired_share,
            failed_share=args.batch_failed_share,
            seed=args.seed,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SimulatedAPI(config, port=args.port) as sim:
        print(f"simulated OpenAI API listening on {sim.base_url} (stats: GET /_stats)")
        print(config.describe())
        print(config.batch.describe(), flush=True)
        await stop.wait()
        print(f"stopping; {sim.stats.as_dict()}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``throttle`` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    level = args.log_level
    shows_progress = args.command == "demo" or not getattr(args, "no_progress", True)
    if shows_progress and level == "WARNING":
        level = "INFO"  # periodic progress lines when not on a terminal
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return asyncio.run(_run(args))
        if args.command == "batches":
            return asyncio.run(batches_command(args))
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
