"""Training: target cache, contrast selection, DDP equivalence, exact resume, best-epoch selection in fine-tuning.

Tiny problems (32 x 32 slices, 4 coils, an 8-channel two-level U-Net, a few steps) so the file runs in about a minute
on two CPU cores.
"""
from __future__ import annotations

import json
import os
import socket

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from dpm_core.checkpoints import load_checkpoint, save_checkpoint
from dpm_core.coils import estimate_coil_maps
from dpm_core.combine import mvue
from dpm_core.fft import fft2c
from dpm_core.gaussian import synthetic_coil_maps
from dpm_core.networks import build_network, edm_loss
from dpm_core.normalize import normalization_scale
from training import finetune as finetune_mod
from training.fastmri_data import FastMRISliceDataset, FastMRIVolumeIndex
from training.preprocess import CachedSlices, build_cache, find_volumes, select_volumes
from training.training_loop import training_loop

TINY_NET = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention_levels": [], "emb_dim": 16}

_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
 <measurementInformation><protocolName>{contrast}</protocolName></measurementInformation>
 <encoding>
  <encodedSpace><matrixSize><x>{ro}</x><y>{pe}</y><z>1</z></matrixSize>
   <fieldOfView_mm><x>480</x><y>240</y><z>5</z></fieldOfView_mm></encodedSpace>
  <reconSpace><matrixSize><x>{w}</x><y>{pe}</y><z>1</z></matrixSize>
   <fieldOfView_mm><x>240</x><y>240</y><z>5</z></fieldOfView_mm></reconSpace>
  <trajectory>cartesian</trajectory>
  <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{pemax}</maximum><center>{pec}</center>
  </kspace_encoding_step_1></encodingLimits>
 </encoding>
