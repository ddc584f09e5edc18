"""How far the fast sampler (DDS) is from the exact posterior mean at its production settings, on a white Gaussian prior.

    OMP_NUM_THREADS=1 python benchmarks/bench_dds_bias.py

On a white prior DDS's proximal model is exact, so with enough CG iterations its sample mean must match the
closed-form posterior (tests/test_samplers.py proves this at ζ = 1 with 25 CG iterations). ζ divides the proximal
weight, λ_i = σ_n² / (ζ σ_i²) = (σ_n / √ζ)² / σ_i², so DDS at ζ targets the posterior of the noise σ_n / √ζ: that is
the reference here. Rows: ζ ∈ {1, 8} (8: the shipped card's value near nominal R = 4) × CG iterations ∈ {5 (the
default), 20, 25}; 50 Karras steps, 96 samples of the 16 x 16 4-coil problem of dpm_core.gaussian (noise 0.05).
Columns as tests/test_samplers.py: mean z², relative error of the mean and its MC standard error, variance ratio.
Writes benchmarks/results/dds_bias.{json,md}.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402

from dpm_core.gaussian import gaussian_posterior, gaussian_problem  # noqa: E402
from dpm_core.samplers import posterior_samples  # noqa: E402
from dpm_core.schedules import karras_sigmas  # noqa: E402
from tests.test_samplers import _mc_stats  # noqa: E402

NOISE_STD = 0.05
SAMPLES = 96


def main() -> None:
    torch.set_num_threads(1)
    white = gaussian_problem(noise_std=NOISE_STD, length_scale=1e6)
    rows = []
    for zeta in (1.0, 8.0):
        reference = white._replace(posterior=gaussian_posterior(white.prior, white.y, white.op,
                                                                NOISE_STD / math.sqrt(zeta)))
        for cg_iters in (5, 20, 25):
            result = posterior_samples("dds", white.prior.denoiser(), white.y, white.op,
                                       karras_sigmas(50, 0.004, 10.0), num_samples=SAMPLES, cg_iters=cg_iters,
                                       noise_std=NOISE_STD, sigma_data=math.sqrt(0.5), zeta=zeta)
            st = _mc_stats(reference, result, SAMPLES)
            rows.append({"zeta": zeta, "cg_iters": cg_iters, "mean z2 (exact: 1)": round(st["z2"], 2),
                         "rel. error of mean": round(st["rel"], 4), "MC s.e.": round(st["rel_se"], 4),
                         "zero-filled": round(st["zf"], 3), "variance ratio": round(st["ratio_mean"], 3)})
    write_results("dds_bias", rows, list(rows[0]),
                  "DDS against the exact posterior at its production settings (white Gaussian prior)",
                  "One command: `OMP_NUM_THREADS=1 python benchmarks/bench_dds_bias.py`. Reference: the closed-form "
                  "posterior for the noise σ_n/√ζ (DDS at ζ is DDS at ζ = 1 with that noise, by its λ). An exact "
                  "sampler gives mean z² ≈ 1 and a relative error within about 2 MC standard errors.")


if __name__ == "__main__":
    main()
