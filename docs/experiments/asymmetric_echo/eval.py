"""An asymmetric echo's unmeasured readout samples: zeros taken as data, or unknowns (``readout=``)?

A synthetic FLAIR subject (training.synth.generate_subject seed 7; 128², 8 coils, one slice), nominal R 4 + 24 ACS,
the first 20 % of every readout never measured (zero, as the assembly pads an asymmetric echo). Each method of the
Reconstructor with its defaults, once with the padded zeros as data (no readout mask, what every path did before)
and once with the readout mask; NRMSE of the magnitude against the RSS of the fully sampled coil images; the
whole-echo row for comparison. First, what the margin of gadgets.assembly.ASYMMETRIC_ECHO_MARGIN is for: the
relative error of the recon-grid samples next to the cut when the 2x-oversampled echo is zero-padded before the
oversampling removal.

    OMP_NUM_THREADS=1 python eval.py > eval.log
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
    k = generate_subject(7, "AXFLAIR", 128, 8, 1, lesion=True).recon_kspace()      # [1, 8, 128, 128]
    H, W = k.shape[2], k.shape[3]
    ref = rss(ifft2c(k)).numpy()
    mask = equispaced_mask(H, 4, 24)
    lines = torch.from_numpy(mask).view(1, 1, H, 1)
    readout = np.zeros(W, bool)
    readout[W - int(ECHO * W):] = True
    whole, echo = k * lines, k * lines * torch.from_numpy(readout).view(1, 1, 1, W)
    print(f"synthetic FLAIR subject 7, 128x128, 8 coils, nominal R 4 + 24 ACS, echo {ECHO:.0%} "
          f"({int(readout.sum())} of {W} readout samples)")
    for method, options in METHODS:
        name = options.get("sampler", method)
        rec = Reconstructor(method=method, device="cpu", progress=None, model=str(FLAIR), **options)
        for label, data, ro in (("whole echo", whole, None), ("zeros as data", echo, None),
                                ("readout mask", echo, readout)):
            t0 = time.perf_counter()
            res = rec.reconstruct(data, mask, readout=ro)
            nrmse = float(np.linalg.norm(np.abs(res.images) - ref) / np.linalg.norm(ref))
            print(f"{name:10s} {label:13s} NRMSE {nrmse:.4f}  ({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
