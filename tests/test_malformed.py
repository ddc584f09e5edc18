"""Every malformed input of tests/malformed_cases.py through every transport: replay (local mode, from a file), the
spawned gadget (execute mode, acquisition input) and the connect-mode server. Each gives exactly its case's outcome:
an error naming the problem, flagged fallback images, or images (with the repair said in DPM_InputWarnings) — never
a traceback as the only message, never a silent close, never a hang; the server keeps serving after every case.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from gadgets import replay
from gadgets.mrd_io import MrdRaw, write_mrd_raw
from tests.harness import GadgetronSide, config_xml
from tests.malformed_cases import CASES, S
from tests.test_server import ServerProcess

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

TIMEOUT = 120.0
TRANSPORTS = ("replay", "spawned", "server")
SPAWN_WORKERS = 2     # spawned gadgets side by side: a child spends most of its seconds starting Python and torch


@pytest.fixture(scope="module")
def server():
    process = ServerProcess()
    yield process
    process.kill()


@pytest.fixture(scope="module")
def spawned_outcomes():
    """{case name: (images, errors, clean)} of every case through the spawned gadget, SPAWN_WORKERS children at a time
    (each with its own Gadgetron-side driver and port); each test below asserts its own case's outcome."""
    with ThreadPoolExecutor(SPAWN_WORKERS) as pool:
        futures = {case.name: pool.submit(_run_spawned, case) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def _run_spawned(case):
    header_xml, acquisitions, properties = case.build()
    try:
        result = GadgetronSide(target="dpm_recon_acquisitions", timeout=TIMEOUT).run(
            header_xml, acquisitions, config=config_xml(properties))
    except ConnectionError as exc:                    # the child died during the handshake
        return [], [f"{type(exc).__name__}: {exc}"], False
    return result.images, result.errors, result.closed and result.returncode == 0


def _flagged(image) -> bool:
    return "SENSE_FALLBACK" in image.meta["ImageComment"]


def _run(transport: str, case, server, tmp_path):
    """(images, errors, clean) of one case through one transport; images carry .meta (wire) or are counted."""
    if transport == "spawned":
        return _run_spawned(case)
    header_xml, acquisitions, properties = case.build()
    if transport == "replay":
        path = tmp_path / "in.h5"
        write_mrd_raw(str(path), MrdRaw(header_xml, acquisitions))
        try:
            summary = replay.replay(str(path), str(tmp_path / "out"), mode="local", config=properties, dicom=False)
        except (ValueError, RuntimeError) as exc:     # what dpm-replay reports as its error (rc 1)
            return [], [str(exc)], True
        return summary["num_images"], summary["errors"], True
    result = server.client(header_xml, acquisitions, config=properties)
    return result.images, result.errors, result.closed


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input(case, transport, server, tmp_path, request):
    if transport == "spawned":
        images, errors, clean = request.getfixturevalue("spawned_outcomes")[case.name]
    else:
        images, errors, clean = _run(transport, case, server, tmp_path)
    count = images if isinstance(images, int) else len(images)
    if transport == "spawned" and case.spawned_parser_dies:
        # Execute mode: gadgetron-python parses the header before our code runs and refuses this one.
        assert count == 0 and not clean, (images, errors)
        return
    assert clean, errors
    if case.outcome == "error":
        assert count == 0, (case.name, errors)
        assert len(errors) >= 1 and any(re.search(case.pattern, e) for e in errors), errors
    elif case.outcome == "images":
        assert count == S and errors == [], errors
        if case.pattern and not isinstance(images, int):
            assert all(re.search(case.pattern, i.meta["DPM_InputWarnings"]) for i in images
                       if "DPM_InputWarnings" in i.meta) and any("DPM_InputWarnings" in i.meta for i in images)
        if not isinstance(images, int):
            assert not any(_flagged(i) for i in images)
    else:                                                        # fallback
        assert count == S and any(re.search(case.pattern, e) for e in errors), errors
        if not isinstance(images, int):
            assert all(_flagged(i) for i in images)
    if transport == "server":                                    # still serving
        header_xml, acquisitions, properties = CASES[0].build()
        after = server.client(header_xml, acquisitions, config=properties)
        assert after.closed and after.errors == [] and len(after.images) == S, server.log[-3000:]
