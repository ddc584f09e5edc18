"""Error of SENSE, L1-wavelet, the shipped DPM and the all-levers model (zeta auto) on the real cases, split into measured and
unmeasured ky lines as benchmarks/bench_null_space.py does, with the maps of the shipped DPM run.

    OMP_NUM_THREADS=2 python docs/experiments/real_anatomy/error_split.py
"""
import sys
import numpy as np, torch
sys.path.insert(0, "benchmarks")
from bench_real import real_cases
from bench_null_space import error_split
from dpm_core.combine import mvue, rss
from dpm_core.fft import ifft2c
from dpm_core import metrics
from dpm_core.reconstruct import Reconstructor
torch.set_num_threads(2)
for case in real_cases(lambda n: n in ("real_R4", "real_R6", "real_R4_random")):
    S, C, H, W = case.kspace.shape
    under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
    ref = rss(ifft2c(case.kspace)).numpy()
    base = Reconstructor(method="dpm", device="cpu", progress=None, zeta="auto").reconstruct(under, case.mask)
    maps = torch.from_numpy(base.maps)
    x_ref = mvue(case.kspace, maps); support = maps[:, 0].abs().sum(1) > 0
    measured = torch.from_numpy(np.asarray(case.mask, bool))
    for label, kw in (("sense", dict(method="sense")), ("l1", dict(method="l1_wavelet")), ("shipped", dict(method="dpm", zeta="auto")),
                      ("all_levers", dict(method="dpm", zeta="auto", model="runs/pt_all/model.json"))):
        res = Reconstructor(device="cpu", progress=None, **kw).reconstruct(under, case.mask, maps=maps)
        sp = error_split(res.images, x_ref, support, measured)
        print(case.name, label, round(float(metrics.nrmse(np.abs(res.images), ref)), 5), {k: round(v, 5) for k, v in sp.items()}, flush=True)
