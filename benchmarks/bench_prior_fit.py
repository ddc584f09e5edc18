"""How well do the shipped priors fit a scan? Their denoisers on fully sampled real and synthetic images, beside
wavelet shrinkage.

    OMP_NUM_THREADS=1 python benchmarks/bench_prior_fit.py

A diffusion prior is its denoiser D(x, σ). For a clean image x and complex Gaussian noise n of std σ per real
channel (E|n|² = 2σ², the samplers' and the training's convention, ``dpm_core.seeding.randn_complex``) the denoising
ratio

    ρ(σ) = ‖D(x + n, σ) − x‖² / ‖n‖²            (over the coil maps' support)

is below 1 where the prior knows something about the image, 1 where it knows nothing and above 1 where it damages
it. ρ is reported in complex (what the sampler's data consistency sees) and in magnitude (‖|D| − |x|‖² / ‖|x + n| −
|x|‖², what NRMSE scores), for both shipped models, on:
- the real 16-coil 96x96 dev slice (``../shared/data``, skipped when absent) and the held-out synthetic FLAIR
  subjects of bench_real.py (corpus seed 2000, 128x128, 8 coils, 2 slices each), each fully sampled and combined with
  1-map ESPIRiT maps from its 24 ACS lines as the training targets are (MVUE / normalization scale);
- the same images with their phase removed (|x|), which separates what the prior knows about anatomy from what it
  knows about image phase.
The classical comparator is translation-invariant wavelet shrinkage with the L1-wavelet baseline's transform
(Daubechies-2, soft threshold c·σ on the complex coefficients, averaged over all 16 circular shifts of 0..3 pixels)
at the best c of :data:`SHRINK_FACTORS` for each row: an oracle threshold, the classical side's best case.

Writes benchmarks/results/prior_fit.{json,md}.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_real import REAL_SLICE, code_state, load_real_slice, normalized, oblique_held_out_subjects  # noqa: E402
from common import write_results  # noqa: E402

from dpm_core.baselines import soft_threshold  # noqa: E402
from dpm_core.checkpoints import load_checkpoint  # noqa: E402
from dpm_core.coils import espirit_fast  # noqa: E402
from dpm_core.combine import mvue  # noqa: E402
from dpm_core.networks import ComplexDenoiser  # noqa: E402
from dpm_core.seeding import randn_complex  # noqa: E402
from dpm_core.wavelets import Wavelet2D  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[1] / "dpm_core" / "models"
MODELS = ("flair_default", "foundation_default")
SIGMAS = (0.005, 0.01, 0.02, 0.04, 0.08)   # noise std per real channel, in the units the priors were trained in
SHRINK_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
WAVELET = "db2"                            # the L1-wavelet baseline's (and BART's) transform
NUM_ACS = 24
NOISE_SEED = 0
SYNTH_SUBJECTS, SYNTH_SLICES = 3, 2


def images() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, combined image [S, H, W] complex64, support [S, H, W] bool) of each fully sampled test image."""
    from training.synth import generate_subject
    kspaces = []
    if REAL_SLICE.exists():
        kspaces.append(("real dev slice", normalized(load_real_slice())))
    else:
        print(f"{REAL_SLICE} is absent: the real slice is skipped", flush=True)
    for index, seed, _ in oblique_held_out_subjects(SYNTH_SUBJECTS):
        subject = generate_subject(seed, "AXFLAIR", 128, 8, SYNTH_SLICES, lesion=True)
        kspaces.append((f"synthetic FLAIR subject {index}", normalized(subject.recon_kspace())))
    out = []
    for name, k in kspaces:
        maps = espirit_fast(k, num_acs=NUM_ACS)                             # [S, 1, C, H, W]
        out.append((name, mvue(k, maps), maps[:, 0].abs().sum(1) > 0))
    return out


def noise_like(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(NOISE_SEED)
    return sigma * randn_complex(x.shape, g)


def ratios(estimate: torch.Tensor, x: torch.Tensor, noisy: torch.Tensor, support: torch.Tensor) -> tuple[float, float]:
    """(complex ρ, magnitude ρ) of one estimate, over the support."""
    def energy(t):
        return float((t.abs() ** 2 * support).sum())
    return (energy(estimate - x) / energy(noisy - x),
            energy(estimate.abs() - x.abs()) / energy(noisy.abs() - x.abs()))


def wavelet_shrinkage(noisy: torch.Tensor, threshold: float) -> torch.Tensor:
    """Translation-invariant soft-threshold wavelet denoising of [S, H, W] complex (16 circular shifts averaged)."""
    psi = Wavelet2D(tuple(noisy.shape[-2:]), WAVELET)
    shifts = [(a, b) for a in range(4) for b in range(4)]
    return sum(psi.adjoint(soft_threshold(psi.forward(noisy, s), threshold), s) for s in shifts) / len(shifts)


def main():
    torch.set_num_threads(1)
    state = code_state()
    t0 = time.perf_counter()
    denoisers = {m: ComplexDenoiser(load_checkpoint(MODELS_DIR / f"{m}.json", device="cpu")[0]).eval() for m in MODELS}
    rows = []
    for name, x_complex, support in images():
        for phase, x in (("kept", x_complex), ("removed (|x|)", x_complex.abs().to(torch.complex64))):
            for sigma in SIGMAS:
                noisy = (x + noise_like(x, sigma)) * support
                row = {"image": name, "phase": phase, "σ": sigma}
                with torch.no_grad():
                    for m, den in denoisers.items():
                        d = den(noisy, torch.full((x.shape[0],), sigma)) * support
                        row[f"{m} ρ complex"], row[f"{m} ρ magnitude"] = ratios(d, x, noisy, support)
                shrunk = {c: ratios(wavelet_shrinkage(noisy, c * sigma) * support, x, noisy, support)
                          for c in SHRINK_FACTORS}
                best = min(shrunk, key=lambda c: shrunk[c][0])
                row["wavelet ρ complex"], row["wavelet ρ magnitude"] = shrunk[best]
                row["wavelet c"] = best
                rows.append(row)
                print(row, flush=True)
    columns = ["image", "phase", "σ", *(f"{m} ρ {k}" for m in MODELS for k in ("complex", "magnitude")),
               "wavelet ρ complex", "wavelet ρ magnitude", "wavelet c"]
    notes = "\n".join([
        f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_prior_fit.py` ({time.perf_counter() - t0:.0f} s; "
        f"{state}).",
        "",
        "ρ = ‖D(x + n, σ) − x‖² / ‖n‖² over the coil maps' support (below 1: the prior helps; above 1: it damages "
        "the image); 'magnitude' compares |D| with |x| against |x + n|. x: the fully sampled image combined with "
        f"1-map ESPIRiT maps from {NUM_ACS} ACS lines, divided by its normalization scale (the training targets' "
        "definition); n: complex Gaussian, std σ per real channel, seed "
        f"{NOISE_SEED}. Wavelet: {WAVELET}, soft threshold c·σ, 16 shifts averaged, c the best of "
        f"{list(SHRINK_FACTORS)} per row by complex ρ (an oracle). Synthetic: the held-out oblique subjects of "
        f"bench_real.py, {SYNTH_SLICES} slices each.",
    ])
    write_results("prior_fit", rows, columns, "Prior fit: the shipped denoisers on real and synthetic images",
                  notes, extra={"code": state, "sigmas": list(SIGMAS), "shrink_factors": list(SHRINK_FACTORS)})


if __name__ == "__main__":
    main()
