"""The ``throttle`` command: ``demo`` and ``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence

from throttle.client import Throttle
from throttle.errors import ConfigurationError, ThrottleError
from throttle.events import Event, LimitsObserved, RequestFinished
from throttle.testing import Faults, ModelLimits, SimulatedAPI, SimulatorConfig


class _Progress:
    """Counts what the scheduler reports, for the demo's progress lines and summary."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0
        self.failed: Counter[str] = Counter()
        self.tpm_limit: float | None = None
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RequestFinished):
            self.finished += 1
            if event.error_type is not None:
                self.failed[event.error_type] += 1
        elif isinstance(event, LimitsObserved) and event.snapshot.tokens is not None:
            self.tpm_limit = event.snapshot.tokens.limit

    def line(self, server_429: int) -> str:
        elapsed = time.monotonic() - self.started
        limit = f"{self.tpm_limit:,.0f}" if self.tpm_limit else "learning"
        return (
            f"{self.finished}/{self.total} done, {sum(self.failed.values())} failed, "
            f"{server_429} x 429, {elapsed:.1f}s, TPM limit {limit}"
        )


def _demo_body(index: int) -> dict[str, object]:
    topic = ("invoices", "support tickets", "product reviews", "meeting notes")[index % 4]
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Classify the text into one category. Be brief."},
            {"role": "user", "content": f"Item {index} from the {topic} backlog: " + "lorem " * 40},
        ],
        "max_tokens": 200 + (index * 37) % 300,
    }


async def _demo(requests: int, tpm: int, rpm: int, latency: float) -> int:
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=rpm, tpm=tpm), start_level=0.0, latency=latency
    )
    progress = _Progress(requests)
    async with SimulatedAPI(config) as sim:
        print(
            f"Simulated API on {sim.base_url}: RPM {rpm:,}, TPM {tpm:,}, bucket drained; "
            f"throttle is not told the limits and learns them from headers."
        )
        async with Throttle(sim.base_url, "sk-demo", on_event=progress) as client:
            jobs = asyncio.gather(
                *(client.post("chat/completions", _demo_body(i)) for i in range(requests)),
                return_exceptions=True,
            )
            while not jobs.done():
                await asyncio.wait([jobs], timeout=1.0)
                print(progress.line(sim.stats.total_429), flush=True)
            await jobs
        elapsed = time.monotonic() - progress.started
        minimum = sim.stats.charged_tokens / tpm * 60
        print(
            f"\nsucceeded {requests - sum(progress.failed.values())} of {requests}; "
            f"failed {dict(progress.failed) or 0}; 429s from the server {sim.stats.total_429}"
        )
        print(
            f"tokens charged {sim.stats.charged_tokens:,}; elapsed {elapsed:.1f}s; "
            f"theoretical minimum {minimum:.1f}s; efficiency {minimum / elapsed:.0%}"
        )
    return 0 if not progress.failed else 1


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
        print(f"simulated OpenAI API listening on {sim.base_url} (stats: GET /_stats)", flush=True)
        await stop.wait()
        print(f"stopping; {sim.stats.as_dict()}", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="throttle", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a job against the built-in simulated API")
    demo.add_argument("--requests", type=int, default=2000)
    demo.add_argument("--tpm", type=int, default=2_000_000)
    demo.add_argument("--rpm", type=int, default=5_000)
    demo.add_argument("--latency", type=float, default=0.2, help="seconds per answer")
    sim = commands.add_parser("simulate", help="run the simulated OpenAI API until Ctrl-C")
    sim.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    sim.add_argument("--rpm", type=int, default=3000, help="default requests per minute")
    sim.add_argument("--tpm", type=int, default=1_000_000, help="default tokens per minute")
    sim.add_argument("--rpd", type=int, default=None, help="default requests per day")
    sim.add_argument(
        "--model",
        type=_model_spec,
        action="append",
        default=[],
        metavar="NAME:RPM:TPM[:GROUP]",
        help="limits of one model (repeatable)",
    )
    sim.add_argument("--start-level", type=float, default=1.0, help="0 (drained) to 1 (full)")
    sim.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    sim.add_argument("--jitter", type=float, default=0.0, help="extra random latency, seconds")
    sim.add_argument(
        "--quota-tokens",
        type=int,
        default=None,
        help="insufficient_quota after this many tokens per organization",
    )
    for fault in ("server-error", "overloaded", "drop", "truncate"):
        sim.add_argument(
            f"--{fault}-rate",
            type=float,
            default=0.0,
            help=f"probability of a {fault} fault per request",
        )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--no-rate-limit-headers", action="store_true")
    sim.add_argument("--retry-after-header", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``throttle`` command line; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
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
