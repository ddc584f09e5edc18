"""Does averaging the denoiser over symmetries of the image (self-ensembling) lower its denoising ratio ρ?

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/rho_ensemble.py

ρ as benchmarks/bench_prior_fit.py (same images, noise and support); the denoiser D is replaced by
    D_G(x, σ) = mean_{g in G} g⁻¹ D(g x, σ)
for groups G of image transforms that map an image to another plausible image: flips (the training augments with
them), global phase rotation by multiples of 90°, complex conjugation, circular shifts by a few pixels (the U-Net's
two downsamplings make it shift-variant: cycle spinning, as translation-invariant wavelets do).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import itertools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_prior_fit import MODELS_DIR, images, noise_like, ratios  # noqa: E402

from dpm_core.checkpoints import load_checkpoint  # noqa: E402
from dpm_core.networks import ComplexDenoiser  # noqa: E402

SIGMAS = (0.005, 0.01, 0.02, 0.04)


def flip(x, f):
    dims = [d for d, on in zip((-2, -1), f) if on]
    return torch.flip(x, dims) if dims else x


# each transform: (forward, inverse) on [S, H, W] complex
def group(name):
    if name == "identity":
        return [(lambda x: x, lambda x: x)]
    if name == "flips":
        return [(lambda x, f=f: flip(x, f), lambda x, f=f: flip(x, f)) for f in itertools.product((0, 1), repeat=2)]
    if name == "phase90":
        return [(lambda x, k=k: x * (1j ** k), lambda x, k=k: x * (1j ** (-k))) for k in range(4)]
    if name == "conj":
        return [(lambda x: x, lambda x: x), (lambda x: x.conj().resolve_conj(), lambda x: x.conj().resolve_conj())]
    if name.startswith("shifts"):
        n = int(name[6:])
        offs = [(a, b) for a in range(n) for b in range(n)]
        return [(lambda x, o=o: torch.roll(x, o, (-2, -1)), lambda x, o=o: torch.roll(x, (-o[0], -o[1]), (-2, -1)))
                for o in offs]
    if "+" in name:
        parts = [group(p) for p in name.split("+")]
        out = []
        for combo in itertools.product(*parts):
            def fwd(x, c=combo):
                for f, _ in c:
                    x = f(x)
                return x

            def inv(x, c=combo):
                for _, i in reversed(c):
                    x = i(x)
                return x
            out.append((fwd, inv))
        return out
    raise ValueError(name)


GROUPS = ("identity", "flips", "phase90", "conj", "shifts2", "shifts4", "flips+phase90", "flips+shifts2",
          "flips+phase90+shifts2")


def main():
    torch.set_num_threads(1)
    den = ComplexDenoiser(load_checkpoint(MODELS_DIR / "flair_default.json", device="cpu")[0]).eval()
    for name, x, support in images()[:2]:
        for sigma in SIGMAS:
            noisy = (x + noise_like(x, sigma)) * support
            s = torch.full((x.shape[0],), sigma)
            line = [f"{name[:14]:14s} σ {sigma:<6}"]
            with torch.no_grad():
                for g in GROUPS:
                    tr = group(g)
                    d = sum(inv(den(fwd(noisy), s)) for fwd, inv in tr) / len(tr)
                    line.append(f"{g} {ratios(d * support, x, noisy, support)[0]:.4f}")
            print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
