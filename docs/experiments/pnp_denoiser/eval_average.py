"""Do pnp's errors and our L1-wavelet's errors cancel? Their weighted mean against each alone, on cases of
bench_real.py, both as shipped (Reconstructor defaults: pnp's held-out-lines ζ, L1's per-scan λ).

    OMP_NUM_THREADS=1 python docs/experiments/pnp_denoiser/eval_average.py CASE[,CASE...] > LOG

One JSON line per case: NRMSE (bench_real.py's scoring) of w · pnp + (1 − w) · L1 for w in WEIGHTS, of the magnitudes
("mag<w>") and of the complex images ("cpx<w>"); w = 0 is L1 alone, w = 1 pnp alone. A diagnostic, not a method.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

WEIGHTS = (0, 0.25, 0.5, 0.75, 1)


def main():
    torch.set_num_threads(1)
    wanted = sys.argv[1].split(",")
    cases = real_cases(lambda n: n in wanted) + synthetic_cases(lambda n: n in wanted, 3, 2)[0]
    l1 = Reconstructor(method="l1_wavelet", num_maps="auto", progress=None)
    pnp = Reconstructor(method="dpm", num_maps="auto", sampler="pnp", progress=None)
    for case in cases:
        S, C, H, W = case.kspace.shape
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        ref = rss(ifft2c(case.kspace)).numpy()
        t0 = time.perf_counter()
        a = l1.reconstruct(under, case.mask).images
        result = pnp.reconstruct(under, case.mask)
        b = result.images
        out = {"case": case.name, "zeta": str(result.info.get("zeta")), "s": round(time.perf_counter() - t0, 1)}
        for w in WEIGHTS:
            out[f"mag{w}"] = round(scores(np.abs(w * np.abs(b) + (1 - w) * np.abs(a)), ref)["NRMSE"], 5)
            out[f"cpx{w}"] = round(scores(np.abs(w * b + (1 - w) * a), ref)["NRMSE"], 5)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
