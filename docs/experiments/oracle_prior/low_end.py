"""DDS with its schedule continued below the measured noise level (σ_min 0.002 -> 0.0002), real R 1 and R 4.

    OMP_NUM_THREADS=1 python docs/experiments/oracle_prior/low_end.py MODEL [MODEL ...] > low_end.log
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import bench_real as br  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.schedules import karras_sigmas  # noqa: E402

STEPS, SIGMA_MAX = 30, 80.0          # the product's warm schedule: 30 Karras levels, those <= 0.2 run
torch.set_num_threads(1)
case = br.real_cases(lambda n: n == "real_R4")[0]
H = case.kspace.shape[2]
ref = rss(ifft2c(case.kspace)).numpy()
masks = {"R 1": np.ones(H, bool), "R 4": case.mask}
for model in sys.argv[1:]:
    for label, mask in masks.items():
        under = case.kspace * torch.from_numpy(mask).view(1, 1, H, 1)
        for sigma_min in (0.002, 0.0005, 0.0002):
            for zeta in (1.0, 0.25):
                rec = Reconstructor(method="dpm", model=model, zeta=zeta, device="cpu", progress=None,
                                    sampler_options={"sigmas": karras_sigmas(STEPS, sigma_min, SIGMA_MAX)})
                x = np.abs(rec.reconstruct(under, mask).images)
                print(f"{model} {label} sigma_min {sigma_min} zeta {zeta}: NRMSE "
                      f"{np.linalg.norm(x - ref) / np.linalg.norm(ref):.5f}", flush=True)
