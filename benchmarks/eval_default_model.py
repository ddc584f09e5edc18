"""Score the shipped model against the classical baselines on held-out synthetic FLAIR subjects.

    OMP_NUM_THREADS=1 python benchmarks/eval_default_model.py [--subjects 3] [--slices 2] [--steps N] [--R 2 4 6]

Held-out subjects come from corpus seed 1000 (the shipped model saw seeds 1-3), 128x128, 8 coils, central slices.
Every method runs through the Reconstructor exactly as the gadget does: coil maps from the undersampled ACS block
(fast ESPIRiT), the normalization rule, then the method. Reference: the fully sampled k-space combined (SENSE = MVUE)
with the same maps. Writes benchmarks/results/default_model.{json,md}: NRMSE, PSNR, SSIM mean ± standard error over
slices, and seconds per slice.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.coils import remove_readout_oversampling  # noqa: E402
from dpm_core.masks import effective_acceleration, equispaced_mask  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from training.synth import generate_subject, subject_seed  # noqa: E402

HELD_OUT_CORPUS_SEED = 1000


def central_slices(corpus_seed: int, contrast: str, subjects: int, slices: int, prefix: str, matrix: int = 128,
                   coils: int = 8):
    """[(name, k-space [slices, C, H, W])]: the central slices of an 8-slice volume of ``subjects`` synthetic
    subjects of one corpus seed and contrast (a lesion in FLAIR), readout oversampling removed."""
    out = []
    for i in range(subjects):
        subject = generate_subject(subject_seed(corpus_seed, i, contrast), contrast, matrix, coils, 8,
                                   lesion=contrast == "AXFLAIR")
        k = remove_readout_oversampling(subject.kspace, 2)
        start = 4 - slices // 2
        out.append((f"{prefix}{i}", k[start:start + slices]))
    return out


def held_out_volumes(subjects: int, slices: int, matrix: int = 128, coils: int = 8):
    """[(name, k-space [slices, C, H, W])] of held-out FLAIR subjects (central slices of an 8-slice volume)."""
    return central_slices(HELD_OUT_CORPUS_SEED, "AXFLAIR", subjects, slices, "heldout", matrix, coils)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="DDS schedule length (default: the Reconstructor's: the warm start's schedule)")
    parser.add_argument("--R", type=float, nargs="+", default=[2, 4, 6])
    parser.add_argument("--name", default="default_model")
    parser.add_argument("--device", default="auto", help="device of the DPM reconstruction (auto: CUDA when present)")
    args = parser.parse_args(argv)
    options = {} if args.steps is None else {"steps": args.steps}
    methods = {"zero_filled": Reconstructor(method="zero_filled"), "sense": Reconstructor(method="sense"),
               "l1_wavelet": Reconstructor(method="l1_wavelet"),
               "dpm (fast)": Reconstructor(method="dpm", sampler="fast", sampler_options=options, device=args.device)}
    reference = Reconstructor(method="sense")
    scores = {(R, m): [] for R in args.R for m in methods}
    seconds = {(R, m): 0.0 for R in args.R for m in methods}
    volumes = held_out_volumes(args.subjects, args.slices)
    eff, nfe = {}, None
    for R in args.R:
        for name, k in volumes:
            H = k.shape[2]
            mask = equispaced_mask(H, R, num_acs=24)
            eff[R] = effective_acceleration(mask)
            under = k * torch.from_numpy(mask).view(1, 1, H, 1)
            ref = None
            for method, rec in methods.items():
                t = time.perf_counter()
                res = rec.reconstruct(under, mask)
                seconds[(R, method)] += time.perf_counter() - t
                if method == "dpm (fast)":
                    nfe = res.info["nfe_per_sample"]
                if ref is None:
                    ref = reference.reconstruct(k, np.ones(H, bool), maps=res.maps).images
                for s in range(k.shape[0]):
                    scores[(R, method)].append((metrics.nrmse(res.images[s], ref[s]), metrics.psnr(res.images[s], ref[s]),
                                                metrics.ssim(res.images[s], ref[s])))
            print(f"R={R:g} {name} done", flush=True)
    rows = []
    for (R, method), values in scores.items():
        v = np.asarray(values)
        se = v.std(axis=0, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.zeros(3)
        rows.append({"R nominal": R, "R effective": round(eff[R], 2), "method": method,
                     "NRMSE": f"{v[:, 0].mean():.4f} ± {se[0]:.4f}", "PSNR": f"{v[:, 1].mean():.2f} ± {se[1]:.2f}",
                     "SSIM": f"{v[:, 2].mean():.4f} ± {se[2]:.4f}", "slices": len(v),
                     "s/slice": seconds[(R, method)] / len(v), "nrmse_mean": float(v[:, 0].mean())})
    dpm = methods["dpm (fast)"]
    setting = (f"warm-started from the SENSE image at σ {dpm.warm_start:g}" if dpm.warm_start is not None else
               "from pure noise") + f", {nfe} network evaluations per slice" + \
        ("" if args.steps is None else f" ({args.steps}-step schedule)")
    write_results(args.name, rows, ["R nominal", "R effective", "method", "NRMSE", "PSNR", "SSIM", "slices", "s/slice"],
                  "Shipped model vs baselines on held-out synthetic FLAIR",
                  f"{args.subjects} held-out subjects (corpus seed {HELD_OUT_CORPUS_SEED}) x {args.slices} central slices, "
                  f"128x128, 8 coils, equispaced + 24 ACS; DPM = dpm_core/models/flair_default with DDS {setting} "
                  f"on {methods['dpm (fast)'].device} "
                  "(mean ± standard error over slices). Reference: fully sampled MVUE with the same coil maps.")


if __name__ == "__main__":
    main()
