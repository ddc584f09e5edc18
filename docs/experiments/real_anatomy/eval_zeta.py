"""DPM NRMSE of a model on four real cases of bench_real.py at ζ = auto (GCV), 1, 4 and 16 (the ζ actually used in
brackets): compares models at matched data consistency, independent of their cards' ζ tables.

    OMP_NUM_THREADS=1 python docs/experiments/real_anatomy/eval_zeta.py MODEL [MODEL ...]   (shipped = default)
"""
import sys

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_real import real_cases, scores  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

torch.set_num_threads(1)
cases = real_cases(lambda n: n in ("real_R4", "real_R6", "real_R4_random", "real_folded_R3"))
for model in sys.argv[1:]:
    for zeta in ("auto", 1.0, 4.0, 16.0):
        rec = Reconstructor(method="dpm", num_maps="auto", zeta=zeta, model=None if model == "shipped" else model)
        out = {}
        for case in cases:
            H = case.kspace.shape[2]
            res = rec.reconstruct(case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1), case.mask)
            used = float(np.asarray(res.info["zeta"]).reshape(-1)[0])
            out[case.name] = f"{scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())['NRMSE']:.5f} (ζ {used:g})"
        print(model, zeta, out, flush=True)
