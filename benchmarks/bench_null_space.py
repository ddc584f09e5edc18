"""Where does the DPM lose to our L1-wavelet? Its error on measured and unmeasured phase-encode lines, its path
along the default schedule, and what it does to a better start.

    OMP_NUM_THREADS=1 python benchmarks/bench_null_space.py

On the unfolded cases of bench_real.py (the real dev slice at nominal R 4, 6 and R 4 random, skipped when the slice
is absent; three held-out synthetic oblique FLAIR subjects at nominal R 4), with the Reconstructor's defaults and
the model the product chooses for each case's contrast (bench_real.product_model):
1. **Error split.** SENSE, L1-wavelet and the DPM run with the same coil maps (those the DPM's default run chose).
   Their error against the fully sampled image combined with those maps, e = x̂ − x (inside the maps' support), is
   split by the k-space of e into the measured ky lines and the rest: ‖P e‖ and ‖(1 − P) e‖, both over ‖x‖. With one
   map set the measured part is what the data pin down (up to noise), the unmeasured part what the prior fills in.
2. **Path.** The default DPM (warm start from the SENSE image at σ 0.2, the card's ζ or GCV) with a callback: the
   NRMSE of the denoised estimate D and of the iterate x after every level. The run is the Reconstructor's own
   (checked: the same image to float32 rounding).
3. **A better start.** The same sampler started from our L1-wavelet image instead, at σ_start ∈ L1_START_SIGMAS
   (the levels of the warm schedule at or below it), ζ and noise level as the default run. If the prior knew more
   than the wavelet penalty about the unmeasured lines, a start at low σ would keep L1's gains and add to them.
   Beside it the mean of MEAN_SAMPLES posterior samples (``num_samples``), which removes most of a single sample's
   spread: what the posterior mean of this prior gives.
NRMSE is bench_real.py's: magnitude against the RSS of the fully sampled coil images, no scale fitting.

Writes benchmarks/results/null_space.{json,md}.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_real import code_state, product_model, real_cases, synthetic_cases  # noqa: E402
from common import markdown_table, write_results  # noqa: E402

from dpm_core import baselines, metrics  # noqa: E402
from dpm_core.combine import mvue, rss  # noqa: E402
from dpm_core.fft import fft2c, ifft2c  # noqa: E402
from dpm_core.masks import sampling_of  # noqa: E402
from dpm_core.normalize import normalization_scale  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers import default_sigmas, posterior_samples, warm_start_sigmas  # noqa: E402

REAL_CASES = ("real_R4", "real_R6", "real_R4_random")
SYNTH_CASES = ("synth0_R4", "synth1_R4", "synth2_R4")
SYNTH_SUBJECTS, SYNTH_SLICES = 3, 2            # as bench_real.py's defaults
L1_START_SIGMAS = (0.01, 0.03, 0.1)
MEAN_SAMPLES = 16
SAME_RUN_TOLERANCE = 1e-4          # relative difference of the replayed default run (float32 rounding)


def error_split(images: np.ndarray, x_ref: torch.Tensor, support: torch.Tensor, measured: torch.Tensor) -> dict:
    """‖P e‖ / ‖x‖ and ‖(1 − P) e‖ / ‖x‖ for e = images − x_ref over the support; P keeps the measured ky rows."""
    e = fft2c((torch.from_numpy(images) - x_ref) * support)                       # [S, H, W]
    norm = float(torch.linalg.vector_norm(x_ref * support))
    rows = measured.view(1, -1, 1)
    return {"measured lines": float(torch.linalg.vector_norm(e * rows)) / norm,
            "unmeasured lines": float(torch.linalg.vector_norm(e * ~rows)) / norm}


def run_case(case) -> dict:
    S, C, H, W = case.kspace.shape
    under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
    ref = rss(ifft2c(case.kspace)).numpy()

    def nrmse(images) -> float:
        return float(metrics.nrmse(np.abs(images), ref))

    model = product_model(case)
    dpm = Reconstructor(method="dpm", model=str(model.card_path), device="cpu", progress=None)
    default = dpm.reconstruct(under, case.mask)
    maps = torch.from_numpy(default.maps)                                          # [S, M, C, H, W]
    if maps.shape[1] != 1:
        raise RuntimeError(f"{case.name}: num_maps='auto' chose {maps.shape[1]} map sets; the split needs one")
    results = {"DPM": default}
    for label, method in (("SENSE", "sense"), ("L1-wavelet", "l1_wavelet")):
        results[label] = Reconstructor(method=method, device="cpu", progress=None).reconstruct(
            under, case.mask, maps=maps)
    x_ref = mvue(case.kspace, maps)                                                # [S, H, W], input units
    support = maps[:, 0].abs().sum(1) > 0
    measured = torch.from_numpy(np.asarray(case.mask, bool))
    split = [{"case": case.name, "method": label, "NRMSE": nrmse(res.images),
              **error_split(res.images, x_ref, support, measured)} for label, res in results.items()]

    # The default run again, by hand, with a callback; then the same sampler from the L1 image.
    sampling = sampling_of(case.mask, H)
    scale = normalization_scale(under, sampling).view(S, 1, 1)
    kn = under / scale.view(S, 1, 1, 1)
    op = SenseOp(maps, sampling)
    den = dpm.denoiser()
    options = {"noise_std": torch.as_tensor(default.info["noise_std"]).reshape(-1),
               "zeta": torch.as_tensor(default.info["zeta"]).reshape(-1).expand(S).clone()}
    schedule = default_sigmas("fast", den, warm=True)

    inside = op.maps.abs().sum(dim=2) > 0                                          # [S, 1, H, W]

    def image(x):                                    # map-set images in kn units -> masked image in input units
        return (combine_map_images(x * inside) * scale).numpy()

    def sample(x_init, sigma_start, callback=None):  # all S slices in one call, as the callback assumes
        out = posterior_samples("fast", den, kn, op, warm_start_sigmas(schedule, sigma_start), seed=dpm.seed,
                                slice_ids=list(range(S)), x_init=x_init, callback=callback, **options)
        return image(out.mean)

    path = []

    def record(state):
        path.append((state["sigma"], nrmse(image(state["denoised"])), nrmse(image(state["x"]))))

    sense_start = baselines.sense_cg(kn, sampling, maps, dpm.cg_iters, dpm.l2_weight, tol=dpm.cg_tol)
    replay = sample(sense_start, dpm.warm_start, record)
    difference = float(np.linalg.norm(replay - default.images) / np.linalg.norm(default.images))
    if difference > SAME_RUN_TOLERANCE:
        raise RuntimeError(f"{case.name}: the replayed default DPM differs from the Reconstructor's by "
                           f"{difference:.2g}")
    l1_start = baselines.l1_wavelet(kn, sampling, maps)                       # the per-scan λ rule
    from_l1 = {s: nrmse(sample(l1_start, s)) for s in L1_START_SIGMAS}
    mean = Reconstructor(method="dpm", model=str(model.card_path), device="cpu", progress=None,
                         num_samples=MEAN_SAMPLES).reconstruct(under, case.mask, maps=maps)
    return {"model": model.name, "mean_of_samples": nrmse(mean.images), "split": split, "path": path,
            "from_l1": from_l1, "zeta": default.info["zeta"],
            "zeta_rule": default.info["zeta_rule"], "sense_start": nrmse(image(sense_start)),
            "levels_from_l1": {s: int((warm_start_sigmas(schedule, s) > 0).sum()) for s in L1_START_SIGMAS}}


def main():
    torch.set_num_threads(1)
    state = code_state()
    t0 = time.perf_counter()
    cases = real_cases(lambda n: n in REAL_CASES)
    cases += synthetic_cases(lambda n: n in SYNTH_CASES, SYNTH_SUBJECTS, SYNTH_SLICES)[0]
    per_case, split_rows, path_rows, start_rows = {}, [], [], []
    for case in cases:
        out = run_case(case)
        per_case[case.name] = out
        split_rows += out["split"]
        nrmse = {r["method"]: r["NRMSE"] for r in out["split"]}
        zeta = out["zeta"] if isinstance(out["zeta"], float) else "/".join(f"{z:.3g}" for z in out["zeta"])
        path_rows.append({"case": case.name, "model": out["model"], "ζ": zeta, "SENSE start": out["sense_start"],
                          **{f"σ {s:.3g}": f"{d:.4f} / {x:.4f}" for s, d, x in out["path"]},
                          "DPM": nrmse["DPM"], "SENSE": nrmse["SENSE"]})
        start_rows.append({"case": case.name, "L1-wavelet": nrmse["L1-wavelet"],
                           **{f"DPM from L1, σ_start {s:g} ({out['levels_from_l1'][s]} levels)": v
                              for s, v in out["from_l1"].items()},
                           "DPM (default, from SENSE)": nrmse["DPM"],
                           f"DPM, mean of {MEAN_SAMPLES} samples": out["mean_of_samples"]})
        print(case.name, out["from_l1"], flush=True)
    path_columns = list(dict.fromkeys(k for r in path_rows for k in r))
    notes = "\n".join([
        f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_null_space.py` ({time.perf_counter() - t0:.0f} s; "
        f"{state}). Cases as in `real.md` (the unfolded ones); every method with the Reconstructor's defaults and "
        "the coil maps of the DPM's default run; the DPM with the model the product chooses for the case's contrast "
        "(as `real.md`: the headerless real slice gets the foundation model, the synthetic FLAIR subjects the FLAIR "
        "model).",
        "",
        "## 2. The default DPM's path",
        "",
        "Denoised estimate D / iterate x after each level (NRMSE), σ the level; 'SENSE start' the warm start's image "
        "before noise is added.",
        "",
        *markdown_table(path_rows, path_columns),
        "",
        "## 3. The same sampler started from our L1-wavelet image",
        "",
        *markdown_table(start_rows, list(start_rows[0])),
        "",
        "## 1. Error on measured and unmeasured ky lines, relative to ‖x‖",
    ])
    write_results("null_space", split_rows, ["case", "method", "NRMSE", "measured lines", "unmeasured lines"],
                  "Where the DPM loses to L1-wavelet: measured and unmeasured lines, its path, a better start",
                  notes, extra={"code": state, "cases": {k: {kk: vv for kk, vv in v.items() if kk != "split"}
                                                         for k, v in per_case.items()}})


if __name__ == "__main__":
    main()
