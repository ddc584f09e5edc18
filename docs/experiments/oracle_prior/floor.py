"""Every method on the fully sampled real slice (R 1), scored against bench_real's reference (the RSS of the same
fully sampled coil images): the floor of that metric, where nothing is missing.

    OMP_NUM_THREADS=1 python docs/experiments/oracle_prior/floor.py > docs/experiments/oracle_prior/floor.log
"""
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
import bench_real as br  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from training.preprocess import compute_targets  # noqa: E402

BART_LAMBDAS = (0.001, 0.002)                      # the best λ of real.md's grid on the real cases

torch.set_num_threads(1)
case = br.real_cases(lambda n: n == "real_R4")[0]
full = case.kspace                                                        # [1, C, H, W], every line
H = full.shape[2]
ref = rss(ifft2c(full)).numpy()
mask = np.ones(H, bool)
model = str(br.product_model(case).card_path)


def nrmse(x) -> float:
    return round(float(np.linalg.norm(x - ref) / np.linalg.norm(ref)), 5)


for method in ("sense", "l1_wavelet", "dpm"):
    res = Reconstructor(method=method, model=model, device="cpu", progress=None).reconstruct(full, mask)
    print("fully sampled", method, nrmse(np.abs(res.images)), res.info.get("zeta"), res.info.get("noise_std"))
dpm_info = res.info                                                       # the last run: the DPM's
for num_maps in (1, 2):
    results, _ = br.bart_methods(full.numpy(), num_maps, BART_LAMBDAS, br.ITERATIONS)
    for lam, (images, _) in results.items():
        print("fully sampled BART", num_maps, "maps λ", lam, nrmse(images))
# What the measurement noise alone moves the reference by: a second noise draw of the calibration matrix's level
scale = float(np.atleast_1d(dpm_info["scale"])[0])
sigma = float(np.atleast_1d(dpm_info["noise_std"])[0]) * scale          # per real channel, in the units of full
g = torch.Generator().manual_seed(0)
noise = torch.complex(torch.randn(full.shape, generator=g), torch.randn(full.shape, generator=g)) * sigma
print("reference against itself with a second noise draw added", nrmse(rss(ifft2c(full + noise)).numpy()))
# The training targets' combination (ESPIRiT maps + MVUE, training.preprocess.compute_targets) against the reference
targets, scales = compute_targets(full)
print("training target (MVUE) of the fully sampled slice", nrmse((targets * scales.view(-1, 1, 1)).abs().numpy()))
