"""An asymmetric echo's unmeasured readout samples: zeros taken as data, or unknowns (``readout=``)?

A synthetic FLAIR subject (training.synth.generate_subject seed 7; 128², 8 coils, one slice), nominal R 4 + 24 ACS,
the first 20 % of every readout never measured (zero, as the assembly pads an asymmetric echo). Each method of the
Reconstructor with its defaults, once with the padded zeros as data (no readout mask, what every path did before)
and once with the readout mask; NRMSE of the magnitude against the RSS of the fully sampled coil images; the
whole-echo row for comparison. First, what the margin of gadgets.assembly.ASYMMETRIC_ECHO_MARGIN is for: the
relative error of the recon-grid samples next to the cut when the 2x-oversampled echo is zero-padded before the
oversampling removal.

    OMP_NUM_THREADS=1 python eval.py > eval.log

Then the same on the real 16-coil slice of bench_real.py (when ../shared/data holds it), with the foundation model
that the product gives the headerless slice.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.masks import equispaced_mask  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from training.synth import generate_subject  # noqa: E402

ECHO = 0.8
FLAIR = REPO / "dpm_core" / "models" / "flair_default.json"      # the product's model for a FLAIR header
FOUNDATION = REPO / "dpm_core" / "models" / "foundation_default.json"   # ... and for the headerless real slice
METHODS = (("sense", {}), ("l1_wavelet", {}), ("dpm", {}), ("dpm", {"sampler": "pnp"}))


def margin_error() -> None:
    """Per recon sample near the cut: |removal(padded echo) - removal(whole line)| / |removal(whole line)|, summed
    over coils and lines, for the oversampled k-space of the same subject with the first 20 % of 2W samples cut."""
    from gadgets.assembly import remove_readout_oversampling_line
    k = generate_subject(7, "AXFLAIR", 128, 8, 1, lesion=True).kspace.numpy()[0]    # [C, H, 2W] oversampled
    C, H, W2 = k.shape
    cut = int(0.2 * W2)
    padded = k.copy()
    padded[..., :cut] = 0
    whole = np.stack([remove_readout_oversampling_line(k[:, y], W2 // 2) for y in range(H)], 1)
    part = np.stack([remove_readout_oversampling_line(padded[:, y], W2 // 2) for y in range(H)], 1)
    error = np.abs(part - whole).sum(axis=(0, 1)) / np.abs(whole).sum(axis=(0, 1))
    edge = cut / 2
    print("recon samples from the cut (oversampled echo, 20 % of 2W cut): " + ", ".join(
        f"{j - edge:+.1f}: {error[j]:.3f}" for j in range(int(edge) - 1, int(edge) + 8)))


def main() -> None:
    torch.set_num_threads(1)
    margin_error()
    run("synthetic FLAIR subject 7, 128x128, 8 coils", generate_subject(7, "AXFLAIR", 128, 8, 1, lesion=True)
        .recon_kspace(), FLAIR)                                                    # [1, 8, 128, 128]
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_real
    if bench_real.REAL_SLICE.exists():          # the real 16-coil slice, with the model the product gives it
        run("the real 16-coil slice (bench_real.py), 96x96", bench_real.normalized(bench_real.load_real_slice()),
            FOUNDATION)


def bart_yardstick(whole: torch.Tensor, echo: torch.Tensor, ref: np.ndarray) -> None:
    """BART ecalib (2 maps) + pics, plain SENSE and l1-wavelet over bench_real.py's λ grid: pics takes its sampling
    pattern from the zeros of the k-space, so it never takes an echo's padding as data."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_real
    for label, data in (("whole echo", whole), ("echo", echo)):
        results, _ = bench_real.bart_methods(data.numpy(), 2, bench_real.LAMBDA_GRID, bench_real.ITERATIONS)
        scores = {lam: float(np.linalg.norm(images - ref) / np.linalg.norm(ref)) for lam, (images, _) in results.items()}
        best = min((lam for lam in scores if lam > 0), key=scores.get)
        print(f"BART       {label:13s} SENSE {scores[0.0]:.4f}, best PICS {scores[best]:.4f} (λ {best:g})", flush=True)


def run(name: str, k: torch.Tensor, model: Path) -> None:
    H, W = k.shape[2], k.shape[3]
    ref = rss(ifft2c(k)).numpy()
    mask = equispaced_mask(H, 4, 24)
    lines = torch.from_numpy(mask).view(1, 1, H, 1)
    readout = np.zeros(W, bool)
    readout[W - int(ECHO * W):] = True
    whole, echo = k * lines, k * lines * torch.from_numpy(readout).view(1, 1, 1, W)
    print(f"{name}, nominal R 4 + 24 ACS, echo {ECHO:.0%} ({int(readout.sum())} of {W} readout samples)")
    bart_yardstick(whole, echo, ref)
    for method, options in METHODS:
        shown = options.get("sampler", method)
        rec = Reconstructor(method=method, device="cpu", progress=None, model=str(model), **options)
        for label, data, ro in (("whole echo", whole, None), ("zeros as data", echo, None),
                                ("readout mask", echo, readout)):
            t0 = time.perf_counter()
            res = rec.reconstruct(data, mask, readout=ro)
            nrmse = float(np.linalg.norm(np.abs(res.images) - ref) / np.linalg.norm(ref))
            print(f"{shown:10s} {label:13s} NRMSE {nrmse:.4f}  ({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
