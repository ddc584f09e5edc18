"""The malformed-input corpus (tests/malformed_cases.py) through every transport: the outcome table.

    OMP_NUM_THREADS=1 python benchmarks/bench_malformed.py

The same cases and runners as tests/test_malformed.py (which asserts them); this writes what each transport did —
replay (local mode, from a file), the spawned gadget (execute mode) and the connect-mode server — and whether that is
the case's expected outcome, to benchmarks/results/malformed.{json,md}.
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402

from tests.malformed_cases import CASES, S  # noqa: E402
from tests.test_malformed import TRANSPORTS, _flagged, _run  # noqa: E402
from tests.test_server import ServerProcess  # noqa: E402


def _describe(images, errors, clean) -> tuple[str, str]:
    """(short outcome, first error text)."""
    count = images if isinstance(images, int) else len(images)
    flagged = not isinstance(images, int) and any(_flagged(i) for i in images)
    text = errors[0] if errors else ""
    if not clean:
        kind = "no ERROR: the process ended"
    elif count == 0:
        kind = "ERROR" if errors else "nothing (silent)"
    elif flagged or (errors and count):
        kind = f"fallback ({count} images) + ERROR"
    else:
        kind = f"images ({count})"
    return kind, re.sub(r"\s+", " ", text)[:140]


def main() -> None:
    server = ServerProcess()
    rows = []
    try:
        for case in CASES:
            for transport in TRANSPORTS:
                with tempfile.TemporaryDirectory() as tmp:
                    images, errors, clean = _run(transport, case, server, Path(tmp))
                kind, text = _describe(images, errors, clean)
                count = images if isinstance(images, int) else len(images)
                named = case.pattern is not None and any(re.search(case.pattern, e) for e in errors)
                expected = {"error": count == 0 and named, "images": count == S and not errors,
                            "fallback": count == S and named}[case.outcome]
                if transport == "spawned" and case.spawned_parser_dies:
                    expected = "limit" if (count == 0 and not clean) else False
                rows.append({"input": case.name, "transport": transport, "outcome": kind,
                             "as expected": {True: "yes", False: "NO", "limit": "execute-mode limit"}[expected],
                             "message": text})
    finally:
        server.kill()
    clean_count = sum(r["as expected"] == "yes" for r in rows)
    write_results("malformed", rows, ["input", "transport", "outcome", "as expected", "message"],
                  "Malformed and hostile inputs through every transport",
                  f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_malformed.py` ({len(CASES)} cases x "
                  f"{len(TRANSPORTS)} transports; the same runners assert them in tests/test_malformed.py). "
                  f"{clean_count} of {len(rows)} outcomes are the case's expected one; 'execute-mode limit': "
                  "gadgetron-python parses the header itself before our code runs (execute mode), refuses it and "
                  "the child ends without our ERROR — replay and the server parse it with our tolerant parser.",
                  extra={"clean": clean_count, "total": len(rows)})


if __name__ == "__main__":
    main()
