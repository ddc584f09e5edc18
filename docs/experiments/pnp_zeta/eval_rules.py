"""ζ rules for the pnp sampler against an oracle sweep, on every case of bench_real.py.

    OMP_NUM_THREADS=1 python docs/experiments/pnp_zeta/eval_rules.py CASE[,CASE...] [ZETA,...] > LOG

(ZETA,...: the ζ values to run instead of ZETAS, e.g. 8,16 to extend a sweep.)

For each case and each ζ of ZETAS the pnp sampler runs on the production path's inputs (Reconstructor(method="dpm",
sampler="pnp", num_maps="auto"): normalized k-space, maps, noise level, SENSE start, the scan's L1 phase reference)
through posterior_samples, and prints one JSON line with:
- nrmse: the NRMSE of its image against the fully sampled RSS (the oracle curve; bench_real.py's scoring), and per
  slice the squared error and the reference's squared norm (so that per-slice choices can be scored);
- gcv: GCV(ζ) = n ‖y − f(y)‖² / (n − df)² with df from each of PROBES seeded probes separately
  (dpm_core.zeta_rules.gcv_zeta's estimator; probe 0 is the production probe), the probed runs with their own L1
  phase reference (the whole estimator's divergence); gcv_shared: probe 0 with the phase reference of y, as the
  production's GCV runs share it;
- cv: the relative error on held-out lines, ‖P_h (A x̂ − y)‖² / ‖P_h y‖², of a reconstruction from the other measured
  lines, for FOLDS disjoint hold-out sets of HOLDOUT_FRACTION of the non-ACS lines (each with its own SENSE start and
  L1 phase reference computed from the kept lines only, so nothing of the held-out lines leaks in).
The rules are then scored offline from the log (summarize.py).
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
from bench_real import scores  # noqa: E402
from case_inputs import case_inputs, pnp_experiment  # noqa: E402

from dpm_core.masks import find_acs_lines, sampling_of  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.zeta_rules import GCV_PROBE_FLOOR, GCV_PROBE_SAMPLE  # noqa: E402
from dpm_core.samplers import default_sigmas, get_sampler, posterior_samples, warm_start_sigmas  # noqa: E402
from dpm_core.seeding import slice_seed  # noqa: E402

ZETAS = tuple(2.0 ** k for k in range(-6, 3))     # 1/64 ... 4 in factors of 2 (production grid: factors of 4)
PROBES = 3
FOLDS = 2
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 7
SEED = 0


def holdout_sets(lines: np.ndarray) -> list[np.ndarray]:
    """FOLDS disjoint seeded sets [H] bool of HOLDOUT_FRACTION of the measured non-ACS lines."""
    acs = find_acs_lines(lines)
    candidates = np.array([h for h in np.flatnonzero(lines) if not acs.start <= h < acs.stop])
    order = np.random.default_rng(HOLDOUT_SEED).permutation(candidates)
    count = int(round(HOLDOUT_FRACTION * candidates.size))
    sets = []
    for f in range(FOLDS):
        held = np.zeros_like(lines)
        held[order[f * count:(f + 1) * count]] = True
        sets.append(held)
    return sets


def main():
    zetas = tuple(float(z) for z in sys.argv[2].split(",")) if len(sys.argv) > 2 else ZETAS
    cases, rec = pnp_experiment(sys.argv[1])
    denoiser = rec.denoiser()
    spec = get_sampler("pnp")
    sigmas = warm_start_sigmas(default_sigmas(spec, denoiser, None, warm=True), rec.warm_start)
    for case in cases:
        t0 = time.perf_counter()
        S, C, H, W = case.kspace.shape
        ids = list(range(S))
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)
        op = SenseOp(maps, sampling)

        shared_reference = rec._l1_wavelet(kn, sampling, maps)[0]

        def run(y, mask, zeta, reference=None):
            """pnp's image [S, M, H, W] from k-space y measured on the lines ``mask`` [H] (SENSE start of those lines
            alone; L1 phase reference of those lines too unless given)."""
            part = sampling_of(mask, H)
            start = rec._sense(y, part, maps)
            if reference is None:
                reference = rec._l1_wavelet(y, part, maps)[0]
            mean, _, _ = posterior_samples(spec, denoiser, y, SenseOp(maps, part), num_samples=1, seed=SEED,
                                           slice_ids=ids, x_init=start, sigmas=sigmas, noise_std=noise_std,
                                           zeta=zeta, phase_reference=reference)
            return mean * support

        n = 2 * float(sampling.mask.sum()) * C * W
        data_rms = torch.sqrt(kn.abs().square().flatten(1).sum(1) / (n / 2))
        eps = (0.1 * torch.maximum(noise_std, GCV_PROBE_FLOOR * data_rms)).view(S, 1, 1, 1)
        P = torch.from_numpy(sampling.mask).view(1, 1, H, 1)
        probes = []
        for p in range(PROBES):
            b = []
            for s in ids:
                g = torch.Generator().manual_seed(slice_seed(SEED, s, GCV_PROBE_SAMPLE + p))
                b.append(torch.complex(torch.randn(kn.shape[1:], generator=g), torch.randn(kn.shape[1:], generator=g)))
            probes.append(torch.stack(b) * P)
        folds = holdout_sets(sampling.mask.astype(bool))

        for zeta in zetas:
            x = run(kn, sampling.mask, zeta, shared_reference)
            image = (combine_map_images(x) * scale.view(S, 1, 1)).abs().numpy()
            f = op.forward(x)
            residual = (kn - f).abs().pow(2).flatten(1).sum(1)
            gcv = []
            for b in probes:
                df = (b.conj() * (op.forward(run(kn + eps * b, sampling.mask, zeta)) - f)).real.flatten(1).sum(1) \
                    / eps.view(S)
                gcv.append((n * residual / (n - df).clamp_min(1.0) ** 2).tolist())
            df = (probes[0].conj() * (op.forward(run(kn + eps * probes[0], sampling.mask, zeta, shared_reference))
                                      - f)).real.flatten(1).sum(1) / eps.view(S)
            gcv_shared = (n * residual / (n - df).clamp_min(1.0) ** 2).tolist()
            cv = []
            for held in folds:
                keep = sampling.mask.astype(bool) & ~held
                Ph = torch.from_numpy(held).view(1, 1, H, 1)
                xk = run(kn * torch.from_numpy(keep).view(1, 1, H, 1), keep, zeta)
                cv.append((((op.forward(xk) - kn) * Ph).abs().pow(2).flatten(1).sum(1)
                           / (kn * Ph).abs().pow(2).flatten(1).sum(1)).tolist())
            print(json.dumps({"case": case.name, "zeta": zeta, "nrmse": round(scores(image, ref)["NRMSE"], 6),
                              "error_sq": ((image - ref) ** 2).reshape(S, -1).sum(1).tolist(),
                              "reference_sq": (ref ** 2).reshape(S, -1).sum(1).tolist(),
                              "gcv": gcv, "gcv_shared": gcv_shared, "cv": cv, "maps": int(maps.shape[1]),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
