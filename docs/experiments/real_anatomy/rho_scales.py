"""Denoising ratio ρ (complex, bench_prior_fit.py's definition) of a model beside oracle wavelet shrinkage, on the
held-out synthetic FLAIR subject 0 at three pixel sizes and on the real dev slice, at σ 0.01 and 0.02.

    OMP_NUM_THREADS=1 python docs/experiments/real_anatomy/rho_scales.py [CARD]     (default: the shipped FLAIR model)
"""
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_prior_fit as b  # noqa: E402
from bench_real import load_real_slice, normalized, oblique_held_out_subjects  # noqa: E402

from dpm_core.checkpoints import load_checkpoint  # noqa: E402
from dpm_core.coils import espirit_fast  # noqa: E402
from dpm_core.combine import mvue  # noqa: E402
from dpm_core.networks import ComplexDenoiser  # noqa: E402
from training.synth import generate_subject  # noqa: E402

SCALES = ((128, 240.0), (96, 240.0), (96, 180.0))     # (matrix, FOV mm): 1.875, 2.5 and 1.875 mm pixels

torch.set_num_threads(1)
card = sys.argv[1] if len(sys.argv) > 1 else "dpm_core/models/flair_default.json"
denoiser = ComplexDenoiser(load_checkpoint(card)[0]).eval()
_, seed, _ = oblique_held_out_subjects(1)[0]
cases = [(f"synthetic {m}² FOV {f:g} mm", normalized(generate_subject(seed, "AXFLAIR", m, 8, 2, lesion=True,
                                                                       fov_mm=f).recon_kspace())) for m, f in SCALES]
cases.append(("real dev slice", normalized(load_real_slice())))
for name, k in cases:
    maps = espirit_fast(k, num_acs=24)
    x, support = mvue(k, maps), maps[:, 0].abs().sum(1) > 0
    out = []
    for sigma in (0.01, 0.02):
        noisy = (x + b.noise_like(x, sigma)) * support
        with torch.no_grad():
            d = denoiser(noisy, torch.full((x.shape[0],), sigma)) * support
        prior = b.ratios(d, x, noisy, support)[0]
        wavelet = min(b.ratios(b.wavelet_shrinkage(noisy, c * sigma) * support, x, noisy, support)[0]
                      for c in b.SHRINK_FACTORS)
        out.append(f"σ {sigma}: prior {prior:.3f}, wavelet {wavelet:.3f}, prior / wavelet {prior / wavelet:.3f}")
    print(card, name, "; ".join(out), flush=True)
