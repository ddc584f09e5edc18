"""Where the error lies: inside the coil maps' support (where the measurements say something) or outside it (where
the Reconstructor returns 0 for SENSE and the DPM), for every method of bench_real on the real slice at R 1 (every
line), R 4, R 6 and R 4 random. The support is our ESPIRiT's (the maps the DPM's Reconstructor uses on that case).

    cd docs/experiments/oracle_prior && OMP_NUM_THREADS=1 python support_split.py > support_split.log
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

BART_LAMBDA = {"R 1": 0.002, "real_R4": 0.001, "real_R6": 0.001, "real_R4_random": 0.0005}   # best λ (real.md)
torch.set_num_threads(1)
cases = br.real_cases(lambda n: n in ("real_R4", "real_R6", "real_R4_random"))
full = cases[0].kspace
H = full.shape[2]
ref = rss(ifft2c(full)).numpy()                                             # [1, H, W]
norm = np.linalg.norm(ref)
model = str(br.product_model(cases[0]).card_path)
for name, mask in [("R 1", np.ones(H, bool))] + [(c.name, c.mask) for c in cases]:
    under = full * torch.from_numpy(mask).view(1, 1, H, 1)
    images, support = {}, None
    for label, method, sampler in (("sense", "sense", "fast"), ("l1_wavelet", "l1_wavelet", "fast"),
                                   ("dpm", "dpm", "fast"), ("dpm pnp", "dpm", "pnp")):
        res = Reconstructor(method=method, model=model, sampler=sampler, device="cpu",
                            progress=None).reconstruct(under, mask)
        images[label] = np.abs(res.images)
        support = np.abs(np.asarray(res.maps)).sum(axis=(1, 2)) > 0           # [1, H, W]
    results, _ = br.bart_methods(under.numpy(), 2, (BART_LAMBDA[name],), br.ITERATIONS)
    images[f"BART PICS 2 maps λ {BART_LAMBDA[name]}"] = results[BART_LAMBDA[name]][0]
    print(f"{name}: support {support.mean():.3f} of the pixels, reference energy outside it "
          f"{np.linalg.norm(ref * ~support) / norm:.5f}; reference outside it at most {ref[~support].max():.4f}, "
          f"inside median {np.median(ref[support]):.4f}, max {ref.max():.4f}", flush=True)
    for label, x in images.items():
        e = x - ref
        print(f"  {label}: NRMSE {np.linalg.norm(e) / norm:.5f} = inside {np.linalg.norm(e * support) / norm:.5f} (+) "
              f"outside {np.linalg.norm(e * ~support) / norm:.5f}", flush=True)
