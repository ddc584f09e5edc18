"""The shipped FLAIR model against the shipped foundation model (what ``model=auto`` gives a scan whose header names
no contrast, as the real dev slice would get through dpm-replay), with DDS ("fast") and pnp, on cases of
bench_real.py; everything else as shipped (num_maps auto, each sampler's ζ rule).

    OMP_NUM_THREADS=1 python docs/experiments/pnp_denoiser/eval_models.py CASE[,CASE...] > LOG

One JSON line per (case, model, sampler): ζ, its rule, NRMSE (bench_real.py's scoring) and seconds.
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

MODELS = ("flair_default", "foundation_default")
SAMPLERS = ("fast", "pnp")


def main():
    torch.set_num_threads(1)
    wanted = sys.argv[1].split(",")
    cases = real_cases(lambda n: n in wanted) + synthetic_cases(lambda n: n in wanted, 3, 2)[0]
    recs = {(model, sampler): Reconstructor(method="dpm", num_maps="auto", sampler=sampler, progress=None,
                                            model=ROOT / "dpm_core" / "models" / f"{model}.json")
            for model in MODELS for sampler in SAMPLERS}
    for case in cases:
        S, C, H, W = case.kspace.shape
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        ref = rss(ifft2c(case.kspace)).numpy()
        for (model, sampler), rec in recs.items():
            t0 = time.perf_counter()
            result = rec.reconstruct(under, case.mask)
            print(json.dumps({"case": case.name, "model": model, "sampler": sampler,
                              "zeta": str(result.info.get("zeta")), "rule": result.info.get("zeta_rule"),
                              "nrmse": round(scores(np.abs(result.images), ref)["NRMSE"], 5),
                              "s": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
