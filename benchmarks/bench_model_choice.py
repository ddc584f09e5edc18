"""Which prior for which contrast: every shipped model on held-out synthetic T1, T2, PD and FLAIR scans.

    OMP_NUM_THREADS=1 python benchmarks/bench_model_choice.py [--subjects 2] [--slices 2] [--R 4]

Held-out subjects come from corpus seed 1000 (as benchmarks/eval_default_model.py; the models saw seeds 1-3),
128x128, 8 coils, the central slices of an 8-slice volume, equispaced + 24 ACS. Each model runs through the
Reconstructor with the model forced (``model=`` its card) and default settings otherwise (DDS 50 steps, ζ from that
model's card); the row marked "auto" is the model `dpm_core.model_choice` picks for the contrast from the synthetic
header. Reference: the fully sampled k-space combined (SENSE = MVUE) with the same maps. Writes
benchmarks/results/model_choice.{json,md}: NRMSE / SSIM mean ± standard error over slices.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402
from eval_default_model import HELD_OUT_CORPUS_SEED  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.coils import remove_readout_oversampling  # noqa: E402
from dpm_core.masks import effective_acceleration, equispaced_mask  # noqa: E402
from dpm_core.model_choice import choose_model, model_entries  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from gadgets.assembly import scan_contrast  # noqa: E402
from training.synth import generate_subject, subject_seed  # noqa: E402

CONTRASTS = ("AXT1", "AXT2", "AXPD", "AXFLAIR")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--R", type=float, default=4.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    entries = [e for e in model_entries() if not e.site]
    models = {e.name: Reconstructor(model=str(e.card_path)) for e in entries}
    reference = Reconstructor(method="sense")
    rows = []
    for contrast in CONTRASTS:
        scores = {name: [] for name in models}
        chosen = None
        for i in range(args.subjects):
            subject = generate_subject(subject_seed(HELD_OUT_CORPUS_SEED, i, contrast), contrast, 128, 8, 8)
            if chosen is None:
                import ismrmrd
                header = ismrmrd.xsd.CreateFromDocument(subject.header_xml)
                chosen = choose_model(scan_contrast(header)[0], entries)[0].name
            k = remove_readout_oversampling(subject.kspace, 2)
            k = k[4 - args.slices // 2:4 - args.slices // 2 + args.slices]
            H = k.shape[2]
            mask = equispaced_mask(H, args.R, num_acs=24)
            under = k * torch.from_numpy(mask).view(1, 1, H, 1)
            for name, rec in models.items():
                res = rec.reconstruct(under, mask)
                ref = reference.reconstruct(k, np.ones(H, bool), maps=res.maps).images
                scores[name] += [(metrics.nrmse(res.images[s], ref[s]), metrics.ssim(res.images[s], ref[s]))
                                 for s in range(k.shape[0])]
            print(f"{contrast} subject {i} done", flush=True)
        for name, values in scores.items():
            v = np.asarray(values)
            se = v.std(axis=0, ddof=1) / np.sqrt(len(v))
            rows.append({"contrast": contrast, "model": name, "auto": "auto" if name == chosen else "",
                         "NRMSE": f"{v[:, 0].mean():.4f} ± {se[0]:.4f}", "SSIM": f"{v[:, 1].mean():.4f} ± {se[1]:.4f}",
                         "slices": len(v), "nrmse_mean": float(v[:, 0].mean()),
                         "R effective": round(effective_acceleration(mask), 2)})
    write_results("model_choice", rows, ["contrast", "model", "auto", "NRMSE", "SSIM", "slices", "R effective"],
                  "Shipped models on held-out synthetic contrasts",
                  f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_model_choice.py`. {args.subjects} held-out "
                  f"subjects (corpus seed {HELD_OUT_CORPUS_SEED}) x {args.slices} central slices per contrast, 128x128, "
                  f"8 coils, equispaced nominal R {args.R:g} + 24 ACS; each model forced, DDS 50 steps, ζ from its "
                  "card; 'auto' marks the model dpm_core.model_choice picks from the header. Mean ± standard error "
                  "over slices; reference: fully sampled MVUE with the same coil maps.")


if __name__ == "__main__":
    main()
