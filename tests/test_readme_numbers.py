"""Every measured number in README.md and docs/*.md comes from a results file its section cites (issue 13: numbers
with sources).

A section (``#`` to ``###``) cites its sources by path: ``benchmarks/results/<name>.md`` (or a glob such as
``gadget*.md``), ``docs/experiments/<run>/`` folders and model cards ``dpm_core/models/<name>.json`` (their training
and validation records). Every decimal number of the section must appear in one of those files' .md/.json/.csv text,
as the same value rounded to the section's number of decimals (also as a percentage of a fraction, and up to sign) —
or be a setting: a number written in the product's source (dpm_core/, gadgets/, training/, configs_xml/), such as a
default σ or a threshold. Version numbers (Python 3.11, torch 2.13.0, ...) are not measurements and are skipped.
docs/experiments/ holds results themselves and is not checked.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CITE = re.compile(r"((?:benchmarks/results|docs/experiments|dpm_core/models)/[\w./*-]*)")
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")
VERSION_BEFORE = re.compile(r"(Python|torch|Debian|Gadgetron|ISMRMRD|BART|v|version|CUDA)\s*$", re.I)
FILE_NUMBER = re.compile(r"-?\d+\.\d+(?:[eE]-?\d+)?|\d+")


DOCUMENTS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
SOURCE_DIRS = ("dpm_core", "gadgets", "training", "configs_xml")


def sections() -> list[tuple[str, str]]:
    """(document: section title, text) for every section of the README and of docs/*.md."""
    out = []
    for doc in DOCUMENTS:
        for part in re.split(r"\n(?=#{1,3} )", doc.read_text()):
            title = part.splitlines()[0].lstrip("# ").strip() if part.strip() else ""
            out.append((f"{doc.relative_to(REPO)}: {title}", part))
    return out


def settings() -> set[str]:
    """Every decimal literal of the product's source: the settings a document may quote."""
    found = set()
    for folder in SOURCE_DIRS:
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".xml"):
                found.update(re.findall(r"\d+\.\d+", path.read_text()))
    return found


def cited_files(section: str) -> list[Path]:
    files: list[Path] = []
    for cite in CITE.findall(section):
        cite = cite.rstrip(".")
        path = REPO / cite
        if path.is_dir():
            files += sorted(path.iterdir())
        elif "*" in cite:
            files += sorted(REPO.glob(cite))
        elif path.is_file():
            files.append(path)
    return [f for f in files if f.suffix in (".md", ".json", ".csv")]


def file_values(files: list[Path]) -> set[Decimal]:
    values = set()
    for f in files:
        for token in FILE_NUMBER.findall(f.read_text()):
            try:
                value = Decimal(token)
            except ArithmeticError:
                continue
            values.add(abs(value))
            values.add(abs(value) * 100)
    return values


def is_sourced(number: str, values: set[Decimal]) -> bool:
    quantum = Decimal(1).scaleb(-len(number.split(".")[1]))
    target = Decimal(number)
    return any(v.quantize(quantum, rounding=ROUND_HALF_UP) == target for v in values if v < 10 ** 9)


_SETTINGS = settings()
_SECTIONS = sections()


@pytest.mark.parametrize("title,section", _SECTIONS, ids=[t for t, _ in _SECTIONS])
def test_every_documented_number_is_in_a_cited_results_file(title, section):
    numbers = {m.group(1) for m in NUMBER.finditer(section)
               if not VERSION_BEFORE.search(section[:m.start()][-12:]) and m.group(1) not in _SETTINGS}
    if not numbers:
        return
    files = cited_files(section)
    assert files, f"section {title!r} states measured numbers {sorted(numbers)} but cites no results file"
    values = file_values(files)
    missing = sorted(n for n in numbers if not is_sourced(n, values))
    assert not missing, (f"section {title!r}: {missing} appear in none of "
                         f"{[str(f.relative_to(REPO)) for f in files]}")
