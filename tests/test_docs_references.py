"""The repository stands on its own: every reference to a project document resolves (issue 17).

Source comments cite ``docs/PROTOCOL.md §N`` (also ``§N.M``, ranges ``§1.1-1.5`` and lists
``§3.3, §3.4``). Each cited number must be a section heading of docs/PROTOCOL.md, every
referenced docs/*.md file must exist, and no bare ``PROTOCOL.md`` (the old private notes) may
remain.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
SUFFIXES = {".py", ".md", ".sh", ".toml", ".cfg", ".ini", ".txt", ".yml", ".yaml"}
NAMES = {"Makefile"}

NUM = r"\d+(?:\.\d+)*"
SECTION_REF = re.compile(rf"§({NUM})(?:\s*[-\u2013]\s*({NUM}))?")
HEADING = re.compile(rf"^#+\s+({NUM})\s+\S", re.MULTILINE)
DOC_REF = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)\b")
BARE_PROTOCOL = re.compile(r"(?<!docs/)\bPROTOCOL\.md\b")


def source_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files, so a new file is checked before its commit."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    files = []
    for name in out:
        path = ROOT / name
        if name and path.is_file() and (path.suffix in SUFFIXES or path.name in NAMES):
            files.append(path)
    return files


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def sections() -> set[str]:
    return set(HEADING.findall(read(PROTOCOL)))


def test_protocol_doc_exists_and_has_sections() -> None:
    found = sections()
    # The sections the codecs, the target and the initiator are built on.
    for number in ("0.1", "1", "1.1", "1.6", "1.7", "2.4", "3.4", "4.4", "5.1", "7.3", "8", "10"):
        assert number in found, number


def test_section_numbers_are_unique() -> None:
    numbers = HEADING.findall(read(PROTOCOL))
    assert len(numbers) == len(set(numbers))


def test_every_section_reference_resolves() -> None:
    found = sections()
    bad = []
    for path in source_files():
        text = read(path)
        refs = SECTION_REF.findall(text)
        if not refs:
            continue
        # § is only used for docs/PROTOCOL.md: a file using it names that document.
        if path != PROTOCOL and "docs/PROTOCOL.md" not in text:
            bad.append(f"{path.relative_to(ROOT)}: § without naming docs/PROTOCOL.md")
        for first, last in refs:
            for number in (first, last):
                if number and number not in found:
                    bad.append(f"{path.relative_to(ROOT)}: §{number} is not a section")
    assert not bad, "\n".join(bad)


def test_every_docs_reference_names_an_existing_file() -> None:
    bad = []
    for path in source_files():
        for name in DOC_REF.findall(read(path)):
            if not (ROOT / "docs" / name).is_file():
                bad.append(f"{path.relative_to(ROOT)}: docs/{name} does not exist")
    assert not bad, "\n".join(bad)


def test_no_reference_to_the_private_notes_remains() -> None:
    bad = []
    for path in source_files():
        if path.parent == ROOT / "docs" or path == Path(__file__).resolve():
            continue
        for number, line in enumerate(read(path).splitlines(), 1):
            if BARE_PROTOCOL.search(line) or "shared/docs" in line:
                bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("(docs/PROTOCOL.md §1.1-1.5)", [("1.1", "1.5")]),
        ("docs/PROTOCOL.md §3.3, §3.4 and §10.", [("3.3", ""), ("3.4", ""), ("10", "")]),
        ("see docs/PROTOCOL.md §5.", [("5", "")]),
    ],
)
def test_reference_syntax(text: str, numbers: list[tuple[str, str]]) -> None:
    assert SECTION_REF.findall(text) == numbers


def test_the_readme_scenario_parses_and_replays_the_same_for_its_seed() -> None:
    from target.control.scenario import format_schedule, parse_scenario

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r'```toml\n(name = "flaky-path".*?)```', text, re.S)
    assert match is not None, "README.md lost its scenario example"
    scenario = parse_scenario(match.group(1), "README.md")
    first = format_schedule(scenario.schedule())
    assert first == format_schedule(parse_scenario(match.group(1), "README.md").schedule())
    assert len(first) == 8 and "port-up port=1 (end of step[0])" in first[2]
