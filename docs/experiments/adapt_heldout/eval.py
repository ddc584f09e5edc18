"""Test-time adaptation trained on held-out lines (zero-shot self-supervised, ZS-SSL style), two passes of DDS.

    OMP_NUM_THREADS=1 python docs/experiments/adapt_heldout/eval.py CASE[,CASE...] > LOG
    python docs/experiments/adapt_heldout/eval.py --summarize LOG [LOG ...] > summary.md

dds_lora fits its adapter to the measured lines the DDS data step then enforces anyway
(docs/experiments/adapt_significance/run.md). Here the adapter learns what the data step cannot give: to predict
measured lines its trajectory never saw (Yaman et al., "Zero-shot self-supervised learning for MRI reconstruction",
ICLR 2022, with SSDU's split of the measured lines). Per slice, on the production path's inputs (case_inputs:
num_maps auto, calibration-matrix noise level; the product's ζ, warm start and schedule of the default sampler):
1. a seeded LOSS_FRACTION of the measured lines outside the ACS block (dpm_core.holdout) is withheld;
2. pass 1: DDS on the other lines alone (its SENSE start from them too); before each denoising, STEPS Adam steps on
   LoRA adapters of a copy of the network minimize ||P_h (y − A D_θ(x_i, σ_i))||² / ||P_h y||² on the withheld lines;
3. pass 2: DDS on all measured lines with the adapted network frozen, the same seed as the product's run.
The unadapted DDS run (pass 2 with the shipped network) must reproduce benchmarks/results/real.json's DPM row.
With a second argument ``check`` (ZS-SSL's three-way split): the loss lines are the first fold of HOLDOUT_FRACTION
(0.2) and a second, disjoint fold is a validation set that pass 1 never sees either; an Adam step is undone when it
raises the error on the validation lines (as dds_lora's check does on its held-out lines).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "experiments" / "pnp_zeta"))
from bench_real import product_model, real_cases, synthetic_cases  # noqa: E402
from case_inputs import case_inputs  # noqa: E402

from dpm_core.holdout import HOLDOUT_FRACTION, holdout_folds  # noqa: E402
from dpm_core.lora import lora_copy  # noqa: E402
from dpm_core.masks import sampling_of  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers import default_sigmas, get_sampler, posterior_samples, warm_start_sigmas  # noqa: E402
from dpm_core.samplers._common import denoise_maps  # noqa: E402

SEED = 0
LOSS_FRACTION = 0.4          # SSDU's loss split of the measured lines outside the ACS block
VARIANTS = [(1, 1e-3), (3, 1e-3), (3, 1e-2), (3, 3e-2), (10, 1e-2)]     # (Adam steps per level, learning rate)
RANK = 4


class HeldOutAdapter:
    """LoRA copy of ``denoiser`` that, before each denoising, steps towards predicting the withheld lines."""

    def __init__(self, denoiser, y, op, withheld, steps, lr, validation=None):
        self.net, self.params = lora_copy(denoiser, RANK, SEED)
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.y, self.op, self.withheld, self.steps = y, op, withheld, steps
        self.energy = (withheld * y).abs().square().sum().clamp_min(1e-30)
        self.validation = validation                        # [1, 1, H, 1] or None: no check

    def _validation_error(self, D):
        return float((self.validation * (self.y - self.op.forward(D))).abs().square().sum())

    def __call__(self, x, sigma):
        images = x.detach().unsqueeze(0)
        level = float(sigma.reshape(-1)[0])
        for _ in range(self.steps):
            with torch.enable_grad():
                D = denoise_maps(self.net, images, level)
                loss = (self.withheld * (self.y - self.op.forward(D))).abs().square().sum() / self.energy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            saved = [p.detach().clone() for p in self.params]
            self.optimizer.step()
            if self.validation is not None:
                with torch.no_grad():
                    if self._validation_error(denoise_maps(self.net, images, level)) > self._validation_error(D):
                        for p, value in zip(self.params, saved):
                            p.copy_(value)
        with torch.no_grad():
            return denoise_maps(self.net, images, level).reshape(x.shape)


def main(names: str, check: bool = False) -> None:
    torch.set_num_threads(1)
    wanted = names.split(",")
    cases = real_cases(lambda n: n in wanted) + synthetic_cases(lambda n: n in wanted, 3, 2)[0]
    spec = get_sampler("fast")
    for case in cases:
        t0 = time.perf_counter()
        rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=str(product_model(case).card_path))
        product = rec.reconstruct(case.kspace * torch.from_numpy(case.mask).view(1, 1, -1, 1), case.mask)
        denoiser = rec.denoiser()
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)
        S, C, H, W = kn.shape
        zeta = torch.as_tensor(product.info["zeta"], dtype=torch.float32).reshape(-1).expand(S)
        sigmas = warm_start_sigmas(default_sigmas(spec, denoiser, warm=True), rec.warm_start)
        sigma_data = float(getattr(denoiser, "sigma_data", 0.5))      # the wrappers below do not carry it
        op = SenseOp(maps, sampling)
        x_init = rec._sense(kn, sampling, maps)
        if check:
            folds = holdout_folds(sampling.mask, HOLDOUT_FRACTION, torch.Generator().manual_seed(SEED),
                                  min_lines=10 ** 9)
            withheld, validation = folds[0], folds[1]
            validation_mask = torch.from_numpy(validation).float().view(1, 1, H, 1)
        else:
            withheld = holdout_folds(sampling.mask, LOSS_FRACTION, torch.Generator().manual_seed(SEED))[0]
            validation, validation_mask = np.zeros_like(withheld), None
        kept = sampling_of(sampling.mask & ~withheld & ~validation, H)
        op_kept = SenseOp(maps, kept)
        y_kept = op_kept.mask * kn
        x_init_kept = rec._sense(y_kept, kept, maps)
        withheld_mask = torch.from_numpy(withheld).float().view(1, 1, H, 1)

        def image(x):
            return (combine_map_images(x * support) * scale.view(S, 1, 1)).abs().numpy()

        def nrmse(img):
            return float(np.linalg.norm(img - ref) / np.linalg.norm(ref))

        def run(den, s, y, operator, start):
            return posterior_samples(spec, den, y[s:s + 1], SenseOp(operator.maps[s:s + 1], operator.mask[s:s + 1]),
                                     sigmas, num_samples=1, seed=SEED, slice_ids=[s], x_init=start[s:s + 1],
                                     noise_std=noise_std[s:s + 1], zeta=zeta[s:s + 1], sigma_data=sigma_data).mean
        plain = torch.cat([run(denoiser, s, kn, op, x_init) for s in range(S)])
        row = {"case": case.name, "check": check, "zeta": zeta.tolist(), "withheld_lines": int(withheld.sum()),
               "validation_lines": int(validation.sum()),
               "product": nrmse(np.abs(product.images)), "plain": nrmse(image(plain)), "variants": {}}
        for steps, lr in VARIANTS:
            out = []
            for s in range(S):
                adapter = HeldOutAdapter(denoiser, kn[s:s + 1], SenseOp(maps[s:s + 1], sampling), withheld_mask,
                                         steps, lr, validation_mask)
                run(adapter, s, y_kept, op_kept, x_init_kept)                      # pass 1: fits the adapter
                frozen = adapter.net.eval()
                with torch.no_grad():
                    out.append(run(lambda x, sigma: frozen(x, sigma), s, kn, op, x_init))
            row["variants"][f"{steps} step(s), lr {lr:g}"] = nrmse(image(torch.cat(out)))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)


def summarize(paths) -> None:
    real = json.load(open(ROOT / "benchmarks/results/real.json"))
    spread = {s["case"]: s["dpm_seed_sd"] for s in real["summary"]}
    adapted = {r["case"]: r["NRMSE"] for r in real["rows"] if r["method"] == "ours DPM adapted (dds_lora)"}
    rows = [json.loads(line) for path in paths for line in open(path)]
    names = list(rows[0]["variants"])
    print("| case | split | withheld / validation lines | DPM (product) | seed sd | dds_lora (real.json) | "
          + " | ".join(f"held-out adapter, {n}" for n in names) + " |")
    print("|---" * (6 + len(names)) + "|")
    for r in rows:
        cells = [f"{r['variants'][n]:.5f} ({r['variants'][n] - r['product']:+.5f})" for n in names]
        split = "loss 0.2 + validation 0.2" if r.get("check") else f"loss {LOSS_FRACTION:g}"
        print(f"| {r['case']} | {split} | {r['withheld_lines']} / {r.get('validation_lines', 0)} | "
              f"{r['product']:.5f} | {spread[r['case']]:.5f} | "
              f"{adapted[r['case']]:.5f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2:])
    else:
        main(sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "check")
