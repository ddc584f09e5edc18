"""Synthetic corpus: determinism, header, contrast physics, k-space consistency, CLI."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from dpm_core.combine import rss
from dpm_core.fft import fft2c, ifft2c
from training import phantom, synth

SMALL = dict(matrix=64, coils=4, slices=4)


@pytest.fixture(scope="module")
def flair_t2():
    """The same lesioned head (seed 11) as FLAIR and T2w, 96 x 96, nearly noise-free."""
    kw = dict(matrix=96, coils=4, slices=6, lesion=True, snr=1e4)
    return synth.generate_subject(11, "AXFLAIR", **kw), synth.generate_subject(11, "AXT2", **kw)


def test_same_seed_same_bytes_and_new_seed_new_subject():
    threads = torch.get_num_threads()
    a = synth.generate_subject(7, "AXFLAIR", **SMALL)
    b = synth.generate_subject(7, "AXFLAIR", **SMALL)
    c = synth.generate_subject(8, "AXFLAIR", **SMALL)
    assert a.kspace.dtype == torch.complex64 and a.kspace.shape == (4, 4, 64, 128)
    assert a.kspace.numpy().tobytes() == b.kspace.numpy().tobytes()
    assert a.header_xml == b.header_xml and a.attrs["patient_id"] == b.attrs["patient_id"]
    assert not torch.equal(a.kspace, c.kspace)
    assert a.attrs["patient_id"] != c.attrs["patient_id"]
    assert torch.get_num_threads() == threads          # generation restores torch's thread setting


def test_same_seed_same_anatomy_across_contrasts():
    a = synth.generate_subject(5, "AXT1", **SMALL, lesion=True)
    b = synth.generate_subject(5, "AXT2", **SMALL, lesion=True)
    for key in ("gm", "wm", "csf", "lesion"):
        assert torch.equal(a.segmentation[key], b.segmentation[key])
    assert torch.equal(a.maps, b.maps)
    assert not torch.allclose(a.image.abs(), b.image.abs() * (a.image.abs().sum() / b.image.abs().sum()), rtol=0.1)


def test_header_is_valid_ismrmrd_and_matches_kspace():
    import ismrmrd.xsd
    s = synth.generate_subject(3, "AXFLAIR", **SMALL)
    hdr = ismrmrd.xsd.CreateFromDocument(s.header_xml)
    enc = hdr.encoding[0]
    S, C, H, W_os = s.kspace.shape
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (W_os, H)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (W_os // 2, H) == s.image.shape[1:][::-1]
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(2 * enc.reconSpace.fieldOfView_mm.x)
    assert enc.encodedSpace.fieldOfView_mm.y == pytest.approx(enc.reconSpace.fieldOfView_mm.y)
    assert enc.encodingLimits.kspace_encoding_step_1.maximum == H - 1
    assert enc.encodingLimits.kspace_encoding_step_1.center == H // 2
    assert enc.encodingLimits.slice.maximum == S - 1
    assert enc.trajectory.value == "cartesian"
    assert hdr.acquisitionSystemInformation.receiverChannels == C
    assert hdr.acquisitionSystemInformation.systemFieldStrength_T == 3.0
    assert hdr.measurementInformation.protocolName == "AXFLAIR"
    seq = hdr.sequenceParameters
    assert seq.TR[0] == s.protocol.TR and seq.TE[0] == s.protocol.TE and seq.TI[0] == s.protocol.TI
    assert 8500 <= seq.TR[0] <= 9500 and 2350 <= seq.TI[0] <= 2550 and 85 <= seq.TE[0] <= 115
    t1 = ismrmrd.xsd.CreateFromDocument(synth.generate_subject(3, "AXT1", **SMALL).header_xml)
    assert t1.sequenceParameters.TI == [] and 500 <= t1.sequenceParameters.TR[0] <= 700


def test_signal_equations_order_tissues_for_every_drawn_subject():
    rng = np.random.default_rng(0)
    idx = {n: i for i, n in enumerate(phantom.TISSUES)}
    gm_lesion_bright = 0
    for _ in range(200):
        params = phantom.sample_tissue_params(rng)
        f2 = rng.uniform(*phantom.LESION_T2_FACTOR)
        factors = np.array([rng.uniform(*phantom.LESION_PD_FACTOR),
                            1 + (f2 - 1) * rng.uniform(*phantom.LESION_T1_SHARE), f2])
        w = {c: phantom.signal_weights(phantom.sample_protocol(c, rng), params, factors, np.ones(2))
             for c in ("AXFLAIR", "AXT2", "AXT1")}
        fl, t2, t1 = w["AXFLAIR"], w["AXT2"], w["AXT1"]
        assert fl[idx["csf"]] < 0.7 * min(fl[idx["wm"]], fl[idx["gm"]])        # CSF nulled
        assert t2[idx["csf"]] > 1.5 * t2[idx["gm"]] and t2[idx["gm"]] > t2[idx["wm"]]
        assert t1[idx["wm"]] > t1[idx["gm"]] > t1[idx["csf"]]
        assert fl[idx["lesion_wm"]] > 1.1 * fl[idx["wm"]] and t2[idx["lesion_wm"]] > 1.1 * t2[idx["wm"]]
        gm_lesion_bright += int(fl[idx["lesion_gm"]] > 1.02 * fl[idx["gm"]])
    assert gm_lesion_bright >= 190


def test_flair_csf_dark_t2_bright_and_lesion_bright(flair_t2):
    flair, t2 = flair_t2
    seg = flair.segmentation
    csf = (seg["csf"] > 0.9) & (seg["head"] > 0.99)
    wm = (seg["wm"] > 0.9) & (seg["lesion"] < 0.05)
    assert csf.sum() > 50 and wm.sum() > 500
    fl, tt = flair.image.abs(), t2.image.abs()
    assert fl[csf].mean() < 0.6 * fl[wm].mean()
    assert tt[csf].mean() > 1.8 * tt[wm].mean()
    # lesion core vs the white matter within 6 pixels around it
    core = (seg["lesion"] > 0.9) & (seg["wm"] > seg["gm"])
    assert core.sum() > 5, "seed 11 with lesion=True should show a white-matter lesion"
    ring = torch.from_numpy(ndi.binary_dilation(core.numpy(), iterations=6, structure=np.ones((1, 3, 3)))) & wm
    for img in (fl, tt):
        assert img[core].mean() > 1.1 * img[ring].mean()


def test_kspace_is_coil_maps_times_image_and_object_in_central_readout_half():
    s = synth.generate_subject(2, "AXT2", matrix=48, coils=3, slices=2, snr=1e6)
    assert torch.allclose((s.maps.abs() ** 2).sum(1), torch.ones(()), atol=1e-5)
    expected = fft2c(s.image[:, None] * s.maps)
    err = (s.recon_kspace() - expected).norm() / expected.norm()
    assert err < 1e-4
    img_os = ifft2c(s.kspace)                                    # [S, C, H, 2W]
    W = s.image.shape[-1]
    inside = img_os[..., W // 2: W // 2 + W].norm()
    assert (img_os.norm() ** 2 - inside ** 2) / inside ** 2 < 1e-6


def test_noise_level_matches_noise_std_and_snr():
    s = synth.generate_subject(4, "AXT1", matrix=64, coils=4, slices=2, snr=20.0)
    coil_img = ifft2c(s.recon_kspace())
    air = ndi.binary_erosion((s.segmentation["head"] < 0.01).numpy(), structure=np.ones((1, 3, 3)), iterations=3)
    air = torch.from_numpy(air)[:, None].expand_as(coil_img)
    assert air.sum() > 1000
    est = coil_img[air].abs().pow(2).mean().sqrt()
    assert float(est) == pytest.approx(s.noise_std, rel=0.1)
    brain = (s.segmentation["gm"] + s.segmentation["wm"] + s.segmentation["lesion"]) > 0.5
    assert float(s.image.abs()[brain].mean()) / s.noise_std == pytest.approx(20.0, rel=1e-4)


def test_rss_target_and_attrs():
    s = synth.generate_subject(9, "AXT1POST", **SMALL)
    target = s.reconstruction_rss()
    assert torch.allclose(target, rss(ifft2c(s.recon_kspace())))
    assert s.attrs["max"] == pytest.approx(float(target.max()))
    assert s.attrs["norm"] == pytest.approx(float(target.norm()), rel=1e-5)
    assert s.attrs["acquisition"] == "AXT1POST" and s.attrs["generator"] == synth.GENERATOR_VERSION


def test_lesion_fraction_controls_lesions():
    none = [synth.generate_subject(i, "AXT2", matrix=32, coils=2, slices=2, lesion_fraction=0.0).attrs["num_lesions"]
            for i in range(4)]
    some = [synth.generate_subject(i, "AXT2", matrix=32, coils=2, slices=2, lesion_fraction=1.0).attrs["num_lesions"]
            for i in range(4)]
    assert none == [0, 0, 0, 0] and all(n >= 1 for n in some)


@pytest.mark.parametrize("kwargs", [dict(matrix=63), dict(contrast="AXDWI"), dict(lesion_fraction=1.5),
                                    dict(coils=0), dict(seed=-1), dict(snr=0.0)])
def test_bad_arguments_raise_value_error(kwargs):
    args = dict(seed=0, contrast="AXT1", matrix=32, coils=2, slices=2)
    args.update(kwargs)
    with pytest.raises(ValueError):
        synth.generate_subject(**args)


def test_cli_writes_files_and_manifest(tmp_path):
    rc = synth.main(["--out", str(tmp_path), "--subjects", "2", "--contrasts", "AXT1,AXFLAIR", "--matrix", "32",
                     "--coils", "2", "--slices", "2", "--seed", "3", "--lesion-fraction", "1", "--snr", "30:40",
                     "--quiet"])
    assert rc == 0
    names = sorted(os.listdir(tmp_path))
    assert names == ["manifest.json", "synth_AXFLAIR_s0000.h5", "synth_AXFLAIR_s0001.h5", "synth_AXT1_s0000.h5",
                     "synth_AXT1_s0001.h5"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["files"]) == 4 and manifest["seed"] == 3
    ids = {e["patient_id"] for e in manifest["files"]}
    assert len(ids) == 4                                # a new head per file unless --shared-anatomy
    entry = next(e for e in manifest["files"] if e["file"] == "synth_AXFLAIR_s0001.h5")
    with h5py.File(tmp_path / entry["file"], "r") as f:
        assert f["kspace"].shape == (2, 2, 64, 32) and f["kspace"].dtype == np.complex64
        assert f["reconstruction_rss"].shape == (2, 32, 32) and f["reconstruction_rss"].dtype == np.float32
        assert f.attrs["acquisition"] == "AXFLAIR" and f.attrs["seed"] == entry["seed"]
        assert 30 <= f.attrs["snr"] <= 40 and f.attrs["num_lesions"] >= 1
    regenerated = synth.generate_subject(entry["seed"], "AXFLAIR", matrix=32, coils=2, slices=2, lesion_fraction=1.0,
                                         snr=(30.0, 40.0))
    with h5py.File(tmp_path / entry["file"], "r") as f:
        assert np.array_equal(f["kspace"][()], regenerated.kspace.transpose(-1, -2).numpy())


def test_anatomy_varieties_map_the_same_draws_onto_their_own_ranges():
    """The same generator state gives the same random numbers under every variety (so "standard" corpora are those
    written before "wide" existed), each mapped affinely onto the variety's ranges: u = (x - lo) / (hi - lo) agrees."""
    spacing, slices = 6.0, 8
    half = 0.5 * (slices - 1) * spacing
    lo_clip, hi_clip = -45 + half, 85 - half                      # the slab stays inside MNI z -45 .. +85
    std_v, wide_v = phantom.VARIETY["standard"], phantom.VARIETY["wide"]
    wide_centres = []
    for seed in range(40):
        std = phantom.sample_anatomy(np.random.default_rng(seed), True, slices, spacing, "standard")
        wide = phantom.sample_anatomy(np.random.default_rng(seed), True, slices, spacing, "wide")
        for key in std.tissue_params:                            # drawn after the pose: the streams stay aligned
            np.testing.assert_array_equal(std.tissue_params[key], wide.tissue_params[key])
        np.testing.assert_array_equal(std.lesions[:, :3], wide.lesions[:, :3])
        u_std = (std.slab_center_mni_z - std_v["slab_centre_mni_z"][0]) / np.ptp(std_v["slab_centre_mni_z"])
        raw_wide = wide_v["slab_centre_mni_z"][0] + u_std * np.ptp(wide_v["slab_centre_mni_z"])
        assert wide.slab_center_mni_z == pytest.approx(np.clip(raw_wide, lo_clip, hi_clip), abs=1e-9)
        for k, (r_std, r_wide) in enumerate(zip(std_v["rotation_deg"], wide_v["rotation_deg"])):
            assert wide.rotation_deg[k] / r_wide == pytest.approx(std.rotation_deg[k] / r_std, abs=1e-12)
        np.testing.assert_allclose(wide.deform_modes[:, 4:] / wide_v["deform_rms_mm"],
                                   std.deform_modes[:, 4:] / std_v["deform_rms_mm"], rtol=1e-12)
        assert wide.atrophy_mm / wide_v["atrophy_mean_mm"] == pytest.approx(std.atrophy_mm / std_v["atrophy_mean_mm"])
        assert 5.0 <= std.slab_center_mni_z <= 30.0
        wide_centres.append(wide.slab_center_mni_z)
    assert min(wide_centres) < 0.0 and max(wide_centres) > 45.0    # temporal lobes to near the vertex
    with pytest.raises(ValueError, match="variety"):
        phantom.sample_anatomy(np.random.default_rng(0), True, slices, spacing, "huge")
    with pytest.raises(ValueError, match="variety"):
        synth.generate_subject(0, "AXT1", matrix=32, coils=2, slices=2, variety="huge")
