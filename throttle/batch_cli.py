"""The command line of batch mode: ``throttle run --mode batch`` options, ``throttle batches``."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from throttle.batch_admin import BatchView, batch_status, cancel_open_batches
from throttle.batch_journal import journal_path_for
from throttle.batch_options import DEFAULT_MAX_LINES, BatchOptions
from throttle.batch_split import MAX_FILE_BYTES, MAX_REQUESTS
from throttle.errors import ConfigurationError


def add_batch_run_options(run: argparse.ArgumentParser) -> None:
    """Add ``--mode`` and the ``--batch-*`` options to ``throttle run``."""
    run.add_argument(
        "--mode",
        choices=("online", "batch"),
        default="online",
        help="online: each request as it comes, within the rate limits; batch: through the "
        "Batch API (half the price, answers within 24 h, resumable; see docs/batch.md)",
    )
    group = run.add_argument_group("batch mode (--mode batch)")
    group.add_argument(
        "--batch-max-requests",
        type=int,
        default=MAX_REQUESTS,
        help="requests per batch file (embeddings: inputs)",
    )
    group.add_argument(
        "--batch-max-bytes", type=int, default=MAX_FILE_BYTES, help="bytes per batch file"
    )
    group.add_argument(
        "--batch-enqueued-tokens",
        type=int,
        default=None,
        help="each model's enqueued-token limit (default: none, learned from the first batch "
        "that fails over it)",
    )
    group.add_argument(
        "--batch-max-lines",
        type=int,
        default=DEFAULT_MAX_LINES,
        help="lines held at once while their batches run (about 5 KB each)",
    )
    group.add_argument(
        "--batch-max-attempts",
        type=int,
        default=3,
        help="batches a line may go into (after it expired, met a 5xx, or was not run)",
    )
    group.add_argument(
        "--batch-poll-min", type=float, default=5.0, help="seconds between a batch's first polls"
    )
    group.add_argument(
        "--batch-poll-max",
        type=float,
        default=60.0,
        help="the most seconds between two polls of a batch",
    )


def batch_options(args: argparse.Namespace) -> BatchOptions:
    """The :class:`BatchOptions` that ``throttle run``'s arguments ask for.

    Raises:
        ConfigurationError: the values cannot be used.
    """
    return BatchOptions(
        max_requests=args.batch_max_requests,
        max_embedding_inputs=args.batch_max_requests,
        max_bytes=args.batch_max_bytes,
        enqueued_tokens=args.batch_enqueued_tokens,
        max_lines=args.batch_max_lines,
        max_attempts=args.batch_max_attempts,
        poll_initial=args.batch_poll_min,
        poll_max=args.batch_poll_max,
    )


def add_batches_options(batches: argparse.ArgumentParser) -> None:
    """Add the arguments of ``throttle batches``."""
    batches.add_argument(
        "action",
        choices=("status", "cancel"),
        help="status: show the job's batches; cancel: cancel those still running",
    )
    batches.add_argument(
        "--results",
        type=Path,
        required=True,
        help="the job's results file (its journal RESULTS.batches.jsonl lies beside it) (required)",
    )
    batches.add_argument(
        "--url",
        default=None,
        help="the API's base URL (default: the one the journal names)",
    )
    batches.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the key (status without a key shows the "
        "journal's view only)",
    )


def _table(views: list[BatchView]) -> str:
    rows = [("FILE", "MODEL", "LINES", "BATCH", "STATUS", "DONE", "FAILED")]
    for view in views:
        counts = view.request_counts
        rows.append(
            (
                view.file_name,
                view.model,
                f"{view.lines:,}",
                view.batch_id or "-",
                view.status,
                str(counts.get("completed", "")),
                str(counts.get("failed", "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def batches_command(args: argparse.Namespace) -> int:
    """Run ``throttle batches status|cancel``; return the exit status.

    Raises:
        ConfigurationError: no journal, or no key to cancel with.
        ThrottleError: the API refused or could not be reached.
    """
    journal = journal_path_for(args.results)
    if not journal.exists():
        raise ConfigurationError(
            f"no batch journal {journal}: was {args.results} written by throttle run --mode batch?"
        )
    key = os.environ.get(args.api_key_env) or None
    if args.action == "status":
        views = await batch_status(journal, key, api_root=args.url)
        print(_table(views))
        tally = Counter(view.status for view in views)
        shown = ", ".join(f"{count} {status}" for status, count in sorted(tally.items()))
        print(f"{len(views)} files: {shown or 'none'}", file=sys.stderr)
        return 0
    if key is None:
        raise ConfigurationError(f"set the API key in ${args.api_key_env} to cancel batches")
    cancelled = await cancel_open_batches(journal, key, api_root=args.url)
    if cancelled:
        print(_table(cancelled))
    print(
        f"asked to cancel {len(cancelled)} open batches; run the job again to send the lines "
        "left without an answer in new batches",
        file=sys.stderr,
    )
    return 0
