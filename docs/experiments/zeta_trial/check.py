"""Adapted samplers' GCV: candidate runs by DDS (zeta_trial_sampler) against by the adapted sampler itself."""
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import bench_real as br  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers import registry  # noqa: E402

cases = br.real_cases(lambda n: n in ("real_R2", "real_folded_R2", "real_folded_R3"))

entry = br.product_model(cases[0])
print("model", entry)
for sampler in ("dds_ssl", "dds_lora"):
    new = registry.SAMPLERS[sampler]
    old = dataclasses.replace(new, zeta_trial_sampler=None)
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        out = {}
        for label, record in (("self", old), ("dds", new)):
            registry.SAMPLERS[sampler] = record
            rec = Reconstructor(method="dpm", model=str(entry.card_path), sampler=sampler, device="cpu", progress=None)
            t0 = time.perf_counter()
            res = rec.reconstruct(under, case.mask)
            out[label] = (res, time.perf_counter() - t0)
        registry.SAMPLERS[sampler] = new
        a, b = out["self"][0], out["dds"][0]
        print(f"{sampler} {case.name}: zeta self {a.info['zeta']} dds {b.info['zeta']}; "
              f"max|diff| {np.abs(a.images - b.images).max():.3g}; "
              f"s self {out['self'][1]:.1f} dds {out['dds'][1]:.1f}; rule {b.info['zeta_rule']!r}", flush=True)
