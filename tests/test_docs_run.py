"""Every code block of the README and docs/*.md runs, against the simulator, as written.

Python blocks are whole programs run in a subprocess; shell blocks run in bash in a temporary
directory holding a small ``requests.jsonl``; JSON, JSON lines and YAML blocks must parse. The
programs find their server the way users' programs do, in ``OPENAI_BASE_URL``,
``OPENAI_API_KEY``, ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY`` and
``THROTTLE_REDIS_URL``, which point at a :class:`SimulatedAPI` on 127.0.0.1 (and the test
session's redis-server), never at a real API. The few blocks that are not run are listed in
``NOT_RUN``, each with its reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import throttle
from tests.doc_blocks import DocBlock, all_blocks
from throttle.testing import ModelLimits, SimulatedAPI, SimulatorConfig
from throttle.testing.ports import free_port

REPO = Path(__file__).resolve().parent.parent
BLOCKS = all_blocks(REPO)
BLOCK_TIMEOUT = 30.0  # seconds one block may run
AZURE_DEPLOYMENT = "my-4o"  # the deployment docs/usage.md's Azure example names
REQUESTS = [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Line {i}"}]}
    for i in range(3)
]
# Variables of the developer's shell that would point a block elsewhere than the simulator.
FOREIGN_VARIABLES = re.compile(r"^(OPENAI_|AZURE_OPENAI_|THROTTLE_)")


@dataclass(frozen=True, slots=True)
class NotRun:
    """A block that is not run, found by a snippet of its text, and why.

    Attributes:
        path: the file holding it.
        snippet: text that only that block of the file contains.
        reason: why running it would prove nothing or cannot be done here.
    """

    path: str
    snippet: str
    reason: str

    def matches(self, block: DocBlock) -> bool:
        """Whether ``block`` is the one meant."""
        return block.path == self.path and self.snippet in block.code


NOT_RUN = (
    NotRun("README.md", ".venv/bin/pip install .", "run by CI itself: .ci/run"),
    NotRun(
        "docs/scale-out.md",
        "redis://:PASSWORD@redis.internal",
        "two machines sharing a Redis of yours; `throttle run --redis` itself is run by "
        "tests/test_scale_out.py and the Redis examples below it run here",
    ),
    NotRun("docs/design.md", "cli.py -> runner.py", "a diagram of the layers, not a program"),
    NotRun(
        "docs/usage.md",
        "ThrottleError\n├──",
        "the error hierarchy as a tree; test_error_tree_names_every_error checks it",
    ),
    NotRun(
        "docs/simulator.md",
        "simulated OpenAI API listening on",
        "what `throttle simulate` prints, not a command",
    ),
    NotRun("docs/reliability.md", "s     done", "the soak's table as it printed, not a command"),
    NotRun("docs/reliability.md", "native: 919,755", "the soak's verdict as it printed"),
)


def not_run_reason(block: DocBlock) -> str | None:
    """The reason ``block`` is not run, or ``None`` when it is."""
    return next((entry.reason for entry in NOT_RUN if entry.matches(block)), None)


def block_env(sim: SimulatedAPI, bin_dir: Path, redis_url: str | None) -> dict[str, str]:
    """The environment of a block: the simulator's URLs and keys, ``throttle`` on PATH."""
    env = {name: value for name, value in os.environ.items() if not FOREIGN_VARIABLES.match(name)}
    azure_root = sim.azure_url(AZURE_DEPLOYMENT).removesuffix(
        f"/openai/deployments/{AZURE_DEPLOYMENT}"
    )
    env.update(
        OPENAI_BASE_URL=sim.base_url,
        OPENAI_API_KEY="sk-docs",
        AZURE_OPENAI_ENDPOINT=azure_root,
        AZURE_OPENAI_API_KEY="azure-docs",
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        METRICS_PORT=str(free_port()),
    )
    if redis_url is not None:
        env["THROTTLE_REDIS_URL"] = redis_url
    return env


