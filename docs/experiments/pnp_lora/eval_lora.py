"""Test-time adaptation inside pnp: does a LoRA-adapted denoiser (dds_lora's AdaptedDenoiser) help the better sampler?

    OMP_NUM_THREADS=1 [MODEL=<card.json>] python docs/experiments/pnp_lora/eval_lora.py CASE[,CASE...] > LOG

For each case, on the production path's inputs (case_inputs; the scan's L1 phase reference; the calibration-matrix
noise level) and at the ζ the product's held-out rule chose for it in benchmarks/results/real.md (CHOSEN_ZETA), the
pnp sampler runs with the shipped denoiser ("plain") and with a per-slice LoRA copy that, before every denoising,
takes Adam steps so that its denoised image agrees with the slice's measured lines (the adapter's own held-out check
of dds_lora: a seeded 20 % of the non-ACS lines, a step undone when it raises their error). pnp denoises the image
demodulated by the phase reference, so the adapter's operator carries that phase in its maps (A_φ u = A (e^{iφ} u)).
One JSON line per (case, variant): NRMSE against the fully sampled RSS, seconds.
"""
import json
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

from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.samplers import default_sigmas, get_sampler, posterior_samples  # noqa: E402
from dpm_core.samplers.dds_lora import AdaptedDenoiser, adapter_holdout  # noqa: E402

CHOSEN_ZETA = {"real_R2": 0.0625, "real_R4": 0.0625, "real_R6": 0.25, "real_R4_random": 0.25,
               "real_folded_R2": 0.0625, "real_folded_R3": 0.0625, "synth0_R4": 4.0, "synth1_R4": 4.0,
               "synth2_R4": 4.0, "synth0_folded_R3": 4.0, "synth1_folded_R3": 4.0, "synth2_folded_R3": 4.0}
VARIANTS = {"plain": None, "lora lr 1e-4 x1": (1e-4, 1), "lora lr 1e-3 x1": (1e-3, 1), "lora lr 1e-3 x3": (1e-3, 3),
            "lora lr 1e-2 x1": (1e-2, 1)}
RANK, HOLDOUT, SEED = 4, 0.2, 0


def main():
    model = os.environ.get("MODEL")
    cases, rec = pnp_experiment(sys.argv[1], model)
    denoiser = rec.denoiser()
    spec = get_sampler("pnp")
    sigmas = default_sigmas(spec, denoiser)
    for case in cases:
        S = case.kspace.shape[0]
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)
        reference = rec._run_inputs(kn, sampling, maps, True)["phase_reference"]           # [S, M, H, W]
        rotation = torch.where(reference.abs() > 0, torch.sgn(reference), torch.ones_like(reference))
        mask = SenseOp(maps, sampling).mask
        for variant, setting in VARIANTS.items():
            t0 = time.perf_counter()
            images = []
            for s in range(S):
                one = slice(s, s + 1)
                op = SenseOp(maps[one], sampling)
                run_denoiser = denoiser
                if setting is not None:
                    lr, steps = setting
                    rotated = SenseOp(maps[one] * rotation[one].unsqueeze(2), sampling)
                    split = torch.Generator().manual_seed(SEED + s)
                    run_denoiser = AdaptedDenoiser(denoiser, kn[one], rotated, RANK, steps, lr,
                                                   adapter_holdout(mask[:1], HOLDOUT, split), SEED + s)
                x, _, _ = posterior_samples(spec, run_denoiser, kn[one], op, num_samples=1, seed=SEED, slice_ids=[s],
                                            sigmas=sigmas, noise_std=noise_std[one], phase_reference=reference[one],
                                            zeta=CHOSEN_ZETA[case.name])
                images.append(combine_map_images(x * support[one]) * scale[one].view(1, 1, 1))
            image = torch.cat(images).abs().numpy()
            print(json.dumps({"case": case.name, "variant": variant, "model": Path(model).stem if model else None,
                              "zeta": CHOSEN_ZETA[case.name], "nrmse": round(scores(image, ref)["NRMSE"], 6),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
