"""Test-time adaptation variants (sampler dds_lora) beside plain DDS on the real dev slice at one ζ.

    OMP_NUM_THREADS=1 python benchmarks/bench_adaptation.py [--cases real_R6] [--zeta 16]

The real 16-coil slice (benchmarks/bench_real.py's cases; skipped when ../shared/data is absent), its k-space divided
by the normalization scale of the undersampled data as the Reconstructor does, fast ESPIRiT maps (2 map sets for the
folded cases), the measured noise level, the model the product chooses for the slice (bench_real.product_model: the
foundation model for this headerless scan), 50 Karras levels, seed 0, one fixed ζ for every row so that only the
sampler differs. NRMSE of the magnitude (maps' support, map sets combined by RSS) against the RSS of the fully
sampled coil images in the same units. Writes benchmarks/results/adaptation.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_real  # noqa: E402
from common import write_results  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.coils import estimate_coil_maps  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.normalize import normalization_scale  # noqa: E402
from dpm_core.operators import SenseOp  # noqa: E402
from dpm_core.noise import estimate_noise_std  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers import default_sigmas, num_evaluations, posterior_samples  # noqa: E402

VARIANTS = (   # (label, sampler, options)
    ("DDS (plain, cg_iters 5)", "dds", {}),
    ("DDS, cg_iters 20", "dds", {"cg_iters": 20}),
    ("dds_lora defaults (rank 4, 1 step, lr 1e-3, 20 % held out)", "dds_lora", {}),
    ("dds_lora lr 1e-2, no held-out check", "dds_lora", {"adapt_lr": 1e-2, "adapt_holdout": 0.0}),
    ("dds_lora lr 1e-2", "dds_lora", {"adapt_lr": 1e-2}),
    ("dds_lora lr 1e-3, 3 steps", "dds_lora", {"adapt_steps": 3}),
    ("dds_lora lr 1e-2, only sigma <= 0.1", "dds_lora", {"adapt_lr": 1e-2, "adapt_sigma_max": 0.1}),
    ("dds_lora lr 1e-2, only sigma <= 0.03", "dds_lora", {"adapt_lr": 1e-2, "adapt_sigma_max": 0.03}),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["real_R6"])
    parser.add_argument("--zeta", type=float, default=16.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = bench_real.real_cases(lambda name: name in args.cases)
    if not cases:
        sys.exit(f"no case {args.cases} (or the real slice is absent)")
    rows = []
    for case in cases:
        model = bench_real.product_model(case)
        denoiser = Reconstructor(model=str(model.card_path)).denoiser()
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        scale = normalization_scale(under, case.mask)
        kn = under / scale.view(-1, 1, 1, 1)
        reference = rss(ifft2c(case.kspace)).numpy() / scale.numpy()[:, None, None]
        maps = estimate_coil_maps(kn, case.mask, num_maps=2 if case.folded else 1)
        op = SenseOp(maps, case.mask)
        support = maps.abs().sum(dim=2) > 0
        noise_std = estimate_noise_std(kn, case.mask)
        for label, sampler, options in VARIANTS:
            t0 = time.perf_counter()
            mean, _, _ = posterior_samples(sampler, denoiser, kn, op, zeta=args.zeta, noise_std=noise_std, seed=0,
                                           **options)
            seconds = time.perf_counter() - t0
            image = torch.sqrt(((mean * support).abs() ** 2).sum(dim=1)).numpy()
            sigmas = default_sigmas(sampler, denoiser)
            rows.append({"case": case.name, "model": model.name, "variant": label,
                         "NRMSE": metrics.nrmse(image, reference),
                         "forward": num_evaluations(sampler, sigmas, **options),
                         "backward": num_evaluations(sampler, sigmas, backward=True, **options),
                         "s/slice": seconds / kn.shape[0]})
            print(f"{case.name} {label}: NRMSE {rows[-1]['NRMSE']:.4f}, {seconds:.1f} s", flush=True)
    write_results("adaptation", rows, ["case", "model", "variant", "NRMSE", "forward", "backward", "s/slice"],
                  "Test-time adaptation variants beside plain DDS (real dev slice)",
                  f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_adaptation.py --cases "
                  f"{' '.join(args.cases)} --zeta {args.zeta:g}`. The model the product chooses for the slice "
                  f"(model=auto), 50 levels, seed 0, ζ = {args.zeta:g} for every row, measured noise level, fast "
                  "ESPIRiT maps; NRMSE against the RSS of "
                  "the fully sampled coil images; network passes per slice and map image (forward / backward, an "
                  "upper bound for the sigma-limited rows).")


if __name__ == "__main__":
    main()
