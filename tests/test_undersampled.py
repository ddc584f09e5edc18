"""Fine-tuning from accelerated scans alone (training.undersampled): the objective is unbiased on an exact Gaussian
prior, the held-out-line score needs no reference, and ``dpm-finetune --undersampled`` runs end to end on accelerated
files.

The unbiasedness proof: prior x ~ CN(0, Σ), Σ = Fᴴ diag(p) F; scans y_i = M_i F S x_i + n with a different random
mask M_i per scan. For a linear denoiser D_g(x) = Fᴴ diag(g) F x at a fixed σ per real channel, the fully sampled
expected EDM loss (mean over the 2·H·W real entries) is
    L(g) = Σ_k [(g_k − 1)² p_k + 2σ² g_k²] / (2HW),   ∂L/∂g_k = [2 (g_k − 1) p_k + 4σ² g_k] / (2HW),
and it depends on the data only through E|F x|² = p. The undersampled objective (the same loss on E-step posterior
samples) must have the same expected gradient: exact posterior draws are (scan, image)-pairs of the true law.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dpm_core.checkpoints import load_checkpoint, save_checkpoint
from dpm_core.fft import fft2c, ifft2c
from dpm_core.gaussian import GaussianPrior, synthetic_coil_maps
from dpm_core.masks import equispaced_mask, random_mask
from dpm_core.networks import build_network, edm_loss
from dpm_core.operators import SenseOp
from dpm_core.samplers import posterior_samples
from dpm_core.schedules import geometric_sigmas
from dpm_core.seeding import randn_complex
from training import finetune as finetune_mod
from training.preprocess import find_volumes
from training.undersampled import (heldout_line_error, holdout_split, read_accelerated,
                                   write_accelerated_copy)

from .test_training import TINY_NET, write_tiny_fastmri

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

H = W = 16
SIGMA = 0.4              # the training noise level of the gradient check (fixed: P_std = 0)
G_PROBE = 0.6            # the linear denoiser's gain at which the gradient is compared


class FourierGainDenoiser(torch.nn.Module):
    """D_g(x) = Fᴴ diag(g) F x on the [B, 2, H, W] real view, with EDM's interface for :func:`edm_loss` (weight 1)."""

    def __init__(self, gain: float):
        super().__init__()
        self.g = torch.nn.Parameter(torch.full((H, W), gain, dtype=torch.float64))

    def forward(self, x, sigma):
        z = torch.complex(x[:, 0].double(), x[:, 1].double())
        d = ifft2c(self.g * fft2c(z))
        return torch.stack([d.real, d.imag], dim=1)

    def loss_weight(self, sigma):
        return torch.ones_like(sigma)


def _gradient_per_image(images: torch.Tensor, seed: int) -> torch.Tensor:
    """∂/∂g of the production EDM loss at g = G_PROBE, one image at a time: [N, H, W] float64."""
    grads = []
    for i, x in enumerate(images):
        net = FourierGainDenoiser(G_PROBE)
        real = torch.stack([x.real, x.imag]).unsqueeze(0).float()
        loss = edm_loss(net, real, generator=torch.Generator().manual_seed(seed + i), P_mean=math.log(SIGMA),
                        P_std=0.0)
        loss.sum().backward()
        grads.append(net.g.grad.detach().clone())
    return torch.stack(grads)


@pytest.fixture(scope="module")
def gaussian_scans():
    """128 scans of one Gaussian prior, each with its own random mask (R = 3, 4 ACS lines), 4 coils, noise 0.05."""
    N, noise_std = 128, 0.05
    prior = GaussianPrior(H, W, length_scale=3.0)
    maps = synthetic_coil_maps(4, H, W, num_slices=N)
    masks = torch.stack([torch.as_tensor(random_mask(H, 3, num_acs=4, seed=i)) for i in range(N)]).view(N, 1, H, 1)
    op = SenseOp(maps, masks)
    x = prior.sample([torch.Generator().manual_seed(10_000 + i) for i in range(N)])
    noise = torch.stack([randn_complex((4, H, W), torch.Generator().manual_seed(20_000 + i)) for i in range(N)])
    y = (op.forward(x) + noise_std * noise) * op.mask
    return prior, op, x, y, noise_std


def _closed_form_gradient(prior) -> torch.Tensor:
    p = prior.spectrum
    return (2 * (G_PROBE - 1) * p + 4 * SIGMA ** 2 * G_PROBE) / (2 * H * W)


def _z_scores(grads: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])
    return (mean - expected) / se


