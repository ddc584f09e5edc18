"""gadgets.dicom: MR Image Storage objects from ISMRMRD images — validity (dciodvfy), oblique geometry, marking,
UIDs, de-identification."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import ismrmrd
import numpy as np
import pydicom
import pytest

from gadgets.dicom import (DeidentifyOptions, format_ds, image_geometry, images_to_datasets,
                           write_dicom_series)

HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
  <version>2</version>
  <subjectInformation>
    <patientName>Müller, Hans</patientName><patientWeight_kg>81.5</patientWeight_kg><patientID>PID12345</patientID>
    <patientBirthdate>1950-03-04</patientBirthdate><patientGender>M</patientGender>
  </subjectInformation>
  <studyInformation>
    <studyDate>2024-05-06</studyDate><studyTime>10:11:12</studyTime><studyID>S1</studyID>
    <accessionNumber>987654</accessionNumber><studyDescription>Stroke MRI</studyDescription>
    <studyInstanceUID>1.2.826.0.1.3680043.8.498.123</studyInstanceUID>
  </studyInformation>
  <measurementInformation>
    <measurementID>1234_5678_9</measurementID><patientPosition>HFS</patientPosition>
    <protocolName>t2_tirm_tra_dark-fluid</protocolName><seriesDescription>FLAIR_tra</seriesDescription>
  </measurementInformation>
  <acquisitionSystemInformation>
    <systemVendor>SIEMENS</systemVendor><systemModel>Prisma</systemModel>
    <systemFieldStrength_T>2.89362</systemFieldStrength_T><receiverChannels>20</receiverChannels>
    <institutionName>General Hospital</institutionName>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>123255000</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace><matrixSize><x>512</x><y>192</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>400</x><y>240</y><z>5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>160</x><y>192</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>200</x><y>240</y><z>5</z></fieldOfView_mm></reconSpace>
    <encodingLimits/>
    <trajectory>cartesian</trajectory>
    <parallelImaging><accelerationFactor><kspace_encoding_step_1>4</kspace_encoding_step_1>
      <kspace_encoding_step_2>1</kspace_encoding_step_2></accelerationFactor></parallelImaging>
    <echoTrainLength>16</echoTrainLength>
  </encoding>
  <sequenceParameters><TR>9000</TR><TE>81</TE><TI>2500</TI><flipAngle_deg>150</flipAngle_deg>
    <sequence_type>TSE</sequence_type></sequenceParameters>
</ismrmrdHeader>"""

MINIMAL_HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace><matrixSize><x>64</x><y>48</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>200</x><y>150</y><z>4</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>64</x><y>48</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>200</x><y>150</y><z>4</z></fieldOfView_mm></reconSpace>
    <encodingLimits/><trajectory>cartesian</trajectory>
  </encoding>
</ismrmrdHeader>"""

FOV = (200.0, 240.0, 5.0)       # x (read), y (phase), slice thickness
NY, NX = 192, 160               # rows (phase), columns (read)
GAP = 6.0                       # slice centre-to-centre distance, mm
CENTRE = np.array([10.0, -20.0, 30.0])


def rotation(axis, angle):
    """Rodrigues rotation matrix; columns are the rotated x, y, z axes."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


ROT = rotation([1.0, 2.0, 3.0], 0.4)      # an oblique (double-angulated) slab


def make_images(n_slices=5, series=7, dtype=np.complex64, comment="DPM recon", rot=ROT, fov=FOV, shape=(NY, NX),
                order=None, image_type=1):
    """ISMRMRD images as our gadget sends them: oblique geometry, slice positions along slice_dir."""
    read, phase, sdir = rot[:, 0], rot[:, 1], rot[:, 2]
    ny, nx = shape
    images = []
    for s in (order if order is not None else range(n_slices)):
        rng = np.random.default_rng(100 * series + s)
        yy, xx = np.mgrid[0:ny, 0:nx]
        # A pattern that is not symmetric under transpose/flip, so orientation mistakes show.
        mag = 50 + 200 * (xx / nx) + 100 * (yy / ny) ** 2 + 5 * rng.random((ny, nx)) + 20 * s
        if np.issubdtype(dtype, np.complexfloating):
            arr = (mag * np.exp(1j * rng.uniform(-np.pi, np.pi, (ny, nx)))).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            arr = mag.astype(dtype)
        else:
            arr = (mag - 120).astype(dtype)           # real images with negative values
        im = ismrmrd.Image.from_array(arr, transpose=False)
        im.image_series_index = series
        im.image_index = s
        im.slice = s
        im.image_type = image_type
        im.position = tuple(CENTRE + (s - (n_slices - 1) / 2) * GAP * sdir)
        im.read_dir, im.phase_dir, im.slice_dir = tuple(read), tuple(phase), tuple(sdir)
        im.field_of_view = fov
        im.meta = ismrmrd.Meta({"GADGETRON_ImageComment": comment, "GADGETRON_DataRole": "Image",
                                "GADGETRON_SeqDescription": "FLAIR_tra"})
        images.append(im)
    return images