def install_cli(bin_dir: Path) -> None:
    """Put a ``throttle`` command that runs this interpreter's throttle in ``bin_dir``."""
    bin_dir.mkdir()
    command = bin_dir / "throttle"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m throttle "$@"\n')
    command.chmod(command.stat().st_mode | stat.S_IXUSR)


async def run_in_subprocess(
    block: DocBlock, argv: list[str], cwd: Path, env: dict[str, str]
) -> str:
    """Run ``argv`` and return its stdout; fail naming the block and showing its stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), BLOCK_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{block.name}: still running after {BLOCK_TIMEOUT} s")
    if process.returncode != 0:
        pytest.fail(
            f"{block.name} ({block.kind}) exited {process.returncode}:\n{stderr.decode()}",
            pytrace=False,
        )
    return stdout.decode()


async def run_program(block: DocBlock, tmp_path: Path, redis_url: str | None) -> None:
    """Run a Python or shell block against a fresh simulator (fast, generous limits)."""
    bin_dir = tmp_path / "bin"
    install_cli(bin_dir)
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    config = SimulatorConfig(
        default_limits=ModelLimits(rpm=1_000_000, tpm=1_000_000_000), latency=0.001
    )
    async with SimulatedAPI(config) as sim:
        env = block_env(sim, bin_dir, redis_url)
        if block.kind == "python":
            script = tmp_path / f"{Path(block.path).stem}_{block.line}.py"
            script.write_text(block.code)
            argv = [sys.executable, "-W", "error", str(script)]  # a deprecation is a doc bug
        else:
            argv = ["bash", "-eu", "-o", "pipefail", "-c", block.code]
        await run_in_subprocess(block, argv, tmp_path, env)
        if any(name in block.code for name in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT")):
            sent = sim.stats.received + sim.stats.batch.total_requests
            assert sent > 0, f"{block.name} sent nothing to the simulator"
    results = tmp_path / "requests_results.jsonl"
    if results.exists():
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        assert sorted(line["index"] for line in lines) == list(range(len(REQUESTS)))
        assert all("response" in line for line in lines), f"{block.name}: {lines}"


RUN = [block for block in BLOCKS if not_run_reason(block) is None]


@pytest.mark.parametrize("block", RUN, ids=[block.name for block in RUN])
async def test_doc_block_runs(
    block: DocBlock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each block not in NOT_RUN runs against the simulator as written, or parses."""
    if block.kind in ("python", "bash", "sh"):
        redis_url = request.getfixturevalue("redis_url") if "REDIS_URL" in block.code else None
        await run_program(block, tmp_path, redis_url)
    elif block.kind == "json":
        json.loads(block.code)
    elif block.kind == "jsonl":
        for line in block.code.splitlines():
            if line.strip():
                json.loads(line)
    elif block.kind == "yaml":
        assert yaml.safe_load(block.code) is not None, f"{block.name} is empty"
    else:
        pytest.fail(
            f"{block.name}: a {block.kind or 'untagged'} block is neither run nor checked: "
            "tag it (python, bash, json, jsonl, yaml) or list it in NOT_RUN with a reason",
            pytrace=False,
        )


def test_not_run_names_existing_blocks() -> None:
    """Every entry of NOT_RUN names exactly one block that still exists."""
    for entry in NOT_RUN:
        found = [block.name for block in BLOCKS if entry.matches(block)]
        assert len(found) == 1, f"NOT_RUN entry {entry.path} {entry.snippet!r} matches {found}"


def test_error_tree_names_every_error() -> None:
    """The error tree in docs/usage.md names every ThrottleError the package exports."""
    (tree,) = [block for block in BLOCKS if block.path == "docs/usage.md" and "├──" in block.code]
    drawn = set(re.findall(r"\b(\w+Error)\b", tree.code))
    exported = {
        name
        for name in throttle.__all__
        if isinstance(value := getattr(throttle, name), type)
        and issubclass(value, throttle.ThrottleError)
    }
    assert drawn >= exported, f"missing from {tree.name}: {sorted(exported - drawn)}"
    assert drawn <= exported | {"ValueError"}, f"not exported: {sorted(drawn - exported)}"
