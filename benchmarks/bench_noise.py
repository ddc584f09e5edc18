"""The scan's noise level from its own k-space: the calibration-matrix estimate against independent references, and
what it changes in the reconstructions.

    OMP_NUM_THREADS=1 python benchmarks/bench_noise.py        -> benchmarks/results/noise.{json,md}

Estimates (dpm_core.noise): the calibration-matrix estimate with its lower-quartile match (production) and with the
median match (Gavish & Donoho's choice), and the k-space edge level (the k-space corners; the noise level the
Reconstructor used before). References, independent of all three:
- pure complex Gaussian noise of known σ (three shapes);
- synthetic scans (training.synth, held-out subject seeds) with the σ the generator added;
- a birdcage-coil Shepp-Logan phantom at 64² whose k-space edges hold signal far above the σ added;
- the real 16-coil slice (../shared/data, skipped when absent): the std of its fully sampled coil images in the
  4 x 4-pixel image corners, outside the head (the 8 x 8 corners give nearly the same).
Then, on the real slice (nominal R 4, 6 and the folded R 3; the cases of bench_real.py) and on bench_real's held-out
synthetic cases: the DPM as shipped (noise from the calibration estimate) against the same DPM fed the edge level as its
noise (the previous default), and L1-wavelet with λ = 0.16 × the edge level (its rule) against λ = 0.16 × the noise
estimate. NRMSE against the RSS of the fully sampled coil images.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_real  # noqa: E402
from common import markdown_table, write_results  # noqa: E402

from dpm_core.baselines import L1_LAMDA_PER_EDGE_LEVEL  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.masks import equispaced_mask, sampling_of  # noqa: E402
from dpm_core.noise import NOISE_QUANTILE, estimate_noise_std, kspace_edge_level  # noqa: E402
from dpm_core.normalize import normalization_scale  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

NUM_ACS = 24
IMAGE_CORNER = 4          # pixels: the real slice's reference region (each image corner, every coil)
SYNTH_SUBJECTS = ((21, "AXFLAIR", 128, 8), (22, "AXT1", 128, 8), (23, "AXT2", 128, 16), (24, "AXPD", 128, 8),
                  (21, "AXFLAIR", 320, 16))
REAL_EFFECT_CASES = ("real_R4", "real_R6", "real_folded_R3")
SYNTH_EFFECT_CASES = ("synth0_R4", "synth1_R4", "synth2_R4", "synth0_folded_R3")


def _noise(shape, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sigma * torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def estimates(kspace: torch.Tensor, mask: np.ndarray) -> dict:
    """The three estimates of the first slice of k-space [S, C, H, W] (zeros off the mask)."""
    return {"quartile": float(estimate_noise_std(kspace, mask)[0]),
            "median": float(estimate_noise_std(kspace, mask, quantile=0.5)[0]),
            "edge level": float(kspace_edge_level(kspace, mask)[0])}


def image_corner_std(kspace: torch.Tensor) -> float:
    """Std per real channel of the fully sampled coil images [C, H, W] of slice 0 in the four corner squares."""
    images = ifft2c(kspace)[0]
    b = IMAGE_CORNER
    corners = torch.cat([images[:, :b, :b], images[:, :b, -b:], images[:, -b:, :b], images[:, -b:, -b:]], dim=1)
    return float(torch.cat([corners.real.flatten(), corners.imag.flatten()]).std())


def reference_rows() -> list[dict]:
    from tests.conftest import birdcage_phantom
    from training.synth import generate_subject
    cases = []
    for i, (S, C, H, W) in enumerate(((1, 4, 64, 64), (1, 8, 128, 128), (1, 16, 96, 96))):
        mask = equispaced_mask(H, 4, NUM_ACS)
        cases.append((f"pure noise {C} coils {H}x{W}", "the σ drawn", 0.01,
                      _noise((S, C, H, W), 0.01, i) * torch.from_numpy(mask).view(1, 1, H, 1), mask))
    for seed, contrast, matrix, coils in SYNTH_SUBJECTS:
        subject = generate_subject(seed, contrast, matrix, coils, 1)
        mask = equispaced_mask(matrix, 4, NUM_ACS)
        cases.append((f"synthetic {contrast} {matrix}² {coils} coils (seed {seed})", "the σ the generator added",
                      subject.noise_std / np.sqrt(2), subject.kspace * torch.from_numpy(mask).view(1, 1, -1, 1), mask))
    kspace, _, _ = birdcage_phantom(64, 64, 8, slices=1)
    mask = equispaced_mask(64, 3, NUM_ACS)
    cases.append(("birdcage phantom 64², 8 coils, signal at the k-space edges", "the σ added", 2e-4,
                  (kspace + _noise(kspace.shape, 2e-4, 5)) * torch.from_numpy(mask).view(1, 1, -1, 1), mask))
    if bench_real.REAL_SLICE.exists():
        full = bench_real.normalized(bench_real.load_real_slice())
        for R in (2, 4, 6):
            mask = equispaced_mask(full.shape[2], R, NUM_ACS)
            cases.append((f"real 16-coil slice, nominal R {R}", f"coil-image corners ({IMAGE_CORNER} px)",
                          image_corner_std(full), full * torch.from_numpy(mask).view(1, 1, -1, 1), mask))
    rows = []
    for name, source, truth, kspace, mask in cases:
        e = estimates(kspace, mask)
        rows.append({"case": name, "reference": source, "σ reference": truth, "quartile (production)": e["quartile"],
                     "quartile / ref": e["quartile"] / truth, "median": e["median"], "median / ref": e["median"] / truth,
                     "edge level": e["edge level"], "edge level / ref": e["edge level"] / truth})
        print(f"{name}: {rows[-1]['quartile / ref']:.3f} / {rows[-1]['median / ref']:.3f} / "
              f"{rows[-1]['edge level / ref']:.3f}", flush=True)
    return rows


def effect_rows() -> list[dict]:
    wanted = set(REAL_EFFECT_CASES) | set(SYNTH_EFFECT_CASES)
    cases = bench_real.real_cases(lambda n: n in wanted)
    cases += bench_real.synthetic_cases(lambda n: n in wanted, 3, 2)[0]
    rows = []
    dpm = Reconstructor(method="dpm", device="cpu", progress=None)
    for case in (c for c in cases if c.name in wanted):
        S, C, H, W = case.kspace.shape
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        ref = rss(ifft2c(case.kspace)).numpy()
        kn = under / normalization_scale(under, sampling_of(case.mask, H)).view(S, 1, 1, 1)
        noise, edge = estimate_noise_std(kn, case.mask), kspace_edge_level(kn, case.mask)

        def nrmse(result):
            return bench_real.scores(np.abs(result.images), ref)["NRMSE"]
        shipped = dpm.reconstruct(under, case.mask)
        previous = Reconstructor(method="dpm", device="cpu", progress=None,
                                 sampler_options={"noise_std": edge}).reconstruct(under, case.mask)
        row = {"case": case.name, "edge level / noise": float((edge / noise).mean()),
               "DPM, noise from the calibration (shipped)": nrmse(shipped),
               "DPM, edge level as noise (previous)": nrmse(previous),
               "ζ (rule)": f"{np.atleast_1d(shipped.info['zeta'])[0]:.3g} ({shipped.info['zeta_rule'][:8]})"}
        if case.name.startswith("real"):
            l1 = {label: nrmse(Reconstructor(method="l1_wavelet", l1_lamda=L1_LAMDA_PER_EDGE_LEVEL * level,
                                             device="cpu").reconstruct(under, case.mask))
                  for label, level in (("edge", edge), ("noise", noise))}
            row.update({"L1, λ from the edge level (shipped)": l1["edge"], "L1, λ from the noise": l1["noise"]})
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    references = reference_rows()
    effects = effect_rows()
    ref_columns = list(references[0])
    effect_columns = ["case", "edge level / noise", "ζ (rule)", "DPM, noise from the calibration (shipped)",
                      "DPM, edge level as noise (previous)", "L1, λ from the edge level (shipped)",
                      "L1, λ from the noise"]
    described = " ".join(" ".join(__doc__.split("\n\n")[2:]).split())
    notes = (f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_noise.py`. {described}"
             f" Production: the calibration-matrix estimate matched at quantile {NOISE_QUANTILE} "
             f"(dpm_core.noise.NOISE_QUANTILE), equispaced masks + {NUM_ACS} ACS lines.\n\n"
             "## Estimates against independent references (σ per real channel)\n")
    effect_md = "\n".join(["", "## What it changes (NRMSE)", "",
                           "The DPM with the Reconstructor's defaults (card ζ where it brackets R, else GCV) with the "
                           "noise level it now estimates, and fed the edge level instead; L1 with λ from either.", ""]
                          + markdown_table(effects, effect_columns))
    path = write_results("noise", references, ref_columns, "The noise level from the scan's own k-space", notes,
                         extra={"effects": effects})
    path.write_text(path.read_text() + effect_md + "\n")
    print(effect_md)


if __name__ == "__main__":
    main()