</ismrmrdHeader>"""


def write_tiny_fastmri(path, contrast: str, patient: str, seed: int, slices: int = 3, coils: int = 4, H: int = 32,
                       W: int = 32) -> None:
    """A fastMRI-layout multi-coil file: kspace [S, C, 2W (readout, 2x oversampled), H], header, attributes."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(-1, 1, H).view(H, 1)
    xx = torch.linspace(-2, 2, 2 * W).view(1, 2 * W)                     # oversampled readout FOV: object in the middle
    imgs = []
    for _ in range(slices):
        a, b, c = (0.55 + 0.2 * torch.rand(3, generator=g)).tolist()
        head = ((yy / (0.8 * a)) ** 2 + (xx / (0.9 * b)) ** 2 < 1).float()
        core = ((yy / (0.4 * c)) ** 2 + ((xx - 0.1) / 0.35) ** 2 < 1).float()
        mag = head * (0.6 + 0.3 * c) + 0.5 * core
        phase = 0.4 * yy + 0.2 * xx * b
        imgs.append(mag * torch.exp(1j * phase))
    img = torch.stack(imgs).to(torch.complex64)                          # [S, H, 2W]
    maps = synthetic_coil_maps(coils, H, 2 * W)[0, 0]                    # [C, H, 2W]
    k = fft2c(maps.unsqueeze(0) * img.unsqueeze(1))                      # [S, C, H, 2W]
    k = k + 1e-3 * torch.randn(k.shape, generator=g, dtype=torch.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k.transpose(-1, -2).numpy())    # on disk: [S, C, readout, phase]
        f.create_dataset("ismrmrd_header", data=np.bytes_(_HEADER.format(
            contrast=contrast, ro=2 * W, w=W, pe=H, pemax=H - 1, pec=H // 2).encode()))
        f.attrs["acquisition"] = contrast
        f.attrs["patient_id"] = patient


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i, contrast in enumerate(["AXT1", "AXT2", "AXFLAIR", "AXFLAIR", "AXFLAIR"]):
        write_tiny_fastmri(root / f"vol{i}_{contrast}.h5", contrast, f"subj{i:02d}", seed=i)
    val = tmp_path_factory.mktemp("val")
    write_tiny_fastmri(val / "val_AXFLAIR.h5", "AXFLAIR", "valsubj", seed=99, slices=4)
    return root, val


# ----------------------------------------------------------------------------------------------------------------------
# Cache.

def test_cache_round_trip_equals_mvue_over_scale(corpus, tmp_path):
    root, _ = corpus
    volumes = select_volumes(find_volumes(root), contrasts=["AXT1", "AXT2"])
    index_path = build_cache(volumes, tmp_path / "cache", progress=False)
    ds = CachedSlices(index_path)
    assert len(ds) == 6
    for i, entry in enumerate(ds.slices):
        sample = FastMRISliceDataset(FastMRIVolumeIndex([entry.source]))[entry.slice]
        k = sample.kspace.unsqueeze(0)                                      # [1, C, H, W], oversampling removed
        assert k.shape[-2:] == (32, 32)
        maps = estimate_coil_maps(k, None, method="fast", num_maps=1)
        expected = (mvue(k, maps) / normalization_scale(k).view(-1, 1, 1))[0]
        torch.testing.assert_close(torch.from_numpy(ds.target(i)), expected, rtol=1e-5, atol=1e-5)
        x = ds[i]
        assert x.shape == (2, 32, 32) and x.dtype == torch.float32
        torch.testing.assert_close(torch.complex(x[0], x[1]), expected, rtol=1e-5, atol=1e-5)
    # Augmentation is a function of the per-sample seed only; crops are windows of the target.
    cropped = CachedSlices(index_path, crop=16, flip=True)
    a, b = cropped[(0, 123)], cropped[(0, 123)]
    assert a.shape == (2, 16, 16) and torch.equal(a, b)
    full = ds[0].numpy()
    windows = [np.ascontiguousarray(f[:, y:y + 16, x:x + 16]) for f in
               (full, full[:, ::-1], full[:, :, ::-1], full[:, ::-1, ::-1]) for y in range(17) for x in range(17)]
    assert any(np.array_equal(a.numpy(), w) for w in windows)
    # A second build reuses every shard.
    index = json.loads(build_cache(volumes, tmp_path / "cache", progress=False).read_text())
    assert index["computed_slices"] == 0 and len(index["slices"]) == 6


def test_phase_augmentation_keeps_the_magnitude_and_draws_a_smooth_phase(corpus, tmp_path):
    """phase="random": |x| is the target's magnitude, the phase is a function of the seed, differs between seeds,
    and is smooth (a degree-2 polynomial: its second differences are tiny against the 2π range); evaluation keys
    give the magnitude with zero phase."""
    from training.preprocess import random_smooth_phase
    root, _ = corpus
    index_path = build_cache(select_volumes(find_volumes(root), contrasts=["AXT1"]), tmp_path / "cache",
                             progress=False)
    plain, magnitude = CachedSlices(index_path), CachedSlices(index_path, phase="random")
    target = np.abs(plain.target(0))
    a, b, c = (torch.complex(*magnitude[(0, seed)]).numpy() for seed in (5, 5, 6))
    np.testing.assert_allclose(np.abs(a), target, rtol=1e-5, atol=1e-6)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    phase = random_smooth_phase(32, 32, np.random.default_rng(0))
    assert np.abs(np.diff(phase, 2, axis=0)).max() < 0.05 and np.abs(np.diff(phase, 2, axis=1)).max() < 0.05
    evaluation = torch.complex(*magnitude[0]).numpy()
    np.testing.assert_allclose(evaluation.real, target, rtol=1e-5, atol=1e-6)
    assert np.abs(evaluation.imag).max() == 0
    with pytest.raises(ValueError, match="phase"):
        CachedSlices(index_path, phase="magnitude")


def test_detail_phase_keeps_the_target_and_adds_a_gaussian_field_of_the_drawn_length(corpus, tmp_path):
    """phase="detail": the target's magnitude exactly, its phase plus a seeded field; evaluation keys give the target
    itself. The field is white noise smoothed by a Gaussian of sd ℓ, so its autocorrelation at lag d is the closed
    form exp(-d² / (4ℓ²)); its std is the drawn one (at most max_std)."""
    from training.preprocess import random_detail_phase
    root, _ = corpus
    index_path = build_cache(select_volumes(find_volumes(root), contrasts=["AXT1"]), tmp_path / "cache",
                             progress=False)
    plain, detail = CachedSlices(index_path), CachedSlices(index_path, phase="detail")
    target = plain.target(0)
    a, b, c = (torch.complex(*detail[(0, seed)]).numpy() for seed in (5, 5, 6))
    np.testing.assert_allclose(np.abs(a), np.abs(target), rtol=1e-5, atol=1e-6)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    np.testing.assert_allclose(torch.complex(*detail[0]).numpy(), target, rtol=1e-6, atol=1e-7)
    length = 4.0
    field = random_detail_phase(256, 256, np.random.default_rng(1), length_px=(length, length), max_std=0.5)
    assert 0 < field.std() <= 0.5 + 1e-6
    z = (field - field.mean()) / field.std()
    for lag in (2, 4, 8):
        measured = 0.5 * ((z * np.roll(z, lag, 0)).mean() + (z * np.roll(z, lag, 1)).mean())
        assert abs(measured - np.exp(-lag ** 2 / (4 * length ** 2))) < 0.05, (lag, measured)


def test_contrast_and_subject_selection(corpus, tmp_path):
    root, _ = corpus
    volumes = find_volumes(root)
    assert sorted({v.contrast for v in volumes}) == ["AXFLAIR", "AXT1", "AXT2"]
    pre = select_volumes(volumes, exclude_contrasts=["axflair"])
    assert {v.contrast for v in pre} == {"AXT1", "AXT2"}
    flair = select_volumes(volumes, contrasts=["AXFLAIR"], subjects=2)
    assert [v.subject for v in flair] == ["subj02", "subj03"]
    assert select_volumes(volumes, contrasts=["AXFLAIR"], subjects=1, skip_subjects=2)[0].subject == "subj04"
    with pytest.raises(ValueError, match="only 3"):
        select_volumes(volumes, contrasts=["AXFLAIR"], subjects=5)
    with pytest.raises(ValueError, match="contrasts"):
        select_volumes(volumes, contrasts=["AXT1POST"])
    ds = CachedSlices(build_cache(pre, tmp_path / "c", progress=False))
    assert {e.contrast for e in ds.slices} == {"AXT1", "AXT2"} and len(ds) == 6


# ----------------------------------------------------------------------------------------------------------------------
# Training loop: DDP equivalence and exact resume.

class _RandomImages(Dataset):
    """N fixed random [2, 16, 16] images; the augmentation seed flips them (so keys matter)."""

    def __init__(self, n: int = 24):
        self.x = torch.randn(n, 2, 16, 16, generator=torch.Generator().manual_seed(5)) * 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        i, seed = (key, None) if isinstance(key, int) else key
        x = self.x[i]
        if seed is not None and seed % 2:
            x = x.flip(-1)
        return x.clone()


def _loop(run_dir, steps, world_batch_gpu=None, resume=False, **kw):
    return training_loop(run_dir=run_dir, dataset=_RandomImages(), arch="unet", arch_kwargs=TINY_NET,
                         total_steps=steps, batch_size=8, batch_gpu=world_batch_gpu, lr=1e-3, ema_halflife_nimg=16,
                         seed=3, tick_steps=1, snapshot_ticks=1, resume=resume, progress=False, tensorboard=False,
                         **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, run_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from training import distributed as dist_utils
    dist_utils.init("cpu")
    try:
        _loop(run_dir, 3)
    finally:
        dist_utils.shutdown()


def test_two_process_gloo_matches_one_process(tmp_path):
    # 1 process, global batch 8 in 2 accumulation rounds of 4 == 2 processes x 4 (same virtual shards, same noise).
    _loop(tmp_path / "single", 3, world_batch_gpu=4)
    # The free port is released before rank 0 binds it, so another process can take it meanwhile: then try a new one.
    for attempt in range(3):
        ddp_dir = tmp_path / f"ddp{attempt}"
        try:
            torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(ddp_dir)), nprocs=2, join=True)
            break
        except torch.multiprocessing.ProcessRaisedException as error:
            if "address already in use" not in str(error).lower() or attempt == 2:
                raise
    a = load_file(str(tmp_path / "single" / "training-state.safetensors"))
    b = load_file(str(ddp_dir / "training-state.safetensors"))
    for key in a:
        if key.startswith(("net.", "ema.")):
            # Differences come only from float summation order (all-reduce vs local sum): ~1e-7 relative.
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    meta = json.loads((ddp_dir / "training-state.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 3
    assert "rng.torch.rank1" in b                       # every rank's RNG state is saved


def test_loader_workers_change_nothing(tmp_path):
    # One DataLoader serves every epoch (7 steps of 3 per epoch cross two epoch boundaries); worker processes must
    # get the same (index, augmentation seed) keys in the same order as the main process does without them.
    _loop(tmp_path / "main", 7)
    _loop(tmp_path / "workers", 7, num_workers=2)
    a = load_file(str(tmp_path / "main" / "training-state.safetensors"))
    b = load_file(str(tmp_path / "workers" / "training-state.safetensors"))
    for key in a:
        if key.startswith(("net.", "ema.")):
            assert torch.equal(a[key], b[key]), key


def test_resume_continues_identically(tmp_path):
    _loop(tmp_path / "full", 4)
    _loop(tmp_path / "part", 2)                          # "interrupted" after 2 steps (state saved every step)
    out = _loop(tmp_path / "part", 4, resume=True)
    assert out["step"] == 4
    a = load_file(str(tmp_path / "full" / "training-state.safetensors"))
    b = load_file(str(tmp_path / "part" / "training-state.safetensors"))
    assert set(a) == set(b)
    for key in a:
        if not key.startswith("rng."):
            assert torch.equal(a[key], b[key]), key
    pa, _ = load_checkpoint(tmp_path / "full" / "model.json")
    pb, _ = load_checkpoint(tmp_path / "part" / "model.json")
    for (ka, va), (kb, vb) in zip(pa.state_dict().items(), pb.state_dict().items()):
        assert torch.equal(va, vb), ka
    # A resume with other settings is refused with a sentence naming the fix.
    with pytest.raises(ValueError, match="same settings"):
        training_loop(run_dir=tmp_path / "part", dataset=_RandomImages(), arch="unet", arch_kwargs=TINY_NET,
                      total_steps=5, batch_size=4, seed=3, resume=True, progress=False, tensorboard=False)


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning keeps the best validation epoch.

@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "pre"
    torch.manual_seed(0)
    precond = build_network("unet", TINY_NET, sigma_data=0.3)
    save_checkpoint(path, precond, {"training_data": "test", "zeta": {"2": 1.0}, "image_size": [32, 32]})
    return path.with_suffix(".json")


def _finetune_args(init, root, val, out, epochs, extra=()):
    return finetune_mod.build_parser().parse_args(
        ["--init", str(init), "--data", str(root), "--contrasts", "AXFLAIR", "--subjects", "3", "--val-data", str(val),
         "--lr", "2e-3", "--epochs", str(epochs), "--eval-every", "1", "--batch", "3", "--crop", "16", "--flip",
         "--out", str(out), "--no-progress", "--seed", "7", *extra])


def test_finetune_exports_best_epoch(corpus, tiny_init, tmp_path):
    root, val = corpus
    scores = iter([0.50, 0.40, 0.20, 0.30, 0.60])        # epochs 0..4: best is epoch 2, then validation worsens
    seen = []

    def scripted(ema, step):
        seen.append(step)
        return {"score": next(scores)}

    args = _finetune_args(tiny_init, root, val, tmp_path / "ft4", epochs=4)
    summary = finetune_mod.finetune(args, evaluate_fn=scripted)
    steps_per_epoch = summary["steps_per_epoch"]           # 9 slices / batch 3
    assert steps_per_epoch == 3 and seen == [0, 3, 6, 9, 12]
    assert summary["best_epoch"] == 2
    card = json.loads((tmp_path / "ft4" / "model.json").read_text())
    assert card["training"]["best_epoch"] == 2
    assert [e["epoch"] for e in card["training"]["validation"]["per_epoch"]] == [0, 1, 2, 3, 4]

    # Reference: the same fine-tuning stopped after 2 epochs (deterministic) gives the epoch-2 EMA.
    ref_scores = iter([0.5, 0.4, 0.3])
    ref = finetune_mod.finetune(_finetune_args(tiny_init, root, val, tmp_path / "ft2", epochs=2),
                                evaluate_fn=lambda ema, step: {"score": next(ref_scores)})
    assert ref["best_epoch"] == 2
    best, _ = load_checkpoint(tmp_path / "ft4" / "model.json")
    epoch2, _ = load_checkpoint(tmp_path / "ft2" / "model.json")
    last = load_file(str(tmp_path / "ft4" / "training-state.safetensors"))
    init, _ = load_checkpoint(tiny_init)
    for key, value in best.net.state_dict().items():
        assert torch.equal(value, epoch2.net.state_dict()[key]), key
    assert any(not torch.equal(v, last[f"ema.{k}"]) for k, v in best.net.state_dict().items())   # not the last
    assert any(not torch.equal(v, init.net.state_dict()[k]) for k, v in best.net.state_dict().items())


def test_finetune_validates_through_reconstructor(corpus, tiny_init, tmp_path):
    """End to end: real validation at R = 2, 4 through the Reconstructor, ζ sweep, card contents, export."""
    from dpm_core.samplers import SAMPLERS
    root, val = corpus
    sampler = "fast" if "fast" in SAMPLERS else "dds"
    export = tmp_path / "exported" / "flair"
    args = _finetune_args(tiny_init, root, val, tmp_path / "ft", epochs=1,
                          extra=["--val-slices", "2", "--zetas", "0.5", "2", "--sampler", sampler,
                                 "--sampler-options", '{"steps": 10}',
                                 "--export", str(export)])
    summary = finetune_mod.finetune(args)
    card = json.loads(export.with_suffix(".json").read_text())
    per_epoch = card["training"]["validation"]["per_epoch"]
    assert [e["epoch"] for e in per_epoch] == [0, 1]
    for e in per_epoch:
        assert 0 < e["nrmse_R2"] < 10 and 0 < e["nrmse_R4"] < 10
        assert 0 < e["nrmse_support_R2"] < 10 and 0 < e["nrmse_support_R4"] < 10
        assert e["score"] == pytest.approx((e["nrmse_R2"] + e["nrmse_R4"]) / 2)
    sweep = card["training"]["zeta_sweep"]
    assert set(sweep["nrmse"]) == {"2", "4"} and set(sweep["nrmse"]["2"]) == {"0.5", "2"}
    assert len(card["zeta"]) == 2 and all(z in (0.5, 2.0) for z in card["zeta"].values())
    assert card["training"]["data"]["num_subjects"] == 3 and card["training"]["data"]["contrasts"] == ["AXFLAIR"]
    assert card["training"]["best_epoch"] == summary["best_epoch"]
    load_checkpoint(export.with_suffix(".json"))          # loadable, hash checked


def test_ismrmrd_raw_source_gives_same_targets(corpus, tmp_path):
    """An ISMRMRD raw file goes through gadgets.assembly (the gadget's code) and yields the fastMRI-path targets."""
    from gadgets.mrd_io import make_raw_acquisitions, write_mrd_raw
    root, _ = corpus
    src = root / "vol2_AXFLAIR.h5"
    with h5py.File(src, "r") as f:
        k_os = np.asarray(f["kspace"][()]).swapaxes(-1, -2)             # [S, C, H, 2W]
    raw = make_raw_acquisitions(k_os, np.ones(k_os.shape[2], dtype=bool), num_acs=24, noise=None,
                                header_kwargs={"protocol": "AXFLAIR", "patient_id": "mrdsubj"})
    mrd_dir = tmp_path / "mrd"
    mrd_dir.mkdir()
    write_mrd_raw(str(mrd_dir / "scan.h5"), raw)
    (volume,) = find_volumes(mrd_dir)
    assert (volume.kind, volume.contrast, volume.subject) == ("ismrmrd", "AXFLAIR", "mrdsubj")
    mrd = CachedSlices(build_cache([volume], tmp_path / "cache", progress=False))
    fm = CachedSlices(build_cache(select_volumes(find_volumes(src)), tmp_path / "cache", progress=False))
    assert len(mrd) == len(fm) == 3
    for i in range(3):
        torch.testing.assert_close(torch.from_numpy(mrd.target(i)), torch.from_numpy(fm.target(i)),
                                   rtol=1e-4, atol=1e-4)


def test_pretraining_continues_from_a_model_card(corpus, tiny_init, tmp_path, capsys):
    """--init: the network, its architecture and σ_data come from the card; 0 steps export it unchanged, more steps
    move it; the card records where it started. --no-progress silences the target cache's bar too."""
    from training import pretrain
    root, _ = corpus
    common = ["--data", str(root), "--exclude-contrasts", "AXFLAIR", "--cache", str(tmp_path / "cache"),
              "--init", str(tiny_init), "--batch", "2", "--crop", "16", "--no-progress", "--tick", "1"]
    assert pretrain.main([*common, "--out", str(tmp_path / "zero"), "--steps", "0"]) == 0
    assert "targets" not in capsys.readouterr().err
    assert pretrain.main([*common, "--out", str(tmp_path / "two"), "--steps", "2", "--lr", "1e-2"]) == 0
    init, init_card = load_checkpoint(tiny_init)
    zero, zero_card = load_checkpoint(tmp_path / "zero" / "model.json")
    two, two_card = load_checkpoint(tmp_path / "two" / "model.json")
    assert zero.sigma_data == two.sigma_data == init.sigma_data == 0.3          # not re-measured on the corpus
    assert two_card["arch_kwargs"] == init_card["arch_kwargs"]                   # not --preset small
    for key, value in init.net.state_dict().items():
        assert torch.equal(value, zero.net.state_dict()[key]), key
    assert any(not torch.equal(v, two.net.state_dict()[k]) for k, v in init.net.state_dict().items())
    assert two_card["training"]["init_sha256"] == init_card["sha256"]
    assert two_card["training_data"].startswith("test; then pre-training:")
    with pytest.raises(SystemExit):
        pretrain.main([*common, "--out", str(tmp_path / "bad"), "--steps", "1", "--sigma-data", "0.5"])


# ----------------------------------------------------------------------------------------------------------------------
# The training noise levels (--p-mean / --p-std).

class _RecordingDenoiser:
    """Identity denoiser that records the σ it is called with (EDM's loss weight, σ_data 0.5)."""

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma):
        self.sigmas.append(sigma.detach().clone())
        return x

    def loss_weight(self, sigma):
        return (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2


def test_edm_loss_draws_the_stated_log_normal_noise_levels():
    from scipy import stats
    P_mean, P_std = -3.4, 1.2
    recorder = _RecordingDenoiser()
    edm_loss(recorder, torch.zeros(4000, 2, 4, 4), generator=torch.Generator().manual_seed(0), P_mean=P_mean,
             P_std=P_std)
    log_sigma = torch.cat(recorder.sigmas).log().numpy()
    # Kolmogorov-Smirnov against N(P_mean, P_std²): p > 0.01 for a correct sampler (a wrong mean by 0.1 std fails).
    assert stats.kstest(log_sigma, "norm", args=(P_mean, P_std)).pvalue > 0.01
    assert stats.kstest(log_sigma, "norm", args=(P_mean + 0.1 * P_std, P_std)).pvalue < 0.01


def test_training_records_its_noise_levels_and_refuses_a_degenerate_distribution(tmp_path):
    _loop(tmp_path / "low", 1, P_mean=-3.4, P_std=1.0)
    card = json.loads((tmp_path / "low" / "model.json").read_text())
    assert (card["training"]["P_mean"], card["training"]["P_std"]) == (-3.4, 1.0)
    with pytest.raises(ValueError, match="--p-std"):
        _loop(tmp_path / "bad", 1, P_std=0.0)
