"""Folded phase FOVs and coil-map accuracy on the real 16-coil slice: the figures docs/coils.md cites.

    python benchmarks/bench_folding.py

The real fully sampled 96x96 dev slice (../shared/data/brain_16coil_96, never copied here; the head spans 80 of the 96
phase-encode rows) is given a smaller phase FOV of L rows by periodic summation of its coil images (what a scan with
that FOV measures). For each L and nominal R (equispaced + 24 ACS): the signal-weighted second-map energy of the
two-map estimate, the same energy from the coarse-grid eigenvalues that ``num_maps="auto"`` thresholds
(``coils.choose_num_maps``), the map count it chooses, and SENSE-CG NRMSE with 1 and with 2 map sets (reference:
RSS of the folded fully sampled coil images). A second table: SENSE at nominal R = 4 and 6 (L = 96) with the fast
ESPIRiT's interpolated 2-map sets (64-point grid, no refinement) against the refined, exact ones, with the Reconstructor's
SENSE settings and with BART's plain CG (no regularization, 30 iterations).
Writes benchmarks/results/folding.{json,md}.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_real import REAL_SLICE, fold_phase_fov, load_real_slice, normalized  # noqa: E402
from common import write_results  # noqa: E402

from dpm_core import baselines, coils, metrics  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.masks import equispaced_mask  # noqa: E402
from dpm_core.operators import combine_map_images  # noqa: E402

PHASE_FOV_LINES = (96, 88, 80, 72, 64, 48)
ACCELERATIONS = (2, 4)


def sense_nrmse(under, mask, maps, ref, iters: int = 100, l2_weight: float = 1e-3, tol: float = 1e-4) -> float:
    """SENSE-CG NRMSE; the defaults are the Reconstructor's settings (Tikhonov 1e-3, CG to tol 1e-4, <= 100 it)."""
    return metrics.nrmse(combine_map_images(baselines.sense_cg(under, mask, maps, iters, l2_weight, tol=tol)), ref)


def main() -> None:
    if not REAL_SLICE.exists():
        print(f"the real dev slice is not at {REAL_SLICE}; nothing to measure")
        return
    torch.set_num_threads(1)
    raw = load_real_slice()
    rows = []
    for lines in PHASE_FOV_LINES:
        k = normalized(fold_phase_fov(raw, lines))
        ref = rss(ifft2c(k))
        for R in ACCELERATIONS:
            mask = equispaced_mask(lines, R, num_acs=24)
            under = k * torch.from_numpy(mask).view(1, 1, lines, 1)
            maps2 = coils.estimate_coil_maps(under, mask, num_maps=2)
            chosen, coarse_energy = coils.choose_num_maps(under, mask)
            rows.append({"table": "phase FOV", "phase FOV (rows of 96)": lines, "R nominal": R,
                         "folded": "yes" if lines <= 80 else "no",
                         "second-map energy": float(coils.second_map_energy(maps2, under, mask)[0]),
                         "coarse-grid energy (auto)": float(coarse_energy[0]), "auto maps": chosen,
                         "SENSE 1 map": sense_nrmse(under, mask, maps2[:, :1], ref),
                         "SENSE 2 maps": sense_nrmse(under, mask, maps2, ref)})
    k = normalized(raw)
    ref = rss(ifft2c(k))
    for R in (4, 6):
        mask = equispaced_mask(96, R, num_acs=24)
        under = k * torch.from_numpy(mask).view(1, 1, 96, 1)
        # Two map sets, as num_maps="auto" estimates them (and keeps them on folded scans): interpolating a
        # two-dimensional eigenvector subspace between grid points is where the interpolation goes wrong.
        exact = coils.espirit_fast(under, mask, num_maps=2)
        interpolated = coils.espirit_fast(under, mask, num_maps=2, grid_size=64, refine=False)
        for label, settings in (("Reconstructor (Tikhonov 1e-3, to tol 1e-4)", {}),
                                ("plain CG (λ 0, 30 it, as BART pics)", {"iters": 30, "l2_weight": 0.0, "tol": 0.0})):
            rows.append({"table": "map accuracy", "phase FOV (rows of 96)": 96, "R nominal": R, "SENSE": label,
                         "SENSE interpolated maps (64-grid)": sense_nrmse(under, mask, interpolated, ref, **settings),
                         "SENSE exact maps": sense_nrmse(under, mask, exact, ref, **settings)})
    write_results("folding", rows, ["table", "phase FOV (rows of 96)", "R nominal", "folded", "second-map energy",
                                    "coarse-grid energy (auto)",
                                    "auto maps", "SENSE 1 map", "SENSE 2 maps", "SENSE", "SENSE interpolated maps (64-grid)",
                                    "SENSE exact maps"],
                  "Folded phase FOVs and map accuracy on the real 16-coil slice",
                  "The head spans 80 of 96 rows, so L <= 80 folds. NRMSE vs the RSS of the (folded) fully sampled coil "
                  "images; SENSE-CG with Tikhonov 1e-3 to tol 1e-4 (the Reconstructor's settings).")


if __name__ == "__main__":
    main()
