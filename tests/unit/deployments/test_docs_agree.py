"""The docs agree with the code: every setting is documented, and every command the docs show exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from scaleops.cli.app import app
from scaleops.core.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[3]
DOCS = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}


def leaf_settings(model: type[BaseModel] = Settings, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    leaves: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            leaves += leaf_settings(kind, (*path, name))
        elif not (path == () and name == "chains"):  # per-chain settings: documented as a table
            leaves.append((*path, name))
    return leaves


def documented(path: tuple[str, ...]) -> bool:
    """The full variable anywhere, or `NAME` / `__NAME` in a page that documents its section."""
    full = env_name(path)
    section = env_name(path[:1]) + "__" if len(path) > 1 else full
    short = re.compile(rf"`(?:__)?{path[-1].upper()}`|__{path[-1].upper()}\b")
    return any(full in text or (section in text and short.search(text)) for text in DOCS.values())


@pytest.mark.parametrize("path", leaf_settings(), ids=lambda p: env_name(p))
def test_every_setting_is_documented(path: tuple[str, ...]) -> None:
    assert documented(path), f"{env_name(path)} appears in no README or docs/ page"


def shown_commands() -> set[tuple[str, ...]]:
    """`scaleops <group> <command>` as the docs show it in code: inline code spans and the lines of
    fenced blocks that run scaleops (first two words that look like command names)."""
    found: set[tuple[str, ...]] = set()
    for text in DOCS.values():
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        code = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        code += [line for block in blocks for line in block.splitlines()]
        for snippet in code:
            match = re.match(r"\s*(?:\$\s*)?(?:\S*/)?scaleops\s+(.*)", snippet)
            if not match:
                continue
            words = []
            for word in match.group(1).split():
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                words.append(word)
            if words:
                found.add(tuple(words[:2]))
    return found


@pytest.mark.parametrize("words", sorted(shown_commands()), ids=" ".join)
def test_every_command_the_docs_show_exists(words: tuple[str, ...]) -> None:
    runner = CliRunner()
    first = runner.invoke(app, [words[0], "--help"])
    assert first.exit_code == 0, f"`scaleops {words[0]}` does not exist: {first.stderr[-300:]}"
    if len(words) == 2 and "Commands" in first.stdout:  # a group: its second word must be a command
        assert words[1] in first.stdout, f"`scaleops {' '.join(words)}`: no such command"
