"""HTTP examples of README.md and docs/*.md, as the docs-examples test runs them.

Convention (docs/api.md, "Examples in these docs"):

- an example is a fenced ```bash (or ```sh / ```shell) block whose first command starts with
  ``curl``; every command of such a block is run, in order;
- a comment line right after a command, ``# 202 {...}``, states the expected status (otherwise
  any 2xx);
- an HTML comment ``<!-- example: skip (reason) -->`` on the line directly above the fence skips
  the whole block (counted and reported, with its reason).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_BASE_URL = "http://localhost:3000"
_FENCE = re.compile(r"^```(bash|sh|shell)\s*$")
_SKIP = re.compile(r"^<!--\s*example:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")
_STATUS = re.compile(r"^#\s*(?P<status>[1-5]\d\d)\b")


@dataclass(frozen=True)
class Example:
    file: str
    line: int
    command: str
    status: int | None  # None: any 2xx
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def method(self) -> str:
        match = re.search(r"(?:-X|--request)\s+([A-Z]+)", self.command)
        if match:
            return match.group(1)
        return (
            "POST"
            if re.search(r"\s(-d|--data\S*)\s", self.command) and " -G" not in self.command
            else "GET"
        )


def doc_files() -> list[Path]:
    """README.md and every docs/*.md (pages added later are picked up automatically)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text)
    except ValueError:  # an open quote: the command goes on (multi-line JSON bodies)
        return False
    return True


def _commands(lines: list[tuple[int, str]]) -> list[tuple[int, str, int | None]]:
    """(line, command, expected status) for each command of a block, as bash would read it."""
    out: list[tuple[int, str, int | None]] = []
    current: list[str] = []
    start = 0
    for number, text in lines:
        stripped = text.strip()
        if not current:
            if not stripped:
                continue
            if stripped.startswith("#"):
                status = _STATUS.match(stripped)
                if status and out and out[-1][2] is None:
                    line, command, _ = out[-1]
                    out[-1] = (line, command, int(status.group("status")))
                continue
            start = number
        current.append(text)
        joined = "\n".join(current)
        if _complete(joined):
            out.append((start, joined.strip(), None))
            current = []
    if current:
        out.append((start, "\n".join(current).strip(), None))
    return out


def examples(path: Path) -> list[Example]:
    """Every HTTP example of one Markdown file (skipped ones included, marked)."""
    rel = str(path.relative_to(ROOT))
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i].strip()):
            i += 1
            continue
        skip = _SKIP.match(lines[i - 1].strip()) if i > 0 else None
        body: list[tuple[int, str]] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            body.append((j + 1, lines[j]))
            j += 1
        commands = _commands(body)
        if commands and commands[0][1].startswith("curl "):
            for line, command, status in commands:
                found.append(
                    Example(rel, line, command, status, skip.group("reason") if skip else None)
                )
        i = j + 1
    return found


def all_examples() -> list[Example]:
    return [example for path in doc_files() for example in examples(path)]


def runnable(command: str, base_url: str, body_file: str) -> str:
    """The shell command to run: our server's URL, body to ``body_file``, status on stdout."""
    command = command.replace(DOC_BASE_URL, base_url)
    command = re.sub(r"\s-o\s+\S+", "", command)  # the test keeps the body itself
    command = re.sub(r"\s-i(?=\s|$)", "", command)
    return f"{command} -sS -o {body_file} -w '%{{http_code}}'"


def has_data(value: object) -> bool:
    """The answer is data, not zeros: when it holds numbers, one is non-zero; when it holds
    none, a list is non-empty; when it holds neither (``{"key", "user_id", "variant"}``), a
    string is non-empty."""
    leaves = list(_leaves(value))
    numbers = [v for v in leaves if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers:
        return any(v != 0 for v in numbers)
    if any(isinstance(v, list) for v in leaves):
        return True
    return any(isinstance(v, str) and v for v in leaves)


def _leaves(value: object) -> Iterator[object]:
    """Every scalar of ``value``, plus each non-empty list itself."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        if value:
            yield value
        for item in value:
            yield from _leaves(item)
    else:
        yield value
