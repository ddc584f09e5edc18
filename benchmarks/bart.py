"""BART (Debian's ``bart``, the Berkeley Advanced Reconstruction Toolbox) as the in-project reference.

Thin wrappers around the command-line tools, so that our classical reconstructions can be measured against the
classical state of the art on the same k-space (benchmarks/bench_real.py, tests/test_bart_reference.py). Nothing in
dpm_core depends on this module.

Layout: our k-space is [C, H, W] (coils, ky, kx); BART's is [kx, ky, kz, coils] in column-major .cfl files
(dims[0] = readout). Both put the k-space centre at index n // 2 for even n. BART's maps come out [kx, ky, 1, C, M]
and ``pics`` images [kx, ky, 1, 1, M]; the wrappers transpose back to [M, C, H, W] and [M, H, W].

Settings (BART 0.8.00 defaults, read in src/calib/calib.c and src/pics.c): ``ecalib`` kernel 6, calibration region up
to 24 lines, kernel threshold σ_j / σ_0 > sqrt(0.001), hard crop at eigenvalue 0.8; ``pics`` scales the data by the
90th percentile of the zero-filled RSS image, 30 iterations by default, l1 on Daubechies-2 wavelets with random cycle
spinning, FISTA. ``-S`` rescales the output image back to the input's units, so NRMSE needs no scale fit.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["available", "write_cfl", "read_cfl", "ecalib", "pics", "BartError"]


class BartError(RuntimeError):
    """A bart command failed; the message holds its command line and stderr."""


def available() -> bool:
    """True when the ``bart`` executable is on PATH (``./run.sh`` installs Debian's package)."""
    return shutil.which("bart") is not None


def write_cfl(base: Path, array: np.ndarray) -> None:
    """Write ``array`` (any shape, BART's axis order) as base.hdr + base.cfl, column-major complex64."""
    array = np.asarray(array, dtype=np.complex64)
    dims = list(array.shape) + [1] * max(0, 16 - array.ndim)
    Path(f"{base}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    np.asfortranarray(array).ravel(order="F").tofile(f"{base}.cfl")


def read_cfl(base: Path) -> np.ndarray:
    """Read base.hdr + base.cfl; trailing singleton axes beyond the first four are dropped."""
    lines = Path(f"{base}.hdr").read_text().splitlines()
    dims = [int(d) for d in lines[1].split()]
    last = max([i for i, d in enumerate(dims) if d > 1] + [3])
    dims = dims[:last + 1]
    data = np.fromfile(f"{base}.cfl", dtype=np.complex64)
    return data.reshape(dims, order="F")


def _run(args: list[str]) -> None:
    proc = subprocess.run(["bart", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BartError(f"bart {' '.join(args)} failed (rc {proc.returncode}): {proc.stderr.strip()}")


def _to_bart_kspace(kspace: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [W, H, 1, C] (kx, ky, kz, coils)."""
    return np.transpose(np.asarray(kspace, np.complex64), (2, 1, 0))[:, :, None, :]


def ecalib(kspace: np.ndarray, num_maps: int = 2, calib_size: int = 24, crop: float = 0.8,
           threshold: float = 0.001, kernel_size: int = 6) -> tuple[np.ndarray, np.ndarray, float]:
    """``bart ecalib -m M -r calib_size -c crop -t threshold -k kernel_size``.

    Args:
        kspace: [C, H, W] complex, zero-filled where not measured.
    Returns: (maps [M, C, H, W] complex64, eigenvalues [M, H, W] float32, seconds).
    """
    with tempfile.TemporaryDirectory(prefix="bart_") as tmp:
        tmp = Path(tmp)
        write_cfl(tmp / "k", _to_bart_kspace(kspace))
        t0 = time.perf_counter()
        _run(["ecalib", "-m", str(num_maps), "-r", str(calib_size), "-c", str(crop), "-t", str(threshold),
              "-k", str(kernel_size), str(tmp / "k"), str(tmp / "s"), str(tmp / "e")])
        seconds = time.perf_counter() - t0
        maps = read_cfl(tmp / "s").reshape(kspace.shape[2], kspace.shape[1], 1, kspace.shape[0], num_maps)
        eig = read_cfl(tmp / "e").reshape(kspace.shape[2], kspace.shape[1], 1, num_maps)
    maps = np.transpose(maps[:, :, 0], (3, 2, 1, 0))                  # [M, C, H, W]
    eig = np.transpose(np.abs(eig[:, :, 0]), (2, 1, 0)).astype(np.float32)
    return np.ascontiguousarray(maps), np.ascontiguousarray(eig), seconds


def pics(kspace: np.ndarray, maps: np.ndarray, regularization: str = "l2", lamda: float = 0.0,
         iterations: int = 30) -> tuple[np.ndarray, float]:
    """``bart pics -S [-l1|-l2 -r lamda] -i iterations``.

    Args:
        kspace: [C, H, W] complex, zero-filled where not measured (pics takes the sampling pattern from the zeros).
        maps: [M, C, H, W] complex (from :func:`ecalib`).
        regularization: "l1" (l1-wavelet, random cycle spinning) or "l2" (Tikhonov; ``lamda=0`` is plain SENSE by CG).
    Returns: (images [M, H, W] complex64, one per map set, in the input's units; seconds).
    """
    if regularization not in ("l1", "l2"):
        raise ValueError(f"regularization must be 'l1' or 'l2'; got {regularization!r}")
    M, C, H, W = maps.shape
    with tempfile.TemporaryDirectory(prefix="bart_") as tmp:
        tmp = Path(tmp)
        write_cfl(tmp / "k", _to_bart_kspace(kspace))
        write_cfl(tmp / "s", np.transpose(np.asarray(maps, np.complex64), (3, 2, 1, 0))[:, :, None])
        args = ["pics", "-S", "-i", str(iterations)]
        if lamda > 0:
            args += ["-" + regularization, "-r", str(lamda)]
        t0 = time.perf_counter()
        _run(args + [str(tmp / "k"), str(tmp / "s"), str(tmp / "x")])
        seconds = time.perf_counter() - t0
        x = read_cfl(tmp / "x").reshape(W, H, 1, 1, M)
    return np.ascontiguousarray(np.transpose(x[:, :, 0, 0], (2, 1, 0))), seconds
