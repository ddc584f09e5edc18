"""gadgets.pacs: C-STORE into a real Orthanc started by the test; refused connections are reported, files kept."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

from gadgets.dicom import images_to_datasets, write_dicom_series
from gadgets.pacs import send_to_pacs
from tests.test_dicom import HEADER, make_images, require_tool

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)


def free_port() -> int:
    """A port the OS had free a moment ago. Orthanc binds its own ports, so the port cannot be handed over as a bound
    socket; OrthancServer retries with new ports when Orthanc loses that race and checks that it is its own Orthanc
    that answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ORTHANC_NAME = "dpm-flair-test"
START_ATTEMPTS = 3


class OrthancServer:
    def __init__(self, root: Path):
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start(root)
                return
            except RuntimeError:
                if attempt == START_ATTEMPTS:
                    raise

    def _start(self, root: Path):
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": ORTHANC_NAME, "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "DicomServerEnabled": True, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False, "StorageCompression": False, "Plugins": [],
            "DicomModalities": {}, "ConcurrentJobs": 1, "HttpThreadsCount": 4,
        }
        cfg = root / "orthanc.json"
        cfg.write_text(json.dumps(config))
        self.log = open(root / "orthanc.log", "w")
        self.proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                name = self.get("/system").get("Name")
                if name != ORTHANC_NAME:                       # another server took the port first
                    self.stop()
                    raise RuntimeError(f"127.0.0.1:{self.http_port} answers as {name!r}, not our Orthanc")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Orthanc did not answer on 127.0.0.1:{self.http_port}; see {root}/orthanc.log")
                time.sleep(0.1)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if ORTHANC is None:
        require_tool("Orthanc")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def test_cstore_round_trip_into_orthanc(orthanc, tmp_path):
    images = make_images(5, 7, order=[4, 2, 0, 1, 3]) + make_images(3, 8, comment="SENSE fallback used")
    datasets = images_to_datasets(HEADER, images)
    paths = write_dicom_series(datasets, tmp_path)
    before = set(orthanc.get("/instances"))
    report = send_to_pacs(paths, "127.0.0.1", orthanc.dicom_port, called_ae="ORTHANC", timeout=10)
    assert report.ok, report.summary()
    assert report.n_sent == 8 and report.associations == 1
    assert all(r.status == 0 and r.attempts == 1 for r in report.instances)

    new = set(orthanc.get("/instances")) - before
    assert len(new) == 8
    tags = {t["SOPInstanceUID"]: t for t in (orthanc.get(f"/instances/{i}/simplified-tags") for i in new)}
    assert set(tags) == {d.SOPInstanceUID for d in datasets}
    for d in datasets:
        t = tags[d.SOPInstanceUID]
        assert t["SeriesInstanceUID"] == d.SeriesInstanceUID and t["StudyInstanceUID"] == d.StudyInstanceUID
        assert int(t["SeriesNumber"]) == d.SeriesNumber and int(t["InstanceNumber"]) == d.InstanceNumber
        assert t["PatientID"] == "PID12345" and t["PatientName"] == "Müller^Hans"
        assert t["ImagePositionPatient"] == "\\".join(str(v) for v in d.ImagePositionPatient)
        assert t["ImageOrientationPatient"] == "\\".join(str(v) for v in d.ImageOrientationPatient)
        assert t["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.4"
    # Series grouping: one Orthanc study with our two series of 5 and 3 instances.
    study = orthanc.get("/studies")
    ours = [s for s in (orthanc.get(f"/studies/{sid}") for sid in study)
            if s["MainDicomTags"]["StudyInstanceUID"] == datasets[0].StudyInstanceUID]
    assert len(ours) == 1
    sizes = sorted(len(orthanc.get(f"/series/{sid}")["Instances"]) for sid in ours[0]["Series"])
    assert sizes == [3, 5]
    descriptions = {orthanc.get(f"/series/{sid}")["MainDicomTags"]["SeriesDescription"] for sid in ours[0]["Series"]}
    assert descriptions == {"FLAIR_tra_DPM", "FLAIR_tra_SENSE_FALLBACK"}
    print(f"Orthanc round trip: {report.n_sent} instances, {len(ours[0]['Series'])} series")


def test_replayed_dpm_series_reaches_orthanc_with_its_geometry(orthanc, tmp_path):
    """The DPM (shipped model, 5 steps) through dpm-replay: its DICOM files go into the real Orthanc over C-STORE and
    come back with the geometry and the DPM marking they were written with."""
    import numpy as np
    from gadgets import replay
    from gadgets.mrd_io import make_raw_acquisitions, write_mrd_raw
    from training.synth import generate_subject
    subject = generate_subject(12, contrast="AXFLAIR", matrix=64, coils=4, slices=2)
    mask = np.zeros(64, dtype=bool)
    mask[32 % 3::3] = True
    write_mrd_raw(str(tmp_path / "raw.h5"), make_raw_acquisitions(subject.kspace.numpy(), mask, num_acs=16))
    replay.replay(str(tmp_path / "raw.h5"), str(tmp_path / "out"), mode="local", config={"method": "dpm", "steps": "5"})
    paths = sorted((tmp_path / "out" / "dicom").rglob("*.dcm"))
    assert len(paths) == 2
    report = send_to_pacs(paths, "127.0.0.1", orthanc.dicom_port, called_ae="ORTHANC", timeout=10)
    assert report.ok and report.n_sent == 2, report.summary()
    for path in paths:
        ours = pydicom.dcmread(path)
        found = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{orthanc.http_port}/tools/lookup", data=ours.SOPInstanceUID.encode(), method="POST"),
            timeout=5).read())
        assert len(found) == 1
        tags = orthanc.get(f"/instances/{found[0]['ID']}/simplified-tags")
        assert tags["ImagePositionPatient"] == "\\".join(str(v) for v in ours.ImagePositionPatient)
        assert tags["ImageOrientationPatient"] == "\\".join(str(v) for v in ours.ImageOrientationPatient)
        assert tags["SeriesDescription"] == ours.SeriesDescription and "SENSE_FALLBACK" not in ours.SeriesDescription
        assert "diffusion" in str(ours.get("ImageComments", "")).lower() + str(ours.get("DerivationDescription", ""))


