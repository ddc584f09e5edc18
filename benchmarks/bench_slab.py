"""3-D slabs accelerated along ky: the product (dpm-replay, a slab as its partitions) beside BART's 3-D reconstruction.

    OMP_NUM_THREADS=1 python benchmarks/bench_slab.py

Data: BART's analytic 3-D multi-coil Shepp-Logan (``bart phantom -3 -k -s 8 -x 48``: k-space in closed form, not an
FFT of an image), complex Gaussian noise added (σ per real channel = ``NOISE_FRACTION`` of the RMS of the noise-free
k-space), kz fully sampled, ky equispaced at nominal R = 2 and 3 + 16 ACS lines; no noise scan (as the real slice of
bench_real.py), so every method estimates the noise level itself. Streamed as a scanner does
(``tests.harness.slab_acquisitions``: idx.kspace_encode_step_2 = kz, one slab) and reconstructed by
``gadgets.replay.replay`` (local mode) with each method's defaults. Reference: RSS of the fully sampled noisy coil
images (numpy ``ifftn``); NRMSE on magnitude over the whole volume, no scale fitting (as bench_real.py).

BART works on the whole slab in 3-D (its own approach, not ours): ``ecalib -m1 -r 16 -c 0.8`` on the 3-D calibration
region, then ``pics -S -i 100`` plain SENSE (``-l2 -r 0``) and l1-wavelet (3-D wavelets) over bench_real's λ grid.
Seconds are wall time per volume on one thread (OMP_NUM_THREADS=1); replay's include reading, assembly and output.
Writes benchmarks/results/slab.{json,md}.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bart  # noqa: E402
from bench_real import ITERATIONS, LAMBDA_GRID, bart_version  # noqa: E402
from common import write_results  # noqa: E402

from dpm_core.masks import acs_slice, effective_acceleration, equispaced_mask  # noqa: E402
from gadgets import replay  # noqa: E402
from gadgets.mrd_io import write_mrd_raw  # noqa: E402
from tests.harness import slab_acquisitions  # noqa: E402

MATRIX = 48                # x = y = z
COILS = 8
NUM_ACS = 16
ACCELERATIONS = (2, 3)
NOISE_FRACTION = 0.02      # σ per real channel / RMS of the noise-free k-space
NOISE_SEED = 0
METHODS = ("zero_filled", "sense", "l1_wavelet", "dpm")
OBJECT_LEVEL = 0.1         # voxels of the reference above this fraction of its maximum are "in the object"


def phantom(tmp: Path) -> np.ndarray:
    """[C, Z, H, W] complex64 noisy k-space (W = BART x, H = BART y, Z = BART z)."""
    subprocess.run(["bart", "phantom", "-3", "-x", str(MATRIX), "-s", str(COILS), "-k", str(tmp / "k")], check=True,
                   capture_output=True)
    clean = np.transpose(bart.read_cfl(tmp / "k").reshape(MATRIX, MATRIX, MATRIX, COILS), (3, 2, 1, 0))
    sigma = NOISE_FRACTION * np.sqrt(np.mean(np.abs(clean) ** 2) / 2)
    rng = np.random.default_rng(NOISE_SEED)
    noise = sigma * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape))
    return (clean + noise).astype(np.complex64)


def rss_volume(kspace: np.ndarray) -> np.ndarray:
    """[C, Z, H, W] k-space -> [Z, H, W] RSS of the coil images (centred orthonormal 3-D inverse FFT)."""
    axes = (1, 2, 3)
    coil_images = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="ortho"),
                                  axes=axes)
    return np.sqrt((np.abs(coil_images) ** 2).sum(0))


def nrmse(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(x - reference) / np.linalg.norm(reference))


def nrmse_in_object(x: np.ndarray, reference: np.ndarray) -> float:
    """NRMSE over the voxels where the reference exceeds ``OBJECT_LEVEL`` of its maximum: the phantom, without the
    background, where the reference is the noise floor of an RSS and a method that returns 0 outside its coil maps'
    support is charged all of it (docs/experiments/oracle_prior/run.md found the same on the real slice)."""
    inside = reference > OBJECT_LEVEL * reference.max()
    return float(np.linalg.norm((x - reference)[inside]) / np.linalg.norm(reference[inside]))


def recorded(meta, key: str) -> str:
    """A per-partition parameter of the meta (one value per image, or a space-separated list) as median (min–max)."""
    values = [float(v) for v in str(meta.get(key, "")).split()]
    if not values:
        return ""
    if len(set(values)) == 1:
        return f"{values[0]:.4g}"
    return f"{np.median(values):.4g} ({min(values):.4g}–{max(values):.4g})"


def ours(raw: Path, method: str) -> tuple[np.ndarray, float, dict]:
    """(magnitude [Z, H, W], seconds, the first image's meta) of the slab file ``raw`` through dpm-replay."""
    out = raw.with_name(f"{raw.stem}_{method}")
    t0 = time.perf_counter()
    summary = replay.replay(str(raw), str(out), mode="local", config={"method": method}, dicom=False)
    seconds = time.perf_counter() - t0
    if summary["errors"]:
        raise RuntimeError(f"{method}: {summary['errors']}")
    images = sorted(replay.read_ismrmrd_images(out / "images.h5"), key=lambda im: im.image_index)
    images = [im for im in images if im.image_series_index == images[0].image_series_index]
    return np.stack([np.abs(np.asarray(im.data)).reshape(MATRIX, MATRIX) for im in images]), seconds, images[0].meta


def bart_3d(kspace: np.ndarray, measured: np.ndarray, tmp: Path) -> list[tuple[str, float, np.ndarray, float]]:
    """[(method, λ, magnitude [Z, H, W], seconds incl. ecalib)] of BART on the slab in 3-D."""
    bart.write_cfl(tmp / "ku", np.transpose(kspace * measured[None, None, :, None], (3, 2, 1, 0)))
    ku, maps = str(tmp / "ku"), str(tmp / "maps")
    t0 = time.perf_counter()
    subprocess.run(["bart", "ecalib", "-m1", "-r", str(NUM_ACS), "-c", "0.8", ku, maps], check=True,
                   capture_output=True)
    ecalib_seconds = time.perf_counter() - t0
    out = []
    for lamda in (0.0, *LAMBDA_GRID):
        args = ["-l2", "-r", "0"] if lamda == 0 else ["-l1", "-r", str(lamda)]
        t0 = time.perf_counter()
        subprocess.run(["bart", "pics", "-S", "-i", str(ITERATIONS), *args, ku, maps, str(tmp / "x")], check=True,
                       capture_output=True)
        seconds = time.perf_counter() - t0 + ecalib_seconds
        x = np.abs(np.transpose(bart.read_cfl(tmp / "x").reshape(MATRIX, MATRIX, MATRIX), (2, 1, 0)))
        out.append(("BART SENSE (pics -l2 -r 0)" if lamda == 0 else "BART PICS l1-wavelet (3-D)", lamda, x, seconds))
    return out


def main() -> None:
    if not bart.available():
        raise SystemExit("bart is not on PATH (./run.sh installs Debian's)")
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_slab_") as tmp:
        tmp = Path(tmp)
        kspace = phantom(tmp)
        reference = rss_volume(kspace)
        for R in ACCELERATIONS:
            mask = np.asarray(equispaced_mask(MATRIX, R, NUM_ACS))
            measured = mask.copy()
            measured[acs_slice(MATRIX, NUM_ACS)] = True
            case = f"R{R}"
            r_eff = float(effective_acceleration(torch.from_numpy(measured)))
            bart_rows = bart_3d(kspace, measured, tmp)
            best = min((r for r in bart_rows if r[1] > 0), key=lambda r: nrmse(r[2], reference))
            for name, lamda, x, seconds in bart_rows:
                rows.append({"case": case, "R eff": round(r_eff, 2), "method": name,
                             "λ / ζ": f"{lamda:g}" if lamda else "", "NRMSE": nrmse(x, reference),
                             "NRMSE in object": nrmse_in_object(x, reference), "s/volume": seconds,
                             "best": "best λ" if lamda and lamda == best[1] else ""})
            bart_sense = {"whole": nrmse(bart_rows[0][2], reference), "object": nrmse_in_object(bart_rows[0][2],
                                                                                                reference)}
            bart_pics = {"whole": nrmse(best[2], reference), "object": nrmse_in_object(best[2], reference)}
            raw = tmp / f"slab_{case}.h5"
            write_mrd_raw(str(raw), slab_acquisitions(kspace, mask, num_acs=NUM_ACS, slab_thickness_mm=96.0))
            for method in METHODS:
                x, seconds, meta = ours(raw, method)
                whole, in_object = nrmse(x, reference), nrmse_in_object(x, reference)
                rows.append({"case": case, "R eff": round(r_eff, 2), "method": f"ours {method}",
                             "λ / ζ": recorded(meta, "DPM_Lambda") or recorded(meta, "DPM_Zeta"),
                             "NRMSE": whole, "NRMSE in object": in_object, "s/volume": seconds, "best": "",
                             "/ BART SENSE": whole / bart_sense["whole"],
                             "/ best BART PICS": whole / bart_pics["whole"],
                             "in object / BART SENSE": in_object / bart_sense["object"],
                             "in object / best BART PICS": in_object / bart_pics["object"],
                             "fallback": "SENSE_FALLBACK" in meta.get("ImageComment", "")})
                print(rows[-1], flush=True)
    notes = (__doc__.split("\n\n", 2)[2].strip().replace("\n", " ")
             + f"\n\nPhantom {MATRIX}³, {COILS} coils, σ = {NOISE_FRACTION} × k-space RMS, ACS {NUM_ACS}; BART "
               f"{bart_version()}. Command: `OMP_NUM_THREADS=1 python benchmarks/bench_slab.py`. Ours: one image "
               "per partition, each partition a 2-D problem with its own ESPIRiT maps (the partitions of a slab "
               "accelerated along ky alone are independent); BART's 3-D l1-wavelet also shares information across "
               "partitions. The DPM (the prior model_choice picks for the header, a brain prior) meets a phantom "
               "here: its row is a geometry and transport check, not a quality claim. λ / ζ: BART's λ; for ours "
               "the recorded λ (L1) or ζ (DPM) per partition, median (range). NRMSE in object: over the voxels "
               "where the reference exceeds "
               f"{OBJECT_LEVEL} of its maximum (`nrmse_in_object`).")
    write_results("slab", rows, ["case", "R eff", "method", "λ / ζ", "NRMSE", "/ BART SENSE", "/ best BART PICS",
                                 "NRMSE in object", "in object / BART SENSE", "in object / best BART PICS",
                                 "s/volume", "best", "fallback"],
                  "3-D slabs accelerated along ky: ours (a slab as its partitions) vs BART 3-D", notes,
                  extra={"matrix": MATRIX, "coils": COILS, "num_acs": NUM_ACS, "noise_fraction": NOISE_FRACTION})


if __name__ == "__main__":
    main()
