"""pnp with the denoiser changed (applied at a finer pixel grid; averaged over flips), on cases of bench_real.py.

    OMP_NUM_THREADS=1 python docs/experiments/pnp_denoiser/eval_denoiser.py CASE[,CASE...] [VARIANT ...] > LOG
    python docs/experiments/pnp_denoiser/eval_denoiser.py --summarize LOG [LOG ...] > summary.md

MODEL=<card.json> runs another model than the shipped default (flair_default). VARIANT: "plain" (the shipped
denoiser), "grid:F" or "grid:F:noise" (below), "flips" (the mean of D over the four axis flips, g⁻¹ D(g x, σ): a
self-ensemble). Default: plain grid:1.25 grid:1.5 grid:1.25:noise.

Finer grid: the shipped priors were trained on 128² images over 240 mm
The shipped priors were trained on 128² images over 240 mm; on the real 96² slice the head spans about 85 pixels,
on the synthetic training heads about 100-115. This test interpolates the denoiser's input by zero-padding its
k-space to round(factor · H) x round(factor · W) (intensity kept: the image is scaled by the square root of the
pixel-count ratio, which keeps the noise variance per pixel), denoises there at the same σ, and crops the result's
k-space back: D_f(x, σ) = crop(D(pad(x), σ)). With fill="noise" the padded band is filled with white noise of the
measured band's spectral density and σ scaled to match (white noise at the finer grid, as in training).
Everything else is the production path (case_inputs: maps with num_maps auto, calibration-matrix noise level, SENSE
start, the scan's L1 phase reference). One JSON line per (case, variant): NRMSE per ζ of ZETAS.
"""
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "experiments" / "pnp_zeta"))
from bench_real import scores  # noqa: E402
from case_inputs import case_inputs, pnp_experiment  # noqa: E402

from dpm_core.fft import fft2c, ifft2c  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.samplers import get_sampler, posterior_samples  # noqa: E402
from dpm_core.samplers.pnp import PNP_LEVELS, PNP_SIGMA_END, PNP_SIGMA_START  # noqa: E402
from dpm_core.schedules import geometric_sigmas  # noqa: E402

DEFAULT_VARIANTS = ("plain", "grid:1.25", "grid:1.5", "grid:1.25:noise")
FLIPS = ((), (-2,), (-1,), (-2, -1))
ZETAS = tuple(2.0 ** k for k in range(-6, 1))       # 1/64 ... 1: the real slice's optimum lies at 1/16 - 1/4
SEED = 0


def centre_slices(small: int, large: int) -> slice:
    """The rows of a centred (k-space centre at n // 2) length-``large`` axis that hold a length-``small`` one."""
    start = large // 2 - small // 2
    return slice(start, start + small)


def finer_grid_denoiser(denoiser, factor: float, fill: str):
    """D_f(x [B, H, W] complex, σ [B]) = crop_k(D(pad_k(x), σ')) as described in the module docstring."""
    generator = torch.Generator().manual_seed(SEED)

    def wrapped(x, sigma):
        B, H, W = x.shape
        H2, W2 = round(factor * H), round(factor * W)
        gain = math.sqrt(H2 * W2 / (H * W))
        rows, cols = centre_slices(H, H2), centre_slices(W, W2)
        k = torch.zeros(B, H2, W2, dtype=x.dtype)
        sigma2 = sigma
        if fill == "noise":
            # the measured band's noise is σ · gain per k-sample at the finer grid's unit intensity; make it white
            sigma2 = sigma * gain
            k = (torch.randn(B, H2, W2, generator=generator) + 1j * torch.randn(B, H2, W2, generator=generator)) \
                .to(x.dtype) * (sigma2.view(B, 1, 1) / gain)
        k[:, rows, cols] = fft2c(x)
        z = denoiser(ifft2c(k) * gain, sigma2)
        return ifft2c(fft2c(z / gain)[:, rows, cols])
    return wrapped


def flip_ensemble(denoiser):
    """D_G(x, σ) = mean over the four axis flips g of g⁻¹ D(g x, σ) (flips are their own inverses)."""
    def wrapped(x, sigma):
        return sum(torch.flip(denoiser(torch.flip(x, g), sigma), g) if g else denoiser(x, sigma)
                   for g in FLIPS) / len(FLIPS)
    return wrapped


def variant_denoiser(denoiser, variant: str):
    if variant == "plain":
        return denoiser
    if variant == "flips":
        return flip_ensemble(denoiser)
    kind, factor, *fill = variant.split(":")
    if kind != "grid" or fill not in ([], ["noise"]):
        raise SystemExit(f"unknown variant {variant!r}: plain, flips, grid:F or grid:F:noise")
    return finer_grid_denoiser(denoiser, float(factor), fill[0] if fill else "zero")


def main():
    variants = sys.argv[2:] or DEFAULT_VARIANTS
    model = os.environ.get("MODEL")
    cases, rec = pnp_experiment(sys.argv[1], model)
    spec = get_sampler("pnp")
    for case in cases:
        S = case.kspace.shape[0]
        ids = list(range(S))
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)
        full = rec._run_inputs(kn, sampling, maps, phase_reference=True)
        options = {"sigmas": geometric_sigmas(PNP_SIGMA_START, PNP_SIGMA_END, PNP_LEVELS), "noise_std": noise_std}
        for variant in variants:
            t0 = time.perf_counter()
            denoiser = variant_denoiser(rec.denoiser(), variant)
            nrmse = []
            for zeta in ZETAS:
                x, _, _ = posterior_samples(spec, denoiser, kn, SenseOp(maps, sampling), num_samples=1, seed=SEED,
                                            slice_ids=ids, **options, **full, zeta=zeta)
                image = (combine_map_images(x * support) * scale.view(S, 1, 1)).abs().numpy()
                nrmse.append(round(scores(image, ref)["NRMSE"], 6))
            print(json.dumps({"case": case.name, "variant": variant, "model": Path(model).stem if model else None,
                              "zetas": list(ZETAS), "nrmse": nrmse, "best": min(nrmse), "maps": int(maps.shape[1]),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def variant_of(row: dict) -> str:
    """The row's variant; the grid runs' logs (the script's first version) name it by factor and fill."""
    if "variant" in row:
        return row["variant"]
    if row["factor"] == 1.0:
        return "plain"
    return f"grid:{row['factor']:g}" + (":noise" if row["fill"] == "noise" else "")


def summarize(paths) -> None:
    rows = [json.loads(line) for path in paths for line in open(path)]
    plain = {r["case"]: r["best"] for r in rows if variant_of(r) == "plain"}
    print("| case | variant | oracle ζ | NRMSE at it | / plain | s per case (7 ζ) |\n|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["case"], variant_of(r) != "plain", variant_of(r))):
        i = r["nrmse"].index(r["best"])
        ratio = f"{r['best'] / plain[r['case']]:.3f}" if r["case"] in plain else "–"
        print(f"| {r['case']} | {variant_of(r)} | {r['zetas'][i]:g} | {r['best']:.5f} | {ratio} | {r['seconds']} |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2:])
    else:
        main()
