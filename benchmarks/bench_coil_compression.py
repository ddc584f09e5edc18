"""Coil compression to virtual coils before the reconstruction: what it costs in NRMSE and what it saves in time.

    OMP_NUM_THREADS=1 python benchmarks/bench_coil_compression.py

16-coil cases: the real 16-coil dev slice (96², nominal R 4 and 6, equispaced + 24 ACS; skipped when absent) and two
central slices of a held-out synthetic FLAIR subject simulated with 16 coils (128², nominal R 4). The undersampled,
normalized k-space is compressed per slice by SVD to V virtual coils (:func:`dpm_core.coils.coil_compress`, fitted on
the measured lines; its rows are orthonormal, so prewhitened noise stays white), then reconstructed with the
Reconstructor's defaults (coil maps from the compressed ACS block). Reference: the RSS of the uncompressed fully sampled
coil images, so every loss of compression counts. Rule (issue 14: "where it does not cost NRMSE"): the smallest V
whose DPM NRMSE is within 1 % of the uncompressed one on every case. Writes benchmarks/results/coil_compression.{json,md}.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_real import NUM_ACS, REAL_SLICE, load_real_slice, normalized  # noqa: E402
from common import write_results  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.coils import coil_compress, remove_readout_oversampling  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.masks import effective_acceleration, equispaced_mask  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from training.synth import generate_subject, subject_seed  # noqa: E402

VIRTUAL_COILS = (16, 12, 8, 6, 4)
TOLERANCE = 1.01
HELD_OUT_CORPUS_SEED = 1000


def cases():
    """[(name, fully sampled normalized k-space [S, 16, H, W], mask [H])]."""
    out = []
    if REAL_SLICE.exists():
        real = normalized(load_real_slice())
        out += [(f"real_R{R}", real, equispaced_mask(96, R, NUM_ACS)) for R in (4, 6)]
    else:
        print(f"SKIPPING the real slice: not at {REAL_SLICE}", flush=True)
    subject = generate_subject(subject_seed(HELD_OUT_CORPUS_SEED, 0, "AXFLAIR"), "AXFLAIR", 128, 16, 8, lesion=True)
    k = normalized(remove_readout_oversampling(subject.kspace, 2)[3:5])
    out.append(("synth16_R4", k, equispaced_mask(128, 4, NUM_ACS)))
    return out


def main() -> None:
    torch.set_num_threads(1)
    recs = {"DPM": Reconstructor(progress=None), "SENSE": Reconstructor(method="sense")}
    rows = []
    for name, full, mask in cases():
        H = full.shape[2]
        under = full * torch.from_numpy(mask).view(1, 1, H, 1)
        ref = rss(ifft2c(full)).numpy()
        recs["DPM"].reconstruct(under[:1], mask)                                     # warm-up
        for V in VIRTUAL_COILS:
            compressed = under if V == full.shape[1] else coil_compress(under, V, mask)[0]
            for method, rec in recs.items():
                t0 = time.perf_counter()
                res = rec.reconstruct(compressed, mask)
                seconds = (time.perf_counter() - t0) / full.shape[0]
                images = np.abs(res.images)
                rows.append({"case": name, "R eff": round(effective_acceleration(mask), 2), "virtual coils": V,
                             "method": method, "NRMSE": metrics.nrmse(images, ref), "SSIM": metrics.ssim(images, ref),
                             "s/slice": seconds})
            print(rows[-2], flush=True)
    full_coils = {(r["case"], r["method"]): r["NRMSE"] for r in rows if r["virtual coils"] == VIRTUAL_COILS[0]}
    for r in rows:
        r["NRMSE / uncompressed"] = r["NRMSE"] / full_coils[(r["case"], r["method"])]
    within = [V for V in VIRTUAL_COILS
              if all(r["NRMSE / uncompressed"] <= TOLERANCE for r in rows if r["virtual coils"] == V
                     and r["method"] == "DPM")]
    chosen = min(within)
    notes = ("One command: `OMP_NUM_THREADS=1 python benchmarks/bench_coil_compression.py`. SVD coil compression of "
             "the undersampled k-space to V virtual coils, then the Reconstructor's defaults; reference: RSS of the "
             "uncompressed fully sampled coil images; 1 torch thread. Rule: the smallest V whose DPM NRMSE is within "
             f"{TOLERANCE:g} × the uncompressed one on every case → V = {chosen} of 16.")
    write_results("coil_compression", rows, ["case", "R eff", "virtual coils", "method", "NRMSE",
                                             "NRMSE / uncompressed", "SSIM", "s/slice"],
                  "Coil compression before the reconstruction", notes, extra={"chosen_virtual_coils": chosen})


if __name__ == "__main__":
    main()
