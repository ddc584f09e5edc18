"""DDS with the denoiser applied to the image demodulated by a full-resolution phase estimated from the scan, on the
real cases of bench_real.py, scored as bench_real.py scores them.

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_demod.py SOURCE [SOURCE ...]

D'(x, σ) = e^{iφ} D(e^{-iφ} x, σ): a fixed phase rotation keeps complex white noise white, so D' is a denoiser for
images whose phase is φ up to a small residual; the prior then sees a nearly real image, where it beats wavelet
shrinkage (prior_fit.md, phase removed). SOURCE: "plain" (the shipped DDS), "sense" (φ = the phase of the SENSE
warm-start image), "l1" (the phase of our L1-wavelet image from the same data), "oracle" (the phase of the fully
sampled image combined with the same maps; not a method: it also carries the phase of the reference's own noise),
"x0" (the phase of the previous level's data-consistent x0, the first level's from the SENSE start); a suffix
"_smooth<w>" blurs the complex phase source by a Gaussian of std w pixels first. The oracle needs a whole case per
sampler call, so the default cases are the real single-slice ones.
"""
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
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.noise import kspace_edge_level  # noqa: E402
from dpm_core.normalize import normalization_scale  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers import registry  # noqa: E402
from dpm_core.samplers.dds import dds, renoise  # noqa: E402

CASES = tuple(os.environ.get("CASES", "real_R4,real_R6,real_R4_random,real_folded_R3").split(","))
MODEL = os.environ.get("MODEL") or None          # a model card to test instead of the shipped choice
ORACLE = {}


def dds_demod(denoiser, y, op, sigmas, generators, *, x_init=None, phase_source="sense", **options):
    S, M, H, W = op.ishape
    if phase_source == "x0":
        return dds_tracking(denoiser, y, op, sigmas, generators, x_init=x_init, **options)
    source, _, width = phase_source.partition("_smooth")
    if source == "sense":
        ref = x_init
    elif source == "l1":
        mask_1d = (op.mask.reshape(S, -1, H, op.mask.shape[-1]).amax(dim=(1, 3))[0] > 0).cpu().numpy()
        ref = baselines.l1_wavelet(y, op.mask, op.maps, edge_level=kspace_edge_level(y, mask_1d))
    else:
        full = ORACLE["kspace"] / ORACLE["scale"].view(-1, 1, 1, 1)
        ref = (ifft2c(full).unsqueeze(1) * op.maps.conj()).sum(2)                  # [S, M, H, W]
    if width:
        ref = gaussian_blur(ref, float(width))
    rot = torch.exp(1j * torch.angle(ref)).to(torch.complex64).reshape(S * M, H, W)

    def demodulated(x, sigma):
        return rot * denoiser(x * rot.conj(), sigma)
    return dds(demodulated, y, op, sigmas, generators, x_init=x_init, **options)


def gaussian_blur(image, width_px):
    """Periodic Gaussian blur (std width_px pixels) of [S, M, H, W] complex, by FFT."""
    H, W = image.shape[-2:]
    fy = torch.fft.fftfreq(H).view(-1, 1)
    fx = torch.fft.fftfreq(W).view(1, -1)
    kernel = torch.exp(-2 * (np.pi * width_px) ** 2 * (fy ** 2 + fx ** 2))
    return torch.fft.ifft2(torch.fft.fft2(image) * kernel)


def dds_tracking(denoiser, y, op, sigmas, generators, *, x_init=None, callback=None, cg_iters=5, noise_std=None,
                 sigma_data=0.5, lamda=0.0, eta=1.0, zeta=1.0):
    """dds with the demodulating phase taken from the previous level's data-consistent x0 (first level: x_init)."""
    from dpm_core.cg import conjugate_gradient
    from dpm_core.samplers._common import denoise_maps, per_slice, start_noise
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    S = op.ishape[0]
    noise_std, zeta = per_slice(noise_std, S, y.device), per_slice(zeta, S, y.device)
    with torch.no_grad():
        x = start_noise(sigmas, x_init, generators, op, y.device)
        rot = torch.exp(1j * torch.angle(x_init)).to(torch.complex64)
        Ahy = op.adjoint(y)
        for i in range(sigmas.numel() - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            D = rot * denoise_maps(denoiser, x * rot.conj(), sigma)
            lam = noise_std ** 2 * (1.0 / sigma ** 2 + 1.0 / sigma_data ** 2) / zeta
            x0 = conjugate_gradient(lambda u: op.normal(u) + lam * u, Ahy + lam * D, D, cg_iters, tol=0.0)
            rot = torch.exp(1j * torch.angle(x0)).to(torch.complex64)
            x = renoise(x, x0, sigma, sigma_next, eta, generators)
    return x


torch.set_num_threads(1)
base = registry.SAMPLERS["dds"]
registry.SAMPLERS["dds_demod"] = registry.Sampler(
    "dds_demod", dds_demod, "karras", 50, base.options | {"phase_source"}, base.evaluations, "demodulated",
    warm_start_steps=base.warm_start_steps, card_zeta=True)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 1, 2)[0]
for source in sys.argv[1:]:
    if source == "plain":
        rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL)
    else:
        rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL, sampler="dds_demod",
                            sampler_options={"phase_source": source})
    nrmse, t0 = {}, time.perf_counter()
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        ORACLE["kspace"] = case.kspace
        ORACLE["scale"] = normalization_scale(under, case.mask) if source.startswith("oracle") else None
        res = rec.reconstruct(under, case.mask)
        nrmse[case.name] = round(scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
    print(source, nrmse, f"{time.perf_counter() - t0:.0f} s", flush=True)
