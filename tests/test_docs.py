"""The documentation stays true: every command quoted in README.md and docs/*.md parses with the real argument parser
(``python -m atlib ...``, ``torchrun ... -m atlib ...``) or names a real Makefile target (``make X VAR=...``), every
relative link resolves (to a file, and to a heading where it names one), the README's ten-line API example runs, and
the README stays short and self-contained.

Commands are taken from fenced shell code blocks (comments and ``\\`` continuations handled, lines split at ``;``,
``&``, ``&&``, ``|``, leading ``VAR=value`` assignments skipped) and checked in full; commands in inline code spans
are often fragments (``python -m atlib train --compile``), so there only the subcommand and each ``--flag`` must exist.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from atlib.cli import build_parser
from atlib.paths import REPO_ROOT as ROOT

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
OPERATORS = {";", "&", "&&", "|", "||"}
SHELL_KEYWORDS = {"do", "then", "else", "time", "exec"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
COMMAND = re.compile(r"(^|[\s;&|])(python3? -m atlib\b|torchrun\s|atlib\s|make(\s|$))")  # a line quoting a command


# -- reading the documents -------------------------------------------------------------------------------------------
def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced code block."""
    blocks, lang, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if lang is None and m:
            lang, start, lines = m.group(1).lower(), number + 1, []
        elif lang is not None and line.strip().startswith("```"):
            blocks.append((lang, start, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def logical_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Lines with ``\\`` continuations joined, each with its first line number."""
    out, pending, first = [], "", start
    for number, line in enumerate(lines, start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: comments stripped, split at control operators, leading assignments
    and keywords dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for token in lexer:
        if token in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for words in commands:
        while words and (ASSIGNMENT.match(words[0]) or words[0] in SHELL_KEYWORDS):
            words = words[1:]
        if words:
            out.append(words)
    return out


def atlib_arguments(words: list[str]) -> list[str] | None:
    """The arguments after ``python -m atlib`` / ``torchrun ... -m atlib`` / ``atlib``; None for other commands."""
    if words[0] == "atlib":
        return words[1:]
    if words[0] in ("python", "python3", "torchrun") or words[0].endswith("/python"):
        for i in range(len(words) - 1):
            if words[i] == "-m":
                return words[i + 2:] if words[i + 1] == "atlib" else None
    return None


def makefile_targets(path: Path = ROOT / "Makefile") -> set[str]:
    targets = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.%/$()-][^:=#]*?)\s*::?(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(t for t in m.group(1).split() if not t.startswith("."))
    return targets


# -- the checks ------------------------------------------------------------------------------------------------------
def parse_error(arguments: list[str]) -> str | None:
    """None if the real parser accepts ``arguments``, else its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(arguments)
    except SystemExit as e:
        if e.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {e.code}"
    return None


def make_error(words: list[str], targets: set[str]) -> str | None:
    wrong = [w for w in words[1:] if not ASSIGNMENT.match(w) and not w.startswith("-") and w not in targets]
    return f"no Makefile target {', '.join(wrong)} (targets: {', '.join(sorted(targets))})" if wrong else None


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def fragment_error(arguments: list[str], commands: dict[str, argparse.ArgumentParser]) -> str | None:
    """An inline command may be a fragment: its subcommand and each of its --flags must exist."""
    if not arguments:
        return None
    if arguments[0] not in commands:
        return f"unknown subcommand {arguments[0]!r} (expected one of {', '.join(commands)})"
    known = commands[arguments[0]]._option_string_actions
    unknown = [a.split("=")[0] for a in arguments[1:] if a.startswith("--") and a.split("=")[0] not in known]
    return f"{arguments[0]}: unknown option(s) {', '.join(unknown)}" if unknown else None


def command_problems(path: Path, text: str | None = None) -> list[str]:
    """Every quoted command of one document that does not parse or names no Makefile target."""
    text = path.read_text() if text is None else text
    targets, commands, problems = makefile_targets(), subparsers(), []

    def check(number: int, words: list[str], full: bool) -> None:
        where = f"{path.name}:{number}: {' '.join(words)}"
        if words[0] == "make":
            problem = make_error(words, targets)
        else:
            arguments = atlib_arguments(words)
            if arguments is None:
                return
            problem = parse_error(arguments) if full else fragment_error(arguments, commands)
        if problem:
            problems.append(f"{where}\n    -> {problem}")

    for lang, start, lines in code_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for number, line in logical_lines(lines, start):
            if not COMMAND.search(line.split("#")[0]):
                continue  # a block of prose or a listing (the repository map), not commands
            try:
                parsed = shell_commands(line)
            except ValueError as e:  # unbalanced quotes
                problems.append(f"{path.name}:{number}: {line}\n    -> {e}")
                continue
            for words in parsed:
                check(number, words, full=True)
    prose = _without_code_blocks(text)
    for number, line in enumerate(prose.splitlines(), 1):
        for span in INLINE.findall(line):
            if COMMAND.match(span + " "):
                with contextlib.suppress(ValueError):
                    for words in shell_commands(span):
                        check(number, words, full=False)
    return problems


def _without_code_blocks(text: str) -> str:
    """The text with fenced blocks blanked (line numbers kept)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", _without_code_blocks(path.read_text()),
                                                   re.MULTILINE)}


def link_problems(path: Path, text: str | None = None) -> list[str]:
    """Every relative link of one document whose file (or heading) does not exist."""
    text = path.read_text() if text is None else text
    problems = []
    for number, line in enumerate(_without_code_blocks(text).splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if file_part and not resolved.exists():
                problems.append(f"{path.name}:{number}: link {target} -> {resolved} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{path.name}:{number}: link {target}: no heading #{anchor} in {resolved.name}")
    return problems


# -- tests -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_command_parses(path):
    problems = command_problems(path)
    assert not problems, "commands that do not parse:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


def test_the_docs_quote_commands_at_all():
    """The extraction finds the commands (a regex that matched nothing would pass every test above)."""
    text = README.read_text()
    found = [w for _, start, lines in code_blocks(text) for _, line in logical_lines(lines, start)
             if COMMAND.search(line.split("#")[0]) for w in shell_commands(line)]
    assert ["make", "reproduce"] in found and ["make", "test"] in found
    assert any(atlib_arguments(w) and atlib_arguments(w)[:2] == ["campaign", "start"] for w in found)
    assert {"cli.md", "campaign.md", "profiles.md", "conventions.md", "performance.md", "imagenet.md",
            "results.md"} <= {p.name for p in DOCS}


def test_the_checks_catch_bad_commands_and_links(tmp_path):
    bad = tmp_path / "bad.md"
    text = ("```bash\n"
            "python -m atlib train --student wrn-16-1 --no-such-flag 3   # a comment\n"
            "python -m atlib campaign launch --profile one-seed\n"
            "python -m atlib reproduce --profile one-seed \\\n    --only 03 --bogus\n"
            "make no-such-target PROFILE=smoke\n"
            "for i in 0 1; do CUDA_VISIBLE_DEVICES=$i python -m atlib wrok & done; wait\n"
            "python -m atlib runs --results results/one-seed   # fine\n"
            "make reproduce PROFILE=cpu-demo SET=\"seeds=[0,1]\"     # fine\n"
            "```\n"
            "Inline: `python -m atlib train --compile` is fine, `python -m atlib train --compiled` is not.\n"
            "[missing](nowhere.md), [anchor](#nowhere), [web](https://example.org), [self](#inline)\n"
            "## Inline\n")
    bad.write_text(text)
    problems = command_problems(bad)
    assert len(problems) == 6, "\n".join(problems)
    for needle in ("--no-such-flag", "launch", "--bogus", "no-such-target", "wrok", "--compiled"):
        assert any(needle in p for p in problems), needle
    links = link_problems(bad)
    assert len(links) == 2 and "nowhere.md" in links[0] and "#nowhere" in links[1], links


def test_readme_is_short_and_self_contained():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 130, f"README.md has {len(lines)} lines (at most 130)"
    assert "../shared" not in text
    issues = re.findall(r"(?i)\bissues?\s*#?\s*\d+|(?<![\w&/])#\d+\b", text)
    assert not issues, f"README.md refers to issue numbers: {issues}"
    first = next((i for i, line in enumerate(lines, 1) if re.match(r"^\|.*\|\s*\d+\.\d+", line)), None)
    assert first is not None and first <= 25, f"the first result should come within 25 lines (line {first})"


@pytest.mark.parametrize("path", DOCS[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_no_path_outside_the_repository(path):
    assert "../shared" not in path.read_text()


def test_readme_api_example_runs(monkeypatch, capsys):
    """The README's ten-line example (AT between the committed WRN-16-2 and a torchvision model) runs as printed."""
    blocks = [lines for lang, _, lines in code_blocks(README.read_text()) if lang == "python"]
    assert len(blocks) == 1
    code = "\n".join(blocks[0])
    assert len([line for line in blocks[0] if line.strip()]) <= 15
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.strip() == "torch.Size([8, 8, 8])"