def test_deidentified_datasets_sent_without_files(orthanc):
    datasets = images_to_datasets(HEADER, make_images(2, 11), deidentify=True)
    report = send_to_pacs(datasets, "127.0.0.1", orthanc.dicom_port, timeout=10)
    assert report.ok and report.n_sent == 2 and all(r.path is None for r in report.instances)
    for d in datasets:
        (oid,) = [x["ID"] for x in _lookup(orthanc, d.SOPInstanceUID)]
        t = orthanc.get(f"/instances/{oid}/simplified-tags")
        assert t["PatientID"].startswith("ANON-") and t["PatientIdentityRemoved"] == "YES"


def _lookup(orthanc, uid):
    req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}/tools/lookup", data=uid.encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_refused_connection_is_reported_and_files_remain(tmp_path):
    paths = write_dicom_series(images_to_datasets(HEADER, make_images(3, 7)), tmp_path)
    with socket.socket() as held:      # bound and held, never listening: connections are refused, no other test gets it
        held.bind(("127.0.0.1", 0))
        report = send_to_pacs(paths, "127.0.0.1", held.getsockname()[1], retries=2, timeout=2, retry_wait_s=0.05)
    assert not report.ok and report.n_sent == 0 and report.n_failed == 3 and report.associations == 0
    assert len(report.connection_errors) == 3
    assert all("no association" in r.error and r.attempts == 0 for r in report.instances)
    assert all(p.exists() and pydicom.dcmread(p).SOPInstanceUID for p in paths)
    assert "0/3 stored" in report.summary()


def test_unreadable_file_is_reported_others_sent(orthanc, tmp_path):
    paths = write_dicom_series(images_to_datasets(HEADER, make_images(2, 12)), tmp_path)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    report = send_to_pacs([junk, *paths], "127.0.0.1", orthanc.dicom_port, timeout=10)
    assert report.n_sent == 2 and report.n_failed == 1
    (bad,) = report.failed
    assert bad.path == junk and "cannot read" in bad.error and junk.exists()