def test_dsm_gradient_on_posterior_samples_is_the_fully_sampled_gradient(gaussian_scans):
    """The objective of `dpm-finetune --undersampled` (the EDM loss on E-step posterior samples) has the fully
    sampled expected gradient — in closed form — while the tempting shortcut (the loss on posterior *means*, i.e. on
    reconstructions) is biased: it learns a prior without the detail the scans did not measure."""
    prior, op, x, y, noise_std = gaussian_scans
    expected = _closed_form_gradient(prior)
    # Reference: the same estimator on the true images (what fully sampled fine-tuning would see).
    z_full = _z_scores(_gradient_per_image(x[:, 0], seed=0), expected)
    # E-step: the production sampler in its exact configuration (annealed likelihood ALD, as in test_samplers).
    post = posterior_samples("ald", prior.denoiser(), y, op, geometric_sigmas(5.0, 0.02, 300), num_samples=1,
                             steps_per_level=3, eps=0.02 ** 2, weighting="likelihood", noise_std=noise_std,
                             keep_samples=True, seed=3)
    samples = post.info["samples"][:, 0, 0]                                  # [N, H, W]
    z_samples = _z_scores(_gradient_per_image(samples, seed=0), expected)
    for z in (z_full, z_samples):        # 256 frequencies; exact: mean z² = 1 ± 0.09, max |z| < 4.2 w.p. 99 %
        assert (z ** 2).mean() < 1.5 and z.abs().max() < 4.5, ((z ** 2).mean(), z.abs().max())
    means = post.mean[:, 0]                                                  # K = 1: the sample itself; use exact means
    from dpm_core.gaussian import gaussian_posterior
    exact_means = gaussian_posterior(prior, y, op, noise_std).mean[:, 0].to(torch.complex64)
    z_means = _z_scores(_gradient_per_image(exact_means, seed=0), expected)
    assert (z_means ** 2).mean() > 10, (z_means ** 2).mean()                # the shortcut is detectably biased
    assert torch.equal(means, samples)


def test_holdout_split_keeps_acs_and_is_seeded():
    mask = equispaced_mask(128, 4, 24)
    fit, held = holdout_split(mask, 0.2, seed=5)
    acs = slice(64 - 12, 64 + 12)
    assert fit[acs].all() and not held[acs].any()
    assert not (fit & held).any() and np.array_equal(fit | held, mask)
    outside = int(mask.sum()) - 24
    assert held.sum() == round(0.2 * outside)
    assert np.array_equal(holdout_split(mask, 0.2, seed=5)[1], held)
    assert not np.array_equal(holdout_split(mask, 0.2, seed=6)[1], held)
    with pytest.raises(ValueError, match="outside its ACS block"):
        holdout_split(np.ones(128, bool), 0.2, seed=0)


def test_heldout_score_ranks_predictions_without_a_reference(tmp_path):
    """On a synthetic FLAIR scan: a prior that predicts nothing (zero denoiser, no CG) scores exactly 1; an oracle
    returning the image of the fully sampled k-space scores far lower, and the same oracle blurred (its k-space
    periphery removed) lands in between — the order the fully sampled NRMSE would give."""
    from dpm_core.coils import estimate_coil_maps
    from dpm_core.combine import mvue
    from dpm_core.normalize import normalization_scale
    from training.synth import generate_corpus
    generate_corpus(tmp_path / "syn", 1, ["AXFLAIR"], seed=9, progress=False, matrix=64, coils=8, slices=2)
    full = read_accelerated(find_volumes(tmp_path / "syn")[0])[0]
    mask = equispaced_mask(64, 3, 12)
    scan = full._replace(kspace=full.kspace * torch.from_numpy(mask).view(1, 1, 64, 1), mask=mask)
    scale = normalization_scale(scan.kspace, mask)
    maps = estimate_coil_maps(scan.kspace / scale.view(-1, 1, 1, 1), mask, num_maps=1)   # the Reconstructor's maps
    truth = (mvue(full.kspace, maps) / scale.view(-1, 1, 1)).to(torch.complex64)
    lowpass = torch.zeros(64, 64)
    lowpass[16:48, 16:48] = 1
    blurred = ifft2c(fft2c(truth) * lowpass)

    class Returns:
        def __init__(self, image):
            self.image = image

        def __call__(self, x, sigma):
            return self.image[:x.shape[0]].clone() if self.image is not None else torch.zeros_like(x)

    options = {"steps": 2, "cg_iters": 0}
    scores = {name: heldout_line_error(Returns(image), [scan], fraction=0.3, sampler_options=options)["score"]
              for name, image in (("oracle", truth), ("blurred", blurred), ("nothing", None))}
    assert scores["nothing"] == pytest.approx(1.0, abs=1e-4), scores
    assert scores["oracle"] < 0.5 * scores["blurred"] and scores["blurred"] < 0.9 * scores["nothing"], scores
    # the held-out lines follow the file's name, not its directory: a corpus moved or rerun elsewhere scores the same
    moved = scan._replace(source=str(tmp_path / "elsewhere" / Path(scan.source).name))
    assert heldout_line_error(Returns(blurred), [moved], fraction=0.3, sampler_options=options)["score"] \
        == scores["blurred"]


