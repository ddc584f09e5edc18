"""DDS whose data step also carries the L1-wavelet penalty (the DPM prior times a Laplace wavelet prior), on the
real cases of bench_real.py and one held-out synthetic case, scored as bench_real.py scores them.

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_hybrid.py LAMDA_FACTOR:INNER [...]

Each level: D = denoiser(x, σ_i); x0 = argmin_u ½‖Au − y‖² + ½ lam_i ‖u − D‖² + λ‖Ψu‖₁ by INNER FISTA iterations
from D (cycle-spun db2, step 1 / (‖AᴴA‖ + lam_i)); then the DDS re-noising. lam_i and ζ as the shipped DDS (card ζ
or GCV); λ = LAMDA_FACTOR · the L1 baseline's per-scan rule (0.16 · k-space edge level). "plain" = shipped DDS.
"""
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402

from dpm_core import baselines  # noqa: E402
from dpm_core.baselines import operator_norm_sq, soft_threshold  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.noise import kspace_edge_level  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers import registry  # noqa: E402
from dpm_core.samplers._common import check_inputs, denoise_maps, per_slice, start_noise  # noqa: E402
from dpm_core.samplers.dds import renoise  # noqa: E402
from dpm_core.wavelets import Wavelet2D  # noqa: E402

CASES = tuple(os.environ.get("CASES", "real_R4,real_R6,real_R4_random,real_folded_R3,synth0_R4").split(","))
MODEL = os.environ.get("MODEL") or None          # a model card to test instead of the shipped choice


def dds_l1(denoiser, y, op, sigmas, generators, *, x_init=None, callback=None, noise_std=None, sigma_data=0.5,
           zeta=1.0, eta=1.0, l1_factor=1.0, inner=10, cg_iters=5, lamda=0.0):
    sigmas = check_inputs("dds_l1", y, op, sigmas, generators, x_init)
    S, _, H, W = op.ishape
    mask_1d = (op.mask.reshape(S, -1, H, op.mask.shape[-1]).amax(dim=(1, 3))[0] > 0).cpu().numpy()
    lam_l1 = (l1_factor * baselines.L1_LAMDA_PER_EDGE_LEVEL * kspace_edge_level(y, mask_1d)).view(S, 1, 1, 1)
    noise_std = per_slice(noise_std, S, y.device)
    zeta = per_slice(zeta, S, y.device)
    L = operator_norm_sq(op).view(S, 1, 1, 1)
    psi = Wavelet2D((H, W), "db2")
    shifts = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = start_noise(sigmas, x_init, generators, op, y.device)
        Ahy = op.adjoint(y)
        for i in range(sigmas.numel() - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            D = denoise_maps(denoiser, x, sigma)
            lam = noise_std ** 2 * (1.0 / sigma ** 2 + 1.0 / sigma_data ** 2) / zeta
            step = 1.0 / (L + lam)
            u, z, theta = D, D, 1.0
            for _ in range(inner):
                v = z - step * (op.normal(z) - Ahy + lam * (z - D))
                sh = (int(torch.randint(H, (), generator=shifts)), int(torch.randint(W, (), generator=shifts)))
                u_new = psi.adjoint(soft_threshold(psi.forward(v, sh), lam_l1 * step), sh)
                theta_new = 0.5 * (1 + math.sqrt(1 + 4 * theta ** 2))
                z = u_new + ((theta - 1) / theta_new) * (u_new - u)
                u, theta = u_new, theta_new
            x0 = u
            x = renoise(x, x0, sigma, sigma_next, eta, generators)
    return x


torch.set_num_threads(1)
base = registry.SAMPLERS["dds"]
registry.SAMPLERS["dds_l1"] = registry.Sampler(
    "dds_l1", dds_l1, "karras", 50, base.options | {"l1_factor", "inner"}, base.evaluations, "hybrid",
    warm_start_steps=base.warm_start_steps, card_zeta=True)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 1, 2)[0]
for variant in sys.argv[1:]:
    if variant == "plain":
        rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL)
    else:
        factor, inner = variant.split(":")
        rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL, sampler="dds_l1",
                            sampler_options={"l1_factor": float(factor), "inner": int(inner)})
    nrmse, t0, zetas = {}, time.perf_counter(), {}
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        res = rec.reconstruct(under, case.mask)
        nrmse[case.name] = round(scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
        zetas[case.name] = res.info.get("zeta")
    print(variant, nrmse, "ζ", zetas, f"{time.perf_counter() - t0:.0f} s", flush=True)
