"""Denoising ratio ρ (complex, as benchmarks/bench_prior_fit.py) of each model on the real dev slice and one held-out
synthetic FLAIR subject, with the phase kept and removed, at σ 0.01 / 0.02 / 0.04.

    OMP_NUM_THREADS=1 python docs/experiments/real_anatomy/rho.py CARD [CARD ...]
"""
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench_prior_fit as b  # noqa: E402

from dpm_core.checkpoints import load_checkpoint  # noqa: E402
from dpm_core.networks import ComplexDenoiser  # noqa: E402

SIGMAS = (0.01, 0.02, 0.04)

torch.set_num_threads(1)
b.SYNTH_SUBJECTS = 1
images = b.images()
for card in sys.argv[1:]:
    denoiser = ComplexDenoiser(load_checkpoint(card)[0]).eval()
    for name, x_complex, support in images:
        for phase, x in (("kept", x_complex), ("|x|", x_complex.abs().to(torch.complex64))):
            rho = []
            for sigma in SIGMAS:
                noisy = (x + b.noise_like(x, sigma)) * support
                with torch.no_grad():
                    d = denoiser(noisy, torch.full((x.shape[0],), sigma)) * support
                rho.append(round(b.ratios(d, x, noisy, support)[0], 3))
            print(card, name, phase, rho, flush=True)
