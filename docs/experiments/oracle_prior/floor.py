"""Every method on the fully sampled real slice (R 1), scored against bench_real's reference (the RSS of the same
fully sampled coil images): the floor of that metric, where nothing is missing.

    OMP_NUM_THREADS=1 python docs/experiments/oracle_prior/floor.py > docs/experiments/oracle_prior/floor.log
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import bench_real as br
from dpm_core.combine import rss
from dpm_core.fft import ifft2c
from dpm_core.reconstruct import Reconstructor
torch.set_num_threads(1)
case = br.real_cases(lambda n: n == "real_R4")[0]
full = case.kspace; H = full.shape[2]
ref = rss(ifft2c(full)).numpy()
mask = np.ones(H, bool)
entry = br.product_model(case)
for method in ("sense", "l1_wavelet", "dpm"):
    res = Reconstructor(method=method, model=str(entry.card_path), device="cpu", progress=None).reconstruct(full, mask)
    x = np.abs(res.images)
    print("fully sampled", method, round(float(np.linalg.norm(x - ref) / np.linalg.norm(ref)), 5), res.info.get("zeta"), res.info.get("noise_std"))
for num_maps in (1, 2):
    results, _ = br.bart_methods(full.numpy(), num_maps, (0.001, 0.002), 100)
    for lam, (images, sec) in results.items():
        print("fully sampled BART", num_maps, "maps λ", lam, round(float(np.linalg.norm(images - ref) / np.linalg.norm(ref)), 5))
# What the measurement noise alone moves the reference by: a second noise draw of the calibration matrix's level
est = Reconstructor(method="dpm", model=str(entry.card_path), device="cpu", progress=None).reconstruct(full, mask)
scale = float(np.atleast_1d(est.info["scale"])[0])
sigma = float(np.atleast_1d(est.info["noise_std"])[0]) * scale          # per real channel, in the units of full
g = torch.Generator().manual_seed(0)
noise = torch.complex(torch.randn(full.shape, generator=g), torch.randn(full.shape, generator=g)) * sigma
again = rss(ifft2c(full + noise)).numpy()
print("reference against itself with a second noise draw added", round(float(np.linalg.norm(again - ref) / np.linalg.norm(ref)), 5))
# The training targets' combination (ESPIRiT maps + MVUE, training.preprocess.compute_targets) against the reference
from training.preprocess import compute_targets  # noqa: E402
targets, scales = compute_targets(full)
mvue = (targets * scales.view(-1, 1, 1)).abs().numpy()
print("training target (MVUE) of the fully sampled slice", round(float(np.linalg.norm(mvue - ref) / np.linalg.norm(ref)), 5))
