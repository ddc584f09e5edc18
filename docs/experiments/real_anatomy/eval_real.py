"""DPM NRMSE (default settings, seed 0) of each model on four real cases of bench_real.py and one held-out synthetic
FLAIR case, exactly as bench_real.py scores them.

    OMP_NUM_THREADS=1 python docs/experiments/real_anatomy/eval_real.py THREADS MODEL [MODEL ...]   (shipped = default)
"""
import sys

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

CASES = ("real_R4", "real_R6", "real_R4_random", "real_folded_R3", "synth0_R4")

torch.set_num_threads(int(sys.argv[1]))
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 1, 2)[0]
for model in sys.argv[2:]:
    rec = Reconstructor(method="dpm", num_maps="auto", model=None if model == "shipped" else model)
    nrmse = {}
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        res = rec.reconstruct(under, case.mask)
        nrmse[case.name] = round(scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
    print(model, nrmse, flush=True)
