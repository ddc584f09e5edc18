"""An oracle prior: the shipped foundation model fine-tuned on the real dev slice's own fully sampled image.

A diagnostic, never a product model (the weights stay under OUT, outside the repository: the slice is not
redistributable). It asks whether the samplers can beat BART's best PICS on the real slice when the prior knows the
anatomy exactly: if even this prior loses, the sampler and its data consistency are the limit, not the prior.

    OMP_NUM_THREADS=1 python oracle.py train OUT STEPS [P_MEAN]   # exports OUT/steps_STEPS[_pP_MEAN]/model.json
    OMP_NUM_THREADS=1 python oracle.py eval OUT/steps_STEPS/model.json CASES [SAMPLERS]

SAMPLERS: comma-separated registry names (default fast), each optionally with a fixed ζ as NAME@ZETA (fast@0.25);
without one the product's rule chooses ζ; a trailing /cold starts from pure noise (warm_start=None, the sampler's
full schedule) instead of the product's warm start. MODEL may be the shipped foundation model's card, as the control.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
import bench_real as br  # noqa: E402
from dpm_core.checkpoints import load_checkpoint  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from training.preprocess import compute_targets  # noqa: E402
from training.training_loop import training_loop  # noqa: E402

FOUNDATION = REPO / "dpm_core" / "models" / "foundation_default.json"
CROP, BATCH, LR = 64, 8, 3e-4            # dpm-finetune's recipe (batch 8 of 64² crops, flips, lr 3e-4)


class OneImage(Dataset):
    """The one target [H, W] complex64 as random 64² crops with flips: [2, 64, 64] float32 (as CachedSlices)."""

    def __init__(self, target: np.ndarray, copies: int = 64):
        self.target, self.copies = target, copies

    def __len__(self):
        return self.copies

    def __getitem__(self, key):
        seed = key[1] if isinstance(key, tuple) else None
        rng = np.random.default_rng(seed)
        H, W = self.target.shape
        y0, x0 = (int(rng.integers(0, H - CROP + 1)), int(rng.integers(0, W - CROP + 1))) if seed is not None \
            else ((H - CROP) // 2, (W - CROP) // 2)
        img = self.target[y0:y0 + CROP, x0:x0 + CROP]
        if seed is not None and rng.random() < 0.5:
            img = img[::-1]
        if seed is not None and rng.random() < 0.5:
            img = img[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(np.stack([img.real, img.imag]).astype(np.float32)))


def train(out: Path, steps: int, p_mean: float | None = None) -> None:
    """p_mean: EDM's ln σ mean of the training noise levels (None: the training loop's −1.2; −3.4 puts the median
    σ at 0.033, the levels where the production sampler runs, as docs/experiments/low_sigma tried)."""
    targets, _ = compute_targets(br.load_real_slice())                   # [1, 96, 96] MVUE / scale
    precond, card = load_checkpoint(FOUNDATION, device="cpu")
    run = out / (f"steps_{steps}" + ("" if p_mean is None else f"_p{p_mean:g}"))
    noise_levels = {} if p_mean is None else {"P_mean": p_mean}
    t0 = time.time()
    result = training_loop(run_dir=run, dataset=OneImage(targets[0].numpy()), init_precond=precond,
                           total_steps=steps, batch_size=BATCH, lr=LR, ema_halflife_nimg=10.0 * BATCH,
                           ema_rampup_ratio=None, seed=0, device="cpu", tick_steps=50, progress=False,
                           tensorboard=False, **noise_levels,
                           card={"training_data": "ORACLE: the real dev slice itself (diagnostic only)",
                                 "image_size": [96, 96], "zeta": card.get("zeta"),
                                 "training": {"stage": "oracle", "init": str(FOUNDATION), "steps": steps}})
    print(f"trained {steps} steps in {time.time() - t0:.0f} s; model {result['model']}", flush=True)


def evaluate(model: str, names: list[str], samplers: list[str]) -> None:
    cases = br.real_cases(lambda n: n in names)
    real = json.loads((REPO / "benchmarks" / "results" / "real.json").read_text())
    rows = real["rows"]
    for case in cases:
        pics = min(r["NRMSE"] for r in rows if r.get("case") == case.name and r.get("lamda", 0) > 0)
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        ref = rss(ifft2c(case.kspace)).numpy()
        for spec in samplers:
            name, cold = (spec[:-len("/cold")], True) if spec.endswith("/cold") else (spec, False)
            sampler, _, zeta = name.partition("@")
            warm = {"warm_start": None} if cold else {}
            t0 = time.perf_counter()
            res = Reconstructor(method="dpm", model=model, sampler=sampler, zeta=float(zeta) if zeta else None,
                                device="cpu", progress=None, **warm).reconstruct(under, case.mask)
            images = np.abs(res.images)
            nrmse = float(np.linalg.norm(images - ref) / np.linalg.norm(ref))
            print(f"{case.name} {spec}: NRMSE {nrmse:.5f}, best PICS {pics:.5f}, ratio {nrmse / pics:.3f}, "
                  f"zeta {res.info.get('zeta')} ({res.info.get('zeta_rule')}), {time.perf_counter() - t0:.1f} s",
                  flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "train":
        train(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else None)
    else:
        evaluate(sys.argv[2], sys.argv[3].split(","), (sys.argv[4] if len(sys.argv) > 4 else "fast").split(","))
