"""dpm-server (connect mode) end to end: a real server subprocess on a loopback port, streams through the wire protocol.

Every stream through the server must give what the spawned gadget gives (execute mode, tests/harness.GadgetronSide):
same pixels, same image headers, same meta (except the measured seconds). The server is also checked for queueing,
ERROR answers (bad property, unknown CONFIG_FILE name, malformed HEADER, busy, shutdown) and a clean SIGTERM.
Every socket read has a deadline and every process wait a timeout; the servers are killed if a test fails.
"""
from __future__ import annotations

import copy
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from gadgets import wire
from gadgets.mrd_io import make_raw_acquisitions
from tests.harness import GadgetronSide, bucket_to_buffer, config_xml, correlated_noise, header_bytes, \
    oversampled_phantom

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 150.0
H = W = 64
C, S = 4, 2
CONFIG = {"method": "sense"}
ENV = {"OMP_NUM_THREADS": "2"}          # the spawned gadget's setting (tests/harness.py): same arithmetic


class ServerProcess:
    """``dpm-server --port 0 ARGS`` as a subprocess; its log is collected; :attr:`port` read from the log."""

    def __init__(self, *args: str, startup_timeout: float = 120.0, env: dict | None = None):
        script = Path(sys.executable).with_name("dpm-server")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "gadgets.server"]
        env = dict(os.environ, **ENV, **(env or {}))
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(command + ["--port", "0", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        match = self.wait_for_log(r"listening on [\d.]+:(\d+)", startup_timeout)
        self.port = int(match.group(1))

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log)
            if match:
                return match
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"dpm-server exited (rc {self.proc.returncode}) before {pattern!r}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the dpm-server log within {timeout} s:\n{self.log[-4000:]}")

    def client(self, header_xml: str, items, **kwargs) -> wire.StreamResult:
        return wire.run_client("127.0.0.1", self.port, header_xml, items, timeout=TIMEOUT, **kwargs)

    def terminate(self, timeout: float = 20.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        returncode = self.proc.wait(timeout)
        elapsed = time.monotonic() - start
        self._close_log()
        return returncode, elapsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        """Read the log to its end and close the pipe (an open one warns when the object is collected)."""
        self._reader.join(5)
        if not self._reader.is_alive():
            self.proc.stderr.close()


def port_is_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def assert_same_images(got: list, expected: list, log: str = "") -> None:
    """Same pixels (bit for bit), same ImageHeader bytes, same meta apart from measured seconds (whose text length
    is the one header field allowed to differ: attribute_string_len)."""
    assert len(got) == len(expected), log[-3000:]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.data, b.data)
        head_a, head_b = a.getHead(), b.getHead()
        head_a.attribute_string_len = head_b.attribute_string_len = 0
        assert header_bytes(head_a) == header_bytes(head_b)
        meta_a = {k: a.meta[k] for k in a.meta.keys() if "Seconds" not in k}
        meta_b = {k: b.meta[k] for k in b.meta.keys() if "Seconds" not in k}
        assert meta_a == meta_b


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def scan():
    """Two-slice phantom, 4 coils, nominal R=3 + 16 ACS, noise scan: (header_xml, acquisitions, ReconData messages)."""
    kos, _ = oversampled_phantom(H, W, C, S, seed=21)
    noise, mixing = correlated_noise(C, 512, 2e-3, seed=22)
    mask = np.zeros(H, dtype=bool)
    mask[H // 2 % 3::3] = True
    raw = make_raw_acquisitions(kos.astype(np.complex64), mask, num_acs=16, noise=noise)
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    return raw.header_xml, raw.acquisitions, messages


@pytest.fixture(scope="module")
def spawned(scan):
    """The reference: the same streams through the spawned gadget (execute mode)."""
    header_xml, acquisitions, messages = scan
    out = {}
    for kind, target, items in (("acquisitions", "dpm_recon_acquisitions", acquisitions),
                                ("recon_data", "dpm_recon", messages)):
        result = GadgetronSide(target=target, timeout=TIMEOUT, env=ENV).run(header_xml, copy.deepcopy(items),
                                                                            config=config_xml(CONFIG))
        assert result.closed and result.returncode == 0 and result.errors == [], result.log[-3000:]
        assert len(result.images) == S
        out[kind] = result
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shared server; its --config-dir holds the shipped configurations and a test one (flair_test.xml)."""
    config_dir = tmp_path_factory.mktemp("configs")
    for path in (REPO / "configs_xml").glob("*.xml"):
        (config_dir / path.name).write_text(path.read_text())
    (config_dir / "flair_test.xml").write_text(
        "<configuration><stream><external><connect port='1' address='localhost'/><configuration>"
        "<property name='series_index' value='7'/><property name='steps' value='zero'/>"
        "</configuration></external></stream></configuration>")
    process = ServerProcess("--set", "method=sense", "--max-queue", "4", "--config-dir", str(config_dir))
    yield process
    process.kill()


# ---------------------------------------------------------------------------------------------------------------------
# Streams

def test_sequential_streams_match_the_spawned_gadget(server, scan, spawned):
    header_xml, acquisitions, messages = scan
    runs = [("acquisitions", server.client(header_xml, copy.deepcopy(acquisitions), config=CONFIG)),
            ("recon_data", server.client(header_xml, copy.deepcopy(messages), config=CONFIG)),
            # CONFIG_FILE (client protocol): "dpm_recon" names the server's defaults (--set method=sense)
            ("acquisitions", server.client(header_xml, copy.deepcopy(acquisitions), config_name="dpm_recon"))]
    for kind, result in runs:
        assert result.closed and result.errors == [], server.log[-3000:]
        assert_same_images(result.images, spawned[kind].images, server.log)
        print(f"{kind}: server {result.elapsed:.2f} s, spawned {spawned[kind].elapsed:.2f} s")
    deadline = time.monotonic() + 60                                      # a timeout, not a speed check
    while (server.log.count(" done: ") < 3 or server.log.count("2 images; maps=1") < 3) \
            and time.monotonic() < deadline:                                 # logged just after the CLOSE
        time.sleep(0.05)
    log = server.log
    assert "recon_data input, 1 volume(s), 2 image(s)" in log         # per-slice ReconData grouped into the volume
    assert "acquisitions input, 1 volume(s), 2 image(s)" in log
    assert "CONFIG_FILE 'dpm_recon'" in log
    assert log.count("built reconstructor") == 1                        # the model/reconstructor is built once
    assert log.count("2 images; maps=1") == 3                           # one line per volume with its parameters
    assert all("2 images; maps=1" in spawned[kind].log for kind in spawned)     # as the spawned gadget logs it


def test_connect_mode_error_report_as_in_execute_mode(scan):
    """A Gadgetron peer of the server with the DPM stage failing (the test hook in the server's environment): with
    error_report=log the flagged SENSE fallback images arrive and the stream ends in a plain CLOSE (what
    gadgetron --from_stream needs); with the default error_report=error the same images are followed by ERROR."""
    from gadgets.pipeline import INJECT_FAILURE_ENV
    header_xml, acquisitions, _ = scan
    server = ServerProcess("--set", "method=dpm", env={INJECT_FAILURE_ENV: "reconstruction_error"})
    try:
        quiet = server.client(header_xml, copy.deepcopy(acquisitions), config={"error_report": "log"})
        loud = server.client(header_xml, copy.deepcopy(acquisitions), config={"error_report": "error"})
    finally:
        server.kill()
    for result in (quiet, loud):
        assert result.closed and len(result.images) == S, server.log[-3000:]
        assert all("SENSE_FALLBACK" in image.meta["ImageComment"] for image in result.images)
    assert quiet.errors == [], quiet.errors
    assert len(loud.errors) == 1 and "delivered the SENSE fallback" in loud.errors[0], loud.errors
    assert "error_report=log: not sent as ERROR" in server.log


def test_concurrent_streams_are_queued_on_one_worker(server, scan, spawned):
    header_xml, acquisitions, _ = scan
    results: dict = {}

    def run(name):
        results[name] = server.client(header_xml, copy.deepcopy(acquisitions), config={**CONFIG, "seed": 0})

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT + 10)
    assert set(results) == {"a", "b"}
    for result in results.values():
        assert result.closed and result.errors == []
        assert_same_images(result.images, spawned["acquisitions"].images, server.log)
    log = server.log
    assert "queue position 1 (1 stream(s) ahead)" in log, log[-3000:]
    numbers = [int(n) for n in re.findall(r"stream (\d+) from \S+: CONFIG \{\"method\": \"sense\", \"seed\": \"0\"\}",
                                          log)]
    assert len(numbers) == 2
    done = [server.wait_for_log(rf"stream {n} from \S+ done: .*?, ([\d.]+) s \(\+ ([\d.]+) s queued\)", 10)
            for n in numbers]                          # (the log line follows the CLOSE the client saw)
    service = [float(match.group(1)) for match in done]
    queued = [float(match.group(2)) for match in done]
    # one worker: the second stream waited for (most of) the first one's service time
    assert max(queued) > 0.5 * min(service), (queued, service)


def test_errors_are_answered_and_the_server_keeps_serving(server, scan, spawned):
    header_xml, acquisitions, messages = scan
    bad = server.client(header_xml, copy.deepcopy(acquisitions), config={"method": "sense", "steps": "zero"})
    assert bad.closed and bad.images == []
    assert len(bad.errors) == 1 and "cannot start" in bad.errors[0] and "'steps'" in bad.errors[0]

    unknown = server.client(header_xml, copy.deepcopy(acquisitions[:5]), config_name="no_such_config")
    assert unknown.closed and unknown.images == []
    assert len(unknown.errors) == 1 and "unknown configuration 'no_such_config'" in unknown.errors[0]
    assert "dpm_recon" in unknown.errors[0] and "dpm_recon_acquisitions" in unknown.errors[0]

    garbage = server.client("<ismrmrdHeader>not a header", [], config=CONFIG)
    assert garbage.closed and garbage.images == []
    assert len(garbage.errors) == 1 and "HEADER is not a usable ISMRMRD XML header" in garbage.errors[0]
    assert "not well-formed XML" in garbage.errors[0]

    # a peer that vanishes in the middle of a message: the stream ends (gadgetron-python's own socket wrapper would
    # spin forever on the closed socket and block the worker)
    stream = io.BytesIO()
    serializer = ismrmrd.ProtocolSerializer(stream)
    for acquisition in acquisitions[:4]:
        serializer.serialize(acquisition)
    config, header = config_xml(CONFIG).encode(), header_xml.encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(struct.pack("<HI", 2, len(config)) + config + struct.pack("<HI", 3, len(header)) + header
                     + stream.getvalue()[:-100])
    server.wait_for_log(r"stream \d+ from \S+: ended: ConnectionError: the peer closed the connection", 30)

    good = server.client(header_xml, copy.deepcopy(messages), config=CONFIG)
    assert good.closed and good.errors == []
    assert_same_images(good.images, spawned["recon_data"].images, server.log)


def test_busy_refusal_and_shutdown_abort_the_waiting_streams(scan):
    """--max-queue 1: one stream running (held open: no CLOSE), one waiting, a third refused as busy; then SIGTERM:
    the running one is aborted after --grace with ERROR + CLOSE, the waiting one is refused, exit 0, port closed."""
    header_xml, acquisitions, _ = scan
    process = ServerProcess("--set", "method=sense", "--input", "acquisitions", "--max-queue", "1", "--grace", "1")
    replies: dict = {}
    sockets = []

    def held(name):
        conn = socket.create_connection(("127.0.0.1", process.port), timeout=30)
        sockets.append(conn)
        replies[name] = wire.exchange(conn, header_xml, copy.deepcopy(acquisitions[:20]), config=config_xml(CONFIG),
                                      deadline=time.monotonic() + 60, send_close=False)
        conn.close()                                   # as Gadgetron does after CLOSE/ERROR

    try:
        running = threading.Thread(target=held, args=("running",))
        running.start()
        process.wait_for_log(r"stream 1: reconstructing \(acquisitions input")
        waiting = threading.Thread(target=held, args=("waiting",))
        waiting.start()
        process.wait_for_log(r"stream 2 from \S+: CONFIG .*queue position 1")
        busy = process.client(header_xml, copy.deepcopy(acquisitions[:5]), config=CONFIG)
        assert busy.closed and busy.images == []
        assert len(busy.errors) == 1 and "busy" in busy.errors[0] and "--max-queue 1" in busy.errors[0]

        returncode, _ = process.terminate(timeout=20)            # raises if the server has not exited by then
        running.join(30)
        waiting.join(30)
    finally:
        for conn in sockets:
            conn.close()
        process.kill()
    assert returncode == 0, process.log[-3000:]
    assert port_is_closed(process.port)
    images, errors, _, _, closed, _ = replies["running"]
    assert closed and images == [] and len(errors) == 1 and "aborted" in errors[0] and "shutting down" in errors[0]
    images, errors, _, _, closed, _ = replies["waiting"]
    assert closed and images == [] and len(errors) == 1 and "waited in the queue" in errors[0]
    assert "stopped after" in process.log


def test_cli_refuses_a_bad_default_property(capsys):
    """A bad --set shows at start: exit 2 with the property named, nothing listens."""
    from gadgets.server import main

    assert main(["--port", "0", "--set", "num_maps=3"]) == 2
    stderr = capsys.readouterr().err
    assert "'num_maps'" in stderr and "listening" not in stderr


def test_config_file_name_selects_a_server_side_configuration(server, scan):
    """CONFIG_FILE NAME -> the <external><configuration> properties of NAME.xml in --config-dir, over the defaults."""
    header_xml, acquisitions, _ = scan
    result = server.client(header_xml, copy.deepcopy(acquisitions[:5]), config_name="flair_test.xml")
    assert result.closed and len(result.errors) == 1 and "'steps'" in result.errors[0]   # the file's properties
    server.wait_for_log(re.escape("CONFIG_FILE 'flair_test.xml' {\"series_index\": \"7\", \"steps\": \"zero\"}"),
                        10)                            # logged just after the CLOSE the client saw
    outside = server.client(header_xml, [], config_name="../etc/passwd")
    assert outside.closed and len(outside.errors) == 1 and "plain configuration name" in outside.errors[0]
    assert "flair_test" in outside.errors[0]


def test_text_message_after_the_header_is_read(server, scan):
    """FIRE clients may send TEXT (id 5, JSON parameters) after the header: read and logged, not a protocol failure.
    (TEXT then CLOSE is an empty stream: ERROR "no k-space", as the spawned gadget answers an empty stream.)"""
    header_xml, _, _ = scan
    text = b'{"parameters": {"config": "dpm_recon"}}'
    result = server.client(header_xml, [struct.pack("<HI", 5, len(text)) + text], config=CONFIG)
    assert result.closed and result.images == []
    assert len(result.errors) == 1 and "no imaging k-space in the stream" in result.errors[0]
    server.wait_for_log(re.escape('TEXT from the client: {"parameters"'), timeout=10)   # log lines lag


def test_null_terminated_strings_of_the_mrd_streaming_format_are_accepted(server, scan, spawned):
    """FIRE/OpenRecon clients end CONFIG_TEXT, HEADER and TEXT with a NUL counted in the length (DESIGN.md §6): the
    stream is served exactly as the bare-string one."""
    header_xml, acquisitions, _ = scan
    text = b'{"parameters": {"config": "dpm_recon"}}\0'
    items = [struct.pack("<HI", 5, len(text)) + text] + copy.deepcopy(acquisitions)
    result = server.client(header_xml, items, config=CONFIG, null_terminated=True)
    assert result.closed and result.errors == [], server.log[-3000:]
    assert_same_images(result.images, spawned["acquisitions"].images, server.log)
    # Errors to such a client go as TEXT "ERROR: ..." (its protocol has no ERROR message), to Gadgetron as ERROR.
    empty = server.client(header_xml, [], config=CONFIG, null_terminated=True)
    assert empty.closed and empty.errors == [] and empty.images == []
    assert any(t.startswith("ERROR: ") and "no imaging k-space in the stream" in t for t in empty.texts), empty.texts
    bare = server.client(header_xml, [], config=CONFIG)
    assert len(bare.errors) == 1 and "no imaging k-space in the stream" in bare.errors[0] and bare.texts == []


def test_waveforms_are_consumed_for_mrd_clients_and_passed_back_to_gadgetron(server, scan, spawned):
    """Physiological waveforms (id 1026) interleaved with the acquisitions: an MRD/FIRE client (NUL-terminated
    strings) gets its images and none of its waveforms back (accepted and ignored, counted in the log); a Gadgetron
    peer gets them passed back, as Gadgetron's own gadgets do with items they do not consume. Images unchanged."""
    header_xml, acquisitions, _ = scan
    waveforms = []
    for k in range(3):
        w = ismrmrd.Waveform.from_array(np.arange(64, dtype=np.uint32).reshape(2, 32) + k)
        w.waveform_id = 1
        waveforms.append(w)
    items = copy.deepcopy(acquisitions)
    items = items[:3] + waveforms[:2] + items[3:10] + waveforms[2:] + items[10:]
    mrd = server.client(header_xml, copy.deepcopy(items), config=CONFIG, null_terminated=True)
    assert mrd.closed and mrd.errors == [] and mrd.passthrough == [], server.log[-3000:]
    assert_same_images(mrd.images, spawned["acquisitions"].images, server.log)
    server.wait_for_log(r"3 waveform\(s\) ignored", timeout=10)
    gadgetron = server.client(header_xml, copy.deepcopy(items), config=CONFIG)
    assert gadgetron.errors == [] and len(gadgetron.passthrough) == 3
    assert all(isinstance(w, ismrmrd.Waveform) for w in gadgetron.passthrough)
    assert_same_images(gadgetron.images, spawned["acquisitions"].images, server.log)


def test_json_parameters_in_text_choose_the_configuration_and_set_properties(server, scan):
    """A FIRE client's JSON parameters (TEXT after the header): parameters.config names the configuration (the test
    one sets series 7), user keys that are gadget properties apply on top (series_index 9 wins), others are ignored;
    an unknown name is refused with the known ones (no default configured)."""
    header_xml, acquisitions, _ = scan

    def text(payload):
        data = json.dumps(payload).encode() + b"\0"
        return struct.pack("<HI", 5, len(data)) + data

    result = server.client(header_xml, [text({"parameters": {"config": "flair_test", "steps": "2"}})]
                           + copy.deepcopy(acquisitions), config=CONFIG, null_terminated=True)
    assert result.closed and result.errors == [], server.log[-3000:]
    assert {im.image_series_index for im in result.images} == {7}
    result = server.client(header_xml, [text({"parameters": {"config": "flair_test", "series_index": 9,
                                                             "steps": "2", "options": "x"}})]
                           + copy.deepcopy(acquisitions), config=CONFIG, null_terminated=True)
    assert result.closed and {im.image_series_index for im in result.images} == {9}
    refused = server.client(header_xml, [text({"parameters": {"config": "invertcontrast"}})]
                            + copy.deepcopy(acquisitions), config=CONFIG, null_terminated=True)
    assert refused.images == [] and any("unknown configuration 'invertcontrast'" in t for t in refused.texts)


def test_a_default_configuration_replaces_unknown_names_and_says_so(scan):
    header_xml, acquisitions, _ = scan
    process = ServerProcess("--set", "method=sense", "--default-config", "dpm_recon")
    try:
        result = process.client(header_xml, copy.deepcopy(acquisitions), config_name="invertcontrast")
        assert result.closed and result.errors == [] and len(result.images) == S, process.log[-3000:]
        assert any("'invertcontrast' is unknown here; reconstructing with 'dpm_recon'" in t for t in result.texts)
    finally:
        process.kill()


def test_dpm_stream_through_the_server_equals_the_spawned_gadget(server, scan):
    """The DPM itself (shipped model, 5 DDS steps) through the connect-mode server and through the spawned gadget:
    the same images bit for bit (one pipeline behind both transports), DPM images and not the fallback."""
    header_xml, acquisitions, _ = scan
    config = {"method": "dpm", "steps": "5"}
    served = server.client(header_xml, copy.deepcopy(acquisitions), config=config)
    spawned = GadgetronSide(target="dpm_recon_acquisitions", timeout=TIMEOUT, env=ENV).run(
        header_xml, copy.deepcopy(acquisitions), config=config_xml(config))
    assert served.errors == [] and spawned.errors == [] and len(served.images) == S, server.log[-3000:]
    assert all("SENSE_FALLBACK" not in i.meta["ImageComment"] and i.meta["DPM_Sampler"] == "fast"
               for i in served.images)
    assert_same_images(served.images, spawned.images, server.log)


def test_sigterm_stops_the_server_cleanly(scan):
    """A server that has served a stream exits 0 on SIGTERM (within the wait's timeout) and its port is closed. Its
    own process, so that no other test depends on running before it."""
    header_xml, acquisitions, _ = scan
    process = ServerProcess("--set", "method=sense")
    try:
        served = process.client(header_xml, copy.deepcopy(acquisitions), config=CONFIG)
        assert served.closed and served.errors == [] and len(served.images) == S, process.log[-3000:]
        returncode, _ = process.terminate(timeout=20)
    finally:
        process.kill()
    assert returncode == 0, process.log[-3000:]
    assert port_is_closed(process.port)
    assert "received SIGTERM" in process.log and "stopped after" in process.log


def test_the_server_picks_each_streams_model_from_its_header():
    """model=auto on the warm server: both shipped models are built at start; a FLAIR header gets flair_default, a
    T1 header (short TR/TE, no inversion) foundation_default, in the images' meta and the stream log."""
    kos, _ = oversampled_phantom(32, 32, 4, 1, seed=5)
    mask = np.zeros(32, dtype=bool)
    mask[::2] = True
    streams = {
        "FLAIR": make_raw_acquisitions(kos.astype(np.complex64), mask, num_acs=12,
                                       header_kwargs=dict(protocol="AX FLAIR", tr_ms=9000.0, te_ms=90.0, ti_ms=2500.0)),
        "T1": make_raw_acquisitions(kos.astype(np.complex64), mask, num_acs=12,
                                    header_kwargs=dict(protocol="AX T1 SE", tr_ms=550.0, te_ms=11.0, ti_ms=None)),
    }
    process = ServerProcess("--set", "steps=2")
    try:
        got = {}
        for contrast, raw in streams.items():
            result = process.client(raw.header_xml, copy.deepcopy(raw.acquisitions))
            assert result.closed and result.errors == [] and len(result.images) == 1, process.log[-3000:]
            got[contrast] = result.images[0].meta
        assert got["FLAIR"]["DPM_Model"] == "flair_default" and got["FLAIR"]["DPM_Contrast"] == "FLAIR"
        assert got["T1"]["DPM_Model"] == "foundation_default" and got["T1"]["DPM_Contrast"] == "T1"
        process.wait_for_log(re.escape("model: FLAIR scan -> flair_default"))      # log lines may lag the CLOSE
        process.wait_for_log(re.escape("model: T1 scan -> foundation_default"))
    finally:
        process.kill()
