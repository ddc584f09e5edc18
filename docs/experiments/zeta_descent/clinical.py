"""pnp on bench_clinical.py's clinical slice in one process, its ζ rule scoring the whole grid and walking it.

    OMP_NUM_THREADS=1 python docs/experiments/zeta_descent/clinical.py > clinical.log

The same host, the same process, the pipeline's stages as bench_clinical.py's local run times them
(bench_clinical.local_stages with the gadget property sampler=pnp): first with dpm_core.zeta_rules.descend_grid
as shipped, then replaced by a scorer of every candidate (the rule before the walk).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
import bench_clinical  # noqa: E402

from dpm_core import zeta_rules  # noqa: E402


def whole_grid(score, size):
    """The rule before the walk: every candidate scored."""
    return torch.stack([score(j).float() for j in range(size)], dim=1)


def main():
    torch.set_num_threads(1)
    args = argparse.Namespace(slices=1, matrix=320, coils=16, device="cpu", sampler="pnp")
    walk = zeta_rules.descend_grid
    for name, rule in (("walk", walk), ("whole grid", whole_grid)):      # the warm-up favours the second
        zeta_rules.descend_grid = rule
        out = bench_clinical.local_stages(args)
        print(json.dumps({"rule": name, "reconstruct_s": round(out["reconstruct_s"], 1),
                          "sampling_s": out["timings"]["sampling"], "recorded": out["recorded"]}), flush=True)
    zeta_rules.descend_grid = walk


if __name__ == "__main__":
    main()
