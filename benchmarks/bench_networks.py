"""What each U-Net preset costs at inference: one denoiser evaluation, and the default DPM reconstruction per slice.

    OMP_NUM_THREADS=1 python benchmarks/bench_networks.py [--device cpu|cuda] [--repeats 3]

Why: a GPU retraining (training/gpu_retrain.sh) trains the ``medium`` preset, and a site without a GPU runs the
default DPM on the CPU. Before such a model replaces the shipped ``small`` one, its CPU time per slice must still fit
the exam (bench_cpu_path.py's goal: ≤ 3 × BART ecalib + pics). Timing does not depend on the weights, so the
presets other than the shipped one run with their initial weights and the shipped card's σ range; their images are
meaningless and no NRMSE is reported for them.

Rows, per preset and case (the default Reconstructor: fast sampler, warm start, auto map count, coil maps included):
The output guard is off in every row (initial weights fail it, as they should; it adds one evaluation per slice).
Columns: parameters, float32 MB, ms per denoiser evaluation of one [1, H, W] map image (median of --repeats after one
warm-up; bf16 autocast on CUDA as in production), the default DPM's seconds per slice (median of --repeats) and its
ratio to the shipped preset's. Cases: the real 16-coil dev slice (96², R 4) when present, and one held-out synthetic
256² 8-coil FLAIR slice at R 4 (bench_cpu_path.py's cases). On the CPU every row runs on one torch thread.
Writes benchmarks/results/networks{,_gpu}.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_cpu_path import cases  # noqa: E402
from common import median_time, write_results  # noqa: E402

from dpm_core.checkpoints import DEFAULT_MODEL_PATH, load_checkpoint  # noqa: E402
from dpm_core.networks import UNET_PRESETS, ComplexDenoiser, build_network  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

SHIPPED = "shipped (small)"
PRESETS = ("medium",)          # "base" (66 M parameters) is for 320² on a GPU; add it with --presets base
REPEATS = 3


def denoisers(device: torch.device, presets):
    """{label: ComplexDenoiser}: the shipped model, then each preset with initial weights and the shipped σ range."""
    precond, card = load_checkpoint(DEFAULT_MODEL_PATH, device=device)
    shipped = ComplexDenoiser(precond)
    shipped.card, shipped.name = card, "flair_default"
    out = {SHIPPED: shipped}
    for preset in presets:
        net = build_network("unet", {"preset": preset}, sigma_data=card["sigma_data"], sigma_min=card["sigma_min"],
                            sigma_max=card["sigma_max"]).to(device).eval().requires_grad_(False)
        den = ComplexDenoiser(net)
        den.card = {**card, "arch_kwargs": {"preset": preset, **UNET_PRESETS[preset]}, "sha256": "untrained"}
        den.name = f"{preset} (initial weights)"
        out[f"{preset} (initial weights)"] = den
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=sorted(UNET_PRESETS))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    rows = []
    nets = denoisers(device, [p for p in args.presets if p != "small"])
    for case, what, full, mask in cases(1):
        S, C, H, W = full.shape
        under = full * torch.from_numpy(mask).view(1, 1, H, 1)
        x = torch.randn(1, H, W, dtype=torch.complex64, device=device) * 0.3
        shipped_seconds = None
        for label, den in nets.items():
            with torch.no_grad():
                ms = 1e3 * median_time(lambda: den(x, 0.1), repeats=args.repeats)
            rec = Reconstructor(model=den, device=device, progress=None, output_guard=False)
            res = rec.reconstruct(under, mask)                                   # warm-up (caches, allocator)
            seconds = median_time(lambda: rec.reconstruct(under, mask), repeats=args.repeats, warmup=0) / S
            shipped_seconds = seconds if label == SHIPPED else shipped_seconds
            params = sum(p.numel() for p in den.precond.net.parameters())
            rows.append({"case": case, "network": label, "parameters": params, "MB (float32)": 4 * params / 2 ** 20,
                         "ms / evaluation": ms, "NFE / slice": res.info.get("nfe_per_sample", ""),
                         "map sets": res.info.get("num_maps", ""), "DPM s/slice": seconds,
                         "× shipped": seconds / shipped_seconds})
            print(rows[-1], flush=True)
    notes = (f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_networks.py --device {args.device}` "
             f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
             + ("1 torch thread" if device.type == "cpu" else "CUDA, bf16 autocast")
             + f"; medians of {args.repeats}). The shipped model is `dpm_core/models/flair_default`; the other presets "
             "run with their initial weights (timing only: their images are not meaningful). DPM s/slice: the default "
             "Reconstructor (fast sampler, warm start, auto map sets, coil maps included; the output guard off in "
             "every row: initial weights fail it, as they should, and it adds one evaluation per slice) on one slice "
             "of each case "
             "(bench_cpu_path.py's: the real 16-coil dev slice 96² at R 4, a held-out synthetic FLAIR 256² 8-coil "
             "slice at R 4).")
    write_results("networks" if device.type == "cpu" else "networks_gpu", rows,
                  ["case", "network", "parameters", "MB (float32)", "ms / evaluation", "NFE / slice", "map sets",
                   "DPM s/slice", "× shipped"], "Inference cost of the network presets", notes)


if __name__ == "__main__":
    main()
