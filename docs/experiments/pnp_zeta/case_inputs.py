"""The production path's inputs of a bench_real.py case, as the pnp experiments (here and in ../pnp_band,
../pnp_denoiser, ../holdout_folds, ../pnp_lora) use them: what ``Reconstructor(method="dpm", num_maps="auto")
.reconstruct`` derives before it samples; and those experiments' common entry (:func:`pnp_experiment`)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from bench_real import real_cases, synthetic_cases    # the scripts put benchmarks/ on sys.path first

from dpm_core.combine import rss
from dpm_core.fft import ifft2c
from dpm_core.masks import Sampling, sampling_of
from dpm_core.noise import estimate_noise_std
from dpm_core.normalize import normalization_scale
from dpm_core.reconstruct import Reconstructor


class CaseInputs(NamedTuple):
    ref: np.ndarray            # [S, H, W] RSS of the fully sampled coil images (bench_real.py's reference)
    sampling: Sampling
    scale: torch.Tensor        # [S] normalization scale of the undersampled k-space
    kn: torch.Tensor           # [S, C, H, W] undersampled k-space / scale
    maps: torch.Tensor         # [S, M, C, H, W] coil maps (num_maps auto)
    support: torch.Tensor      # [S, M, H, W] bool, where the maps are non-zero
    noise_std: torch.Tensor    # [S] calibration-matrix noise level


def case_inputs(case, rec) -> CaseInputs:
    """The inputs of ``case`` (a bench_real.Case) on ``rec``'s production path."""
    S, C, H, W = case.kspace.shape
    sampling = sampling_of(case.mask, H)
    k = case.kspace * torch.from_numpy(sampling.mask).view(1, 1, H, 1)
    scale = normalization_scale(k, sampling)
    kn = k / scale.view(S, 1, 1, 1)
    maps, _ = rec._coil_maps(kn, sampling, None)
    return CaseInputs(rss(ifft2c(case.kspace)).numpy(), sampling, scale, kn, maps, maps.abs().sum(dim=2) > 0,
                      estimate_noise_std(kn, sampling))


def pnp_experiment(case_names: str, model: str | None = None) -> tuple[list, Reconstructor]:
    """The entry of the pnp experiments, on one torch thread: (the bench_real.py cases named in the comma-separated
    ``case_names`` — the synthetic ones as bench_real.py builds them, 3 subjects of 2 slices — and the production
    path's pnp Reconstructor with ``model``, a card path, or the default model for None)."""
    torch.set_num_threads(1)
    wanted = case_names.split(",")
    cases = real_cases(lambda n: n in wanted) + synthetic_cases(lambda n: n in wanted, 3, 2)[0]
    return cases, Reconstructor(method="dpm", num_maps="auto", sampler="pnp", progress=None, model=model)
