"""A DPM sampler of the product on bench_real.py's cases, beside real.json's unadapted DPM and dds_lora rows.

    OMP_NUM_THREADS=1 python docs/experiments/adapt_heldout/eval_sampler.py SAMPLER CASE[,CASE...] [OPTIONS_JSON] > LOG
    python docs/experiments/adapt_heldout/eval_sampler.py --summarize LOG [LOG ...] > sampler_summary.md

Reconstructor(method="dpm", num_maps="auto", sampler=SAMPLER, sampler_options=OPTIONS_JSON), the model
bench_real.product_model picks, seed 0, everything else the product's defaults; NRMSE as bench_real.py scores it.
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


def main(sampler: str, names: str, options: dict) -> None:
    torch.set_num_threads(1)
    wanted = names.split(",")
    for case in real_cases(lambda n: n in wanted) + synthetic_cases(lambda n: n in wanted, 3, 2)[0]:
        t0 = time.perf_counter()
        rec = Reconstructor(method="dpm", num_maps="auto", sampler=sampler, sampler_options=options, progress=None,
                            model=str(product_model(case).card_path))
        res = rec.reconstruct(case.kspace * torch.from_numpy(case.mask).view(1, 1, -1, 1), case.mask)
        print(json.dumps({"case": case.name, "sampler": sampler, "options": options,
                          "NRMSE": metrics.nrmse(np.abs(res.images), rss(ifft2c(case.kspace)).numpy()),
                          "zeta": res.info.get("zeta"), "forward": res.info.get("nfe_per_sample"),
                          "backward": res.info.get("backward_per_sample"),
                          "seconds_per_slice": round((time.perf_counter() - t0) / case.kspace.shape[0], 2)}),
              flush=True)


def summarize(paths) -> None:
    real = json.load(open(ROOT / "benchmarks/results/real.json"))
    shipped = {(r["case"], r["method"]): r for r in real["rows"]}
    summary = {s["case"]: s for s in real["summary"]}
    print("| case | sampler | DPM (real.json) | seed sd | dds_lora (real.json) | NRMSE | − DPM | / best BART PICS | "
          "forward / backward per slice | s/slice (DPM's) |")
    print("|---" * 10 + "|")
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            plain = shipped[(r["case"], "ours DPM")]
            pics = summary[r["case"]]["best BART PICS"]
            pics = float(pics.split()[0]) if isinstance(pics, str) else float(pics)
            print(f"| {r['case']} | {r['sampler']} | {plain['NRMSE']:.5f} | {summary[r['case']]['dpm_seed_sd']:.5f} | "
                  f"{shipped[(r['case'], 'ours DPM adapted (dds_lora)')]['NRMSE']:.5f} | {r['NRMSE']:.5f} | "
                  f"{r['NRMSE'] - plain['NRMSE']:+.5f} | {r['NRMSE'] / pics:.3f} | {r['forward']} / {r['backward']} | "
                  f"{r['seconds_per_slice']} ({plain['s/slice']:.3g}) |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2:])
    else:
        main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