def require_tool(name):
    if shutil.which(name) is None:
        msg = f"{name} not on PATH (Debian package dicom3tools / orthanc); CI installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def dciodvfy_errors(path) -> list[str]:
    # dciodvfy's exit code is 0 for some errors (e.g. a misplaced Type 2C Laterality), so read its report.
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def voxel_to_patient(ds, r, c):
    """DICOM PS3.3 C.7.6.2.1.1: P = IPP + c·Δc·X + r·Δr·Y (X = row direction, Y = column direction)."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    drow, dcol = (float(v) for v in ds.PixelSpacing)
    return ipp + np.multiply.outer(c * dcol, iop[:3]) + np.multiply.outer(r * drow, iop[3:])


def patient_to_voxel(ds, p):
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    drow, dcol = (float(v) for v in ds.PixelSpacing)
    d = p - ipp
    return d @ iop[3:] / drow, d @ iop[:3] / dcol        # (row, column)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One exam: oblique complex series 7 (5 slices, given out of order), real-float series 8, uint16 series 9,
    SENSE-fallback series 10; written to disk and read back."""
    images = (make_images(5, 7, order=[3, 0, 4, 1, 2]) + make_images(3, 8, dtype=np.float32, image_type=3)
              + make_images(2, 9, dtype=np.uint16) + make_images(2, 10, comment="SENSE fallback: DPM failed"))
    datasets = images_to_datasets(HEADER, images)
    out = tmp_path_factory.mktemp("dicom")
    paths = write_dicom_series(datasets, out)
    return images, datasets, paths, [pydicom.dcmread(p) for p in paths]


def test_every_file_passes_dciodvfy(exported, tmp_path):
    require_tool("dciodvfy")
    _, _, paths, _ = exported
    anon = write_dicom_series(images_to_datasets(HEADER, make_images(2, 3), deidentify=True), tmp_path / "anon")
    minimal = write_dicom_series(images_to_datasets(MINIMAL_HEADER, make_images(2, 4, shape=(48, 64),
                                                                                fov=(200.0, 150.0, 4.0))),
                                 tmp_path / "min")
    errors = {str(p): dciodvfy_errors(p) for p in [*paths, *anon, *minimal]}
    bad = {p: e for p, e in errors.items() if e}
    assert not bad, f"dciodvfy errors: {bad}"
    assert len(errors) == 16


