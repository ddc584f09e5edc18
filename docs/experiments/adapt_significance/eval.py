"""Does a significance margin on the adapter's held-out check stop dds_lora from fitting noise?

    OMP_NUM_THREADS=1 python docs/experiments/adapt_significance/eval.py CASE[,CASE...] Z[,Z...] > LOG
    python docs/experiments/adapt_significance/eval.py --summarize LOG [LOG ...] > summary.md

For each bench_real.py case (real ones, and the synthetic ones as bench_real builds them: 3 subjects of 2 slices),
the product's adapted DPM (Reconstructor(method="dpm", num_maps="auto", sampler="dds_lora"), the model
bench_real.product_model picks, seed 0) with sampler_options {"adapt_significance": z} for each z, NRMSE as
bench_real.py scores it. z = 0 is the shipped check (a step is kept on any fall of the held-out error) and must
reproduce real.json's adapted row. --summarize sets each z beside real.json's unadapted DPM, its seed sd and the
adapted row.
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
from bench_real import product_model, real_cases, synthetic_cases  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402


def main(names: str, significances: str) -> None:
    torch.set_num_threads(1)
    wanted = names.split(",")
    cases = real_cases(lambda n: n in wanted) + synthetic_cases(lambda n: n in wanted, 3, 2)[0]
    for case in cases:
        ref = rss(ifft2c(case.kspace)).numpy()
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, -1, 1)
        for z in (float(v) for v in significances.split(",")):
            t0 = time.perf_counter()
            rec = Reconstructor(method="dpm", num_maps="auto", sampler="dds_lora", progress=None,
                                model=str(product_model(case).card_path), sampler_options={"adapt_significance": z})
            res = rec.reconstruct(under, case.mask)
            print(json.dumps({"case": case.name, "significance": z,
                              "NRMSE": metrics.nrmse(np.abs(res.images), ref), "zeta": res.info.get("zeta"),
                              "seconds_per_slice": round((time.perf_counter() - t0) / case.kspace.shape[0], 2)}),
                  flush=True)


def summarize(paths) -> None:
    real = json.load(open(ROOT / "benchmarks/results/real.json"))
    shipped = {(r["case"], r["method"]): r["NRMSE"] for r in real["rows"]}
    spread = {s["case"]: s["dpm_seed_sd"] for s in real["summary"]}
    rows = [json.loads(line) for path in paths for line in open(path)]
    zs = sorted({r["significance"] for r in rows})
    print("| case | DPM (unadapted, real.json) | seed sd | adapted (real.json) | "
          + " | ".join(f"adapted, margin {z:g} sd" for z in zs) + " |")
    print("|---" * (4 + len(zs)) + "|")
    for case in dict.fromkeys(r["case"] for r in rows):
        plain = shipped[(case, "ours DPM")]
        cells = []
        for z in zs:
            v = [r["NRMSE"] for r in rows if r["case"] == case and r["significance"] == z]
            cells.append(f"{v[0]:.5f} ({v[0] - plain:+.5f})" if v else "–")
        print(f"| {case} | {plain:.5f} | {spread[case]:.5f} | {shipped[(case, 'ours DPM adapted (dds_lora)')]:.5f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2:])
    else:
        main(sys.argv[1], sys.argv[2])