def test_accelerated_copy_round_trip(tmp_path):
    """write_accelerated_copy + read_accelerated: the measured lines are the fully sampled file's, the others zero,
    the mask comes back from the file (and from the zero lines when the mask dataset is absent)."""
    import h5py
    path = tmp_path / "full.h5"
    write_tiny_fastmri(path, "AXFLAIR", "p1", seed=4, slices=2)
    mask = equispaced_mask(32, 3, 8, offset=1)
    write_accelerated_copy(path, tmp_path / "acc" / "a.h5", mask)
    full = read_accelerated(find_volumes(path)[0])[0]
    scan = read_accelerated(find_volumes(tmp_path / "acc" / "a.h5")[0])[0]
    assert np.array_equal(scan.mask, mask) and scan.ids == ["a.h5:0", "a.h5:1"]
    assert torch.allclose(scan.kspace[:, :, mask], full.kspace[:, :, mask])
    assert scan.kspace[:, :, ~mask].abs().max() == 0
    with h5py.File(tmp_path / "acc" / "a.h5", "a") as f:
        del f["mask"]
    assert np.array_equal(read_accelerated(find_volumes(tmp_path / "acc" / "a.h5")[0])[0].mask, mask)


def test_dpm_finetune_undersampled_end_to_end(tmp_path):
    """`dpm-finetune --undersampled` on accelerated files only: two EM rounds, held-out-line selection, a loadable
    card that records the rounds; a second call reuses every finished round."""
    (tmp_path / "full").mkdir()
    for i in range(3):
        write_tiny_fastmri(tmp_path / "full" / f"train{i}.h5", "AXFLAIR", f"s{i}", seed=20 + i)
        write_accelerated_copy(tmp_path / "full" / f"train{i}.h5", tmp_path / "train" / f"train{i}.h5",
                               equispaced_mask(32, 3, 8, offset=i % 3))
    write_tiny_fastmri(tmp_path / "full" / "val.h5", "AXFLAIR", "v0", seed=40)
    write_accelerated_copy(tmp_path / "full" / "val.h5", tmp_path / "val" / "val.h5", equispaced_mask(32, 3, 8))
    torch.manual_seed(0)
    init = tmp_path / "init"
    save_checkpoint(init, build_network("unet", TINY_NET, sigma_data=0.3),
                    {"training_data": "test", "zeta": {"2": 1.0}, "image_size": [32, 32]})
    argv = ["--undersampled", "--init", str(init.with_suffix(".json")), "--data", str(tmp_path / "train"),
            "--val-data", str(tmp_path / "val"), "--epochs", "1", "--eval-every", "1", "--rounds", "2",
            "--estep-steps", "3", "--sampler-options", '{"steps": 3}', "--batch", "3", "--crop", "16", "--flip",
            "--lr", "2e-3", "--out", str(tmp_path / "run"), "--no-progress"]
    assert finetune_mod.main(argv) == 0
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    rounds = card["training"]["em_rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and all(math.isfinite(r["best_score"]) for r in rounds)
    assert rounds[1]["best_score"] <= rounds[0]["best_score"]       # round 2 starts from round 1's export
    assert "accelerated scans only" in card["training_data"]
    assert card["training"]["estep"]["steps"] == 3
    load_checkpoint(tmp_path / "run" / "model.json")
    targets = json.loads((tmp_path / "run" / "round_1" / "targets" / "index.json").read_text())
    assert len(targets["slices"]) == 9 and "posterior sample" in targets["target"]
    before = (tmp_path / "run" / "round_2" / "done.json").stat().st_mtime_ns
    assert finetune_mod.main(argv) == 0
    assert (tmp_path / "run" / "round_2" / "done.json").stat().st_mtime_ns == before
