"""Does the DPM know something the L1-wavelet image does not? Blends of the product's images on the real cases.

    OMP_NUM_THREADS=1 python docs/experiments/blend_l1/blend.py CASE[,CASE...] OUT_DIR   (writes OUT_DIR/<case>.npz)
    python docs/experiments/blend_l1/blend.py --summarize OUT_DIR > summary.md

For each bench_real.py real case, the product's images with default settings (num_maps auto, the model
bench_real.product_model picks): our L1-wavelet (its per-scan λ rule), the DPM with the default sampler (DDS) and
with sampler="pnp". --summarize scores the complex blends a·DPM + (1 − a)·L1 over a ∈ {0, 0.05, …, 1} against the
RSS of the fully sampled coil images (bench_real.py's reference and NRMSE) and reports the best a: an oracle, since
a is chosen with the reference. If even the oracle blend is barely below L1, the DPM adds little the L1 image lacks.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_real import real_cases, product_model  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

METHODS = {"l1": {"method": "l1_wavelet"}, "dds": {"method": "dpm"}, "pnp": {"method": "dpm", "sampler": "pnp"}}
WEIGHTS = np.linspace(0, 1, 21)
BEST_PICS = {"real_R2": 0.01094, "real_R4": 0.02132, "real_R6": 0.0344, "real_R4_random": 0.03185,   # real.md
             "real_folded_R2": 0.01304, "real_folded_R3": 0.023}


def main(names: str, out: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for case in real_cases(lambda n: n in names.split(",")):
        model = str(product_model(case).card_path)
        images = {}
        for name, options in METHODS.items():
            t0 = time.perf_counter()
            rec = Reconstructor(num_maps="auto", progress=None, model=model, **options)
            result = rec.reconstruct(case.kspace * torch.from_numpy(case.mask).view(1, 1, -1, 1), case.mask)
            images[name] = result.images
            print(case.name, name, f"zeta {result.info.get('zeta')}", f"{time.perf_counter() - t0:.1f} s", flush=True)
        np.savez(out / f"{case.name}.npz", ref=rss(ifft2c(case.kspace)).numpy(), **images)


def summarize(out: Path) -> None:
    print("| case | our L1 | DDS | pnp | oracle a·pnp + (1−a)·L1 | a = 0.5 | oracle a·DDS + (1−a)·L1 | best BART PICS |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(out.glob("real_*.npz")):
        d = np.load(path)
        ref = d["ref"]

        def nrmse(x):
            return float(np.linalg.norm(np.abs(x) - ref) / np.linalg.norm(ref))

        cells = []
        for dpm in ("pnp", "dds"):
            values = [nrmse(a * d[dpm] + (1 - a) * d["l1"]) for a in WEIGHTS]
            i = int(np.argmin(values))
            cells.append(f"{values[i]:.5f} (a {WEIGHTS[i]:.2f})")
            if dpm == "pnp":
                cells.append(f"{values[10]:.5f}")
        print(f"| {path.stem} | {nrmse(d['l1']):.5f} | {nrmse(d['dds']):.5f} | {nrmse(d['pnp']):.5f} | "
              + " | ".join(cells) + f" | {BEST_PICS[path.stem]} |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(Path(sys.argv[2]))
    else:
        main(sys.argv[1], Path(sys.argv[2]))
