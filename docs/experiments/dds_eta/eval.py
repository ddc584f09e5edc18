"""DDS's stochasticity η on the bench_real.py cases: does a less stochastic step (η < 1) lower the default DPM's NRMSE?

The shipped fast sampler re-noises ancestrally (η = 1: a posterior sample); the mean of 4 such samples is 3-7 %
better than one on the real R 6 / R 4 random and the synthetic cases (benchmarks/results/real.md), so a deterministic
step (η = 0, DDIM) or DDS's published small η might lower NRMSE at no extra cost. Everything else is the product's
default path (Reconstructor(method="dpm"), the product's model for the case's contrast, warm start, num_maps auto,
the card's ζ or GCV), scored as bench_real.py scores it.

    OMP_NUM_THREADS=1 python eval.py CASES ETAS [SEEDS]      # e.g. real_R4,real_R6 1,0.5,0.15,0 0,1
"""
import sys
import time
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


def main(names: list[str], etas: list[float], seeds: list[int]) -> None:
    wanted = (lambda n: n in names)
    cases = br.real_cases(wanted) + br.synthetic_cases(wanted, 3, 2)[0]
    for case in cases:
        model = str(br.product_model(case).card_path)
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        ref = rss(ifft2c(case.kspace)).numpy()
        for eta in etas:
            for seed in seeds:
                t0 = time.perf_counter()
                res = Reconstructor(method="dpm", model=model, sampler_options={"eta": eta}, seed=seed, device="cpu",
                                    progress=None).reconstruct(under, case.mask)
                nrmse = br.scores(np.abs(res.images), ref)["NRMSE"]
                print(f"{case.name} eta {eta:g} seed {seed}: NRMSE {nrmse:.5f}, zeta {res.info.get('zeta')} "
                      f"({res.info.get('zeta_rule')}), {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1].split(","), [float(e) for e in sys.argv[2].split(",")],
         [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "0").split(",")])
