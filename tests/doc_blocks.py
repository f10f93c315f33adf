"""The fenced code blocks of the README and docs/*.md, read as the test of the docs runs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FENCE = "```"


@dataclass(frozen=True, slots=True)
class DocBlock:
    """One fenced block of a Markdown file.

    Attributes:
        path: the file, relative to the repository (``docs/usage.md``).
        line: the 1-based line of the opening fence.
        kind: the fence's info string (``python``, ``bash``, ...), ``""`` when untagged.
        code: the text between the fences, ending with a newline.
    """

    path: str
    line: int
    kind: str
    code: str

    @property
    def name(self) -> str:
        """Where the block is, ``file:line``: how a failing block is reported."""
        return f"{self.path}:{self.line}"


def doc_files(repo: Path) -> list[Path]:
    """Return the README and every Markdown file directly in ``docs/``, sorted."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def read_blocks(path: Path, repo: Path) -> list[DocBlock]:
    """Return every fenced block of ``path`` in order.

    Raises:
        ValueError: a fence opened and never closed (the rest of the file would be code).
    """
    blocks: list[DocBlock] = []
    relative = path.relative_to(repo).as_posix()
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.lstrip().startswith(FENCE):
            if opened is not None:
                body.append(line + "\n")
            continue
        if opened is None:
            opened, body = (number, line.lstrip()[len(FENCE) :].strip()), []
        else:
            blocks.append(DocBlock(relative, opened[0], opened[1], "".join(body)))
            opened = None
    if opened is not None:
        raise ValueError(f"{relative}:{opened[0]}: a code fence that is never closed")
    return blocks


def all_blocks(repo: Path) -> list[DocBlock]:
    """Return the blocks of every documentation file (see :func:`doc_files`)."""
    return [block for path in doc_files(repo) for block in read_blocks(path, repo)]