def test_oblique_geometry_round_trip(exported):
    images, _, paths, read_back = exported
    series7 = [ds for ds in read_back if ds.SeriesNumber == 7]
    by_index = {int(im.image_index): im for im in images if im.image_series_index == 7}
    assert len(series7) == 5
    r = np.arange(NY, dtype=float)[:, None]
    c = np.arange(NX, dtype=float)[None, :]
    worst = 0.0
    for ds in series7:
        im = by_index[int(ds.InstanceNumber) - 1]
        read, phase = np.array(im.read_dir[:]), np.array(im.phase_dir[:])
        pos = np.array(im.position[:])
        dx, dy = FOV[0] / NX, FOV[1] / NY
        # Voxel centres from the DICOM attributes vs the ISMRMRD definition (position = centre of the slice).
        got = voxel_to_patient(ds, r, c)                                                  # [NY, NX, 3]
        want = (pos + np.multiply.outer((c - (NX - 1) / 2) * dx, read) + np.multiply.outer((r - (NY - 1) / 2) * dy,
                                                                                          phase))
        worst = max(worst, float(np.abs(got - want).max()))
        # The FOV corners (outer voxel corners) and the slice centre.
        corner = voxel_to_patient(ds, np.array(-0.5), np.array(-0.5))
        assert np.allclose(corner, pos - FOV[0] / 2 * read - FOV[1] / 2 * phase, atol=1e-3)
        far = voxel_to_patient(ds, np.array(NY - 0.5), np.array(NX - 0.5))
        assert np.allclose(far, pos + FOV[0] / 2 * read + FOV[1] / 2 * phase, atol=1e-3)
        assert np.allclose(got.reshape(-1, 3).mean(0), pos, atol=1e-3)
        # ...and back: patient coordinates -> (row, column) indices.
        rr, cc = patient_to_voxel(ds, want)
        assert np.abs(rr - r).max() < 1e-3 / dy and np.abs(cc - c).max() < 1e-3 / dx
        # Spacing / thickness / orientation
        assert np.allclose([float(v) for v in ds.PixelSpacing], [dy, dx], atol=1e-9)
        assert float(ds.SliceThickness) == pytest.approx(FOV[2])
        assert np.allclose(np.array(ds.ImageOrientationPatient, float), np.concatenate([read, phase]), atol=1e-9)
    assert worst < 1e-3, f"voxel-centre error {worst:.2e} mm"

    # Slice location = projection on the normal, spacing consistent, instance numbers in slice order.
    series7.sort(key=lambda d: int(d.InstanceNumber))
    iop = np.array(series7[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    assert abs(abs(normal @ ROT[:, 2]) - 1) < 1e-9
    locs = np.array([float(d.SliceLocation) for d in series7])
    assert np.allclose(locs, [normal @ np.array(d.ImagePositionPatient, float) for d in series7], atol=1e-3)
    assert np.allclose(np.diff(locs), GAP, atol=1e-3)                           # monotonic in instance order
    spacings = {str(d.SpacingBetweenSlices) for d in series7}
    assert len(spacings) == 1 and float(spacings.pop()) == pytest.approx(GAP, abs=1e-3)
    assert [int(d.InstanceNumber) for d in series7] == [1, 2, 3, 4, 5]
    assert all(int(d.InstanceNumber) == int(by_index[int(d.InstanceNumber) - 1].slice) + 1 for d in series7)


def test_image_geometry_matches_dicomfinish_convention():
    """Axial, unrotated: IPP is the top-left voxel centre, i.e. Gadgetron's DicomFinish IPP plus half a pixel."""
    im = make_images(1, 1, rot=np.eye(3), fov=(220.0, 220.0, 3.0), shape=(256, 256))[0]
    g = image_geometry(im.getHead())
    assert np.allclose(g.image_position, CENTRE + np.array([-110 + 220 / 512, -110 + 220 / 512, 0.0]))
    assert g.pixel_spacing == pytest.approx((220 / 256, 220 / 256))
    assert g.slice_location == pytest.approx(CENTRE[2])


def test_pixels_keep_orientation_and_scale(exported):
    images, datasets, _, read_back = exported
    for series, dtype in ((7, "complex"), (8, "float"), (9, "uint16")):
        src = {int(im.image_index): im for im in images if im.image_series_index == series}
        for ds in (d for d in read_back if d.SeriesNumber == series):
            im = src[int(ds.InstanceNumber) - 1]
            want = np.abs(im.data[0, 0]) if dtype == "complex" else np.asarray(im.data[0, 0], float)
            stored = ds.pixel_array.astype(float)
            assert stored.shape == (NY, NX)
            if dtype == "uint16":
                assert np.array_equal(stored, want)
                continue
            m = re.search(r"value = stored x (\S+) \+ (\S+) ", str(ds.ImageComments))
            slope, intercept = float(m.group(1)), float(m.group(2))
            assert stored.max() <= 4095 and int(ds.BitsStored) == 12
            assert np.abs(stored * slope + intercept - want).max() <= slope * 0.51 + 1e-6
            lo, hi = float(ds.WindowCenter) - float(ds.WindowWidth) / 2, float(ds.WindowCenter) + float(
                ds.WindowWidth) / 2
            assert 0 <= lo < hi <= 4095 * 1.01


def test_uids_series_and_marking(exported):
    _, _, paths, read_back = exported
    assert len({d.SOPInstanceUID for d in read_back}) == len(read_back) == 12
    assert {d.StudyInstanceUID for d in read_back} == {"1.2.826.0.1.3680043.8.498.123"}   # joins the scanner's study
    assert len({d.FrameOfReferenceUID for d in read_back}) == 1
    series = {}
    for d in read_back:
        series.setdefault(int(d.SeriesNumber), set()).add(d.SeriesInstanceUID)
    assert sorted(series) == [7, 8, 9, 10] and all(len(v) == 1 for v in series.values())
    assert len({next(iter(v)) for v in series.values()}) == 4
    assert [p.parent.name for p in paths].count("series_007") == 5
    for d in read_back:
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and d.Modality == "MR"
        assert list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert list(d.ScanningSequence) == ["SE", "IR"] and float(d.InversionTime) == 2500
        assert d.PatientName == "Müller^Hans" and d.PatientID == "PID12345" and d.PatientBirthDate == "19500304"
        assert d.MagneticFieldStrength == pytest.approx(2.89362) and d.InstitutionName == "General Hospital"
        if d.SeriesNumber == 10:
            assert "SENSE fallback" in d.ImageComments and "SENSE fallback" in d.DerivationDescription
            assert "SENSE_FALLBACK" in d.SeriesDescription and list(d.ImageType)[3] == "SENSE_FALLBACK"
        else:
            assert "diffusion-model posterior sampling" in d.DerivationDescription
            assert "4x accelerated" in d.ImageComments and "not a standard reconstruction" in d.ImageComments
            assert d.SeriesDescription == "FLAIR_tra_DPM"


def test_ds_values_fit_16_characters(exported):
    _, _, paths, _ = exported
    for p in paths:
        for elem in pydicom.dcmread(p).iterall():
            if elem.VR == "DS" and elem.value not in (None, ""):
                values = elem.value if elem.VM > 1 else [elem.value]
                for v in values:
                    assert len(v.original_string if hasattr(v, "original_string") else str(v)) <= 16, elem
    assert format_ds(-0.0) == "0" and len(format_ds(-123.456789012345678)) <= 16


def test_deidentification_removes_identity_and_keeps_geometry(tmp_path):
    images = make_images(3, 5)
    plain = images_to_datasets(HEADER, images)
    opts = DeidentifyOptions(key="site-secret", date_shift_days=-100)
    anon = images_to_datasets(HEADER, images, deidentify=opts)
    again = images_to_datasets(HEADER, images, deidentify=DeidentifyOptions(key="site-secret", date_shift_days=-100))
    paths = write_dicom_series(anon, tmp_path)
    for p in paths:
        raw = p.read_bytes()
        for secret in ("Müller".encode(), b"Hans", b"PID12345", b"19500304", b"General Hospital", b"987654"):
            assert secret not in raw, (p, secret)
        # The study UID sits under pydicom's root, like every generated UID: "…498.123" followed by a digit is another
        # UID (one in a thousand generated ones starts so), followed by anything else it is the scanner's UID.
        assert not re.search(rb"1\.2\.826\.0\.1\.3680043\.8\.498\.123(?![0-9])", raw), p
    for a, b in zip(plain, anon):
        assert b.PatientIdentityRemoved == "YES" and "dpm-flair de-identification profile v1" in b.DeidentificationMethod
        assert str(b.PatientName) == "ANON^" + b.PatientID[5:] and b.PatientID.startswith("ANON-")
        assert b.PatientBirthDate == ""
        assert "InstitutionName" not in b and "PatientWeight" not in b
        assert b.StudyDate == "20240127"                            # 2024-05-06 shifted by -100 days
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            assert a.get(kw) != b.get(kw)
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceLocation",
                   "SliceThickness", "InstanceNumber", "SeriesNumber", "PixelData"):
            assert a.get(kw) == b.get(kw), kw
        assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
    assert {d.PatientID for d in anon} == {d.PatientID for d in again}       # same key -> same pseudonym
    assert anon[0].StudyInstanceUID == again[0].StudyInstanceUID
    removed = images_to_datasets(HEADER, images, deidentify=True)
    assert removed[0].StudyDate == "" and removed[0].StudyTime == ""


def test_bad_inputs_raise_clear_errors():
    im = make_images(1, 1)[0]
    im.read_dir = (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="read_dir"):
        images_to_datasets(HEADER, [im])
    multi = ismrmrd.Image.from_array(np.ones((2, 1, 8, 8), np.complex64), transpose=False)
    multi.read_dir, multi.phase_dir, multi.field_of_view = (1, 0, 0), (0, 1, 0), (10, 10, 1)
    with pytest.raises(ValueError, match="coil-combined"):
        images_to_datasets(HEADER, [multi])
    with pytest.raises(ValueError, match="no images"):
        images_to_datasets(HEADER, [])
    with pytest.raises(ValueError, match="header"):
        images_to_datasets("<notismrmrd/>", make_images(1, 1))


def test_write_refuses_to_overwrite(tmp_path):
    ds = images_to_datasets(HEADER, make_images(1, 1))
    write_dicom_series(ds, tmp_path)
    with pytest.raises(FileExistsError):
        write_dicom_series(ds, tmp_path)


def test_a_repeated_instance_number_keeps_every_image(tmp_path):
    """Datasets of one series that share an InstanceNumber (images_to_datasets never makes them, but a writer must not
    lose data for them): every file is written (no FileExistsError, nothing overwritten), each with its pixels."""
    import pydicom
    datasets = images_to_datasets(HEADER, make_images(3, 7))
    datasets[2].InstanceNumber = datasets[1].InstanceNumber
    paths = write_dicom_series(datasets, tmp_path)
    assert len(paths) == 3 and len(set(paths)) == 3 and all(p.is_file() for p in paths)
    assert sorted(p.name for p in paths)[-1].endswith("_1.dcm")
    pixels = [pydicom.dcmread(p).pixel_array for p in paths]
    assert not np.array_equal(pixels[1], pixels[2])


def test_marking_follows_the_gadget_meta(tmp_path):
    """Meta exactly as gadgets.images builds it: DPM, SENSE fallback, posterior std, and a non-DPM method."""
    from gadgets.images import image_meta

    def with_meta(series, comment, description, history, extra):
        ims = make_images(2, series)
        for im in ims:
            im.meta = image_meta(comment=comment, series_description=description, history=history,
                                 read_dir=im.read_dir, phase_dir=im.phase_dir, extra=extra)
        return ims

    images = (with_meta(1, "DPM:FAST R=3.23", "t2_tirm DPM", ["GADGETRON", "DPM:FAST"],
                        {"DPM_Method": "dpm:fast", "DPM_EffectiveAcceleration": "3.2300"})
              + with_meta(2, "SENSE_FALLBACK (sense) R=3.23: DPM failed: CUDA out of memory",
                          "t2_tirm SENSE_FALLBACK", ["GADGETRON", "DPM_FAILED", "SENSE"], {"DPM_Method": "sense"})
              + with_meta(3, "posterior std (dpm:fast)", "t2_tirm DPM_STD", ["GADGETRON", "DPM:FAST", "STD"],
                          {"DPM_Method": "dpm:fast"})
              + with_meta(4, "SENSE R=3.23", "t2_tirm SENSE", ["GADGETRON", "SENSE"], {"DPM_Method": "sense"}))
    by_series = {}
    for d in images_to_datasets(HEADER, images):
        by_series.setdefault(int(d.SeriesNumber), d)
    dpm, fb, std, sense = (by_series[k] for k in (1, 2, 3, 4))
    assert list(dpm.ImageType)[3] == "DPM" and dpm.SeriesDescription == "t2_tirm DPM"
    assert "4x accelerated k-space (effective R 3.23)" in dpm.DerivationDescription
    assert list(fb.ImageType)[3] == "SENSE_FALLBACK" and "SENSE fallback" in fb.DerivationDescription
    assert "CUDA out of memory" in fb.ImageComments and fb.SeriesDescription == "t2_tirm SENSE_FALLBACK"
    assert list(std.ImageType)[3] == "DPM_STD" and "not an anatomical image" in std.DerivationDescription
    assert list(sense.ImageType)[3] == "SENSE" and "no deep generative model" in sense.DerivationDescription
    assert "diffusion" not in sense.ImageComments
    if shutil.which("dciodvfy"):
        paths = write_dicom_series(list(by_series.values()), tmp_path)
        assert not [e for p in paths for e in dciodvfy_errors(p)]


def dciodvfy_report(path) -> list[str]:
    """Every Error and Warning line of dciodvfy's report on one file."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith(("Error", "Warning"))]


STUDY_AND_EQUIPMENT = ("Study Date", "Study Time", "Manufacturer")


def test_study_date_time_and_manufacturer_from_the_header(tmp_path):
    """Header with studyInformation and acquisitionSystemInformation: its values, nothing made up."""
    require_tool("dciodvfy")
    images = make_images(2, 3)
    for im in images:
        im.acquisition_time_stamp = 14_695_000                       # 10:12:17.5, ignored: the header has a time
    datasets = images_to_datasets(HEADER, images)
    for ds in datasets:
        assert (ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime) == ("20240506", "101112", "20240506",
                                                                              "101112")
        assert ds.Manufacturer == "SIEMENS" and ds.ManufacturerModelName == "Prisma"
    for path in write_dicom_series(datasets, tmp_path):
        report = dciodvfy_report(path)
        assert not [ln for ln in report if ln.startswith("Error")], report
        assert not [ln for ln in report if any(name in ln for name in STUDY_AND_EQUIPMENT)], report


def test_study_date_time_and_manufacturer_without_them_in_the_header(tmp_path):
    """ismrmrd_generate_cartesian_shepp_logan's header has neither studyInformation, measurementInformation nor a
    vendor: StudyTime from the earliest acquisition time stamp, StudyDate from ``now``, the product as equipment."""
    require_tool("dciodvfy")
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("Debian ismrmrd-tools not installed")
    import datetime

    from gadgets.dicom import PRODUCT_MODEL_NAME, PRODUCT_NAME

    src = tmp_path / "shepp_logan_tools.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "4", "-r", "1"],
                   check=True, capture_output=True, timeout=60)
    dataset = ismrmrd.Dataset(str(src), "dataset", create_if_needed=False)
    header = dataset.read_xml_header()
    dataset.close()
    images = make_images(2, 3, shape=(64, 64), fov=(300.0, 300.0, 6.0))
    images[0].acquisition_time_stamp = 14_695_001                 # 10:12:17.5025 -> rounded to the millisecond
    images[1].acquisition_time_stamp = 14_695_000                 # the earlier one is the study's time
    now = datetime.datetime(2025, 1, 2, 3, 4, 5)
    datasets = images_to_datasets(header, images, now=now)
    assert PRODUCT_NAME == "dpm-flair" and PRODUCT_MODEL_NAME == "dpm-flair DPM reconstruction"
    for ds in datasets:
        assert (ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime) == ("20250102", "101217.500", "20250102",
                                                                              "101217.500")
        assert ds.Manufacturer == "dpm-flair" and ds.ManufacturerModelName == "dpm-flair DPM reconstruction"
        assert ds.InstitutionName == "ISMRM Synthetic Imaging Lab"  # what the header does carry is still used
    for path in write_dicom_series(datasets, tmp_path / "dicom"):
        report = dciodvfy_report(path)
        assert not [ln for ln in report if ln.startswith("Error")], report
        assert not [ln for ln in report if any(name in ln for name in STUDY_AND_EQUIPMENT)], report


def test_study_date_from_the_series_date_and_vendor_without_model():
    """No studyInformation but a seriesDate: the date is the series'; a vendor without a model keeps the vendor and
    writes no model (never another product's model under the scanner's vendor)."""
    header = MINIMAL_HEADER.replace(
        "<experimentalConditions>",
        "<measurementInformation><seriesDate>2023-07-08</seriesDate><patientPosition>HFS</patientPosition>"
        "</measurementInformation>"
        "<acquisitionSystemInformation><systemVendor>GE</systemVendor></acquisitionSystemInformation>"
        "<experimentalConditions>")
    images = make_images(1, 4, shape=(48, 64), fov=(200.0, 150.0, 4.0))
    images[0].acquisition_time_stamp = 0                           # midnight
    ds = images_to_datasets(header, images)[0]
    assert (ds.StudyDate, ds.StudyTime) == ("20230708", "000000.000")
    assert ds.Manufacturer == "GE" and "ManufacturerModelName" not in ds
    images[0].acquisition_time_stamp = 24 * 3600 * 400            # 24 h of 2.5 ms ticks: not a time of day
    assert images_to_datasets(header, images)[0].StudyTime == ""
