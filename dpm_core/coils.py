"""Coil sensitivity maps (ESPIRiT from the ACS block) and coil preprocessing.

Layouts (DESIGN.md §2):
    k-space  [S, C, H, W] complex64   S slices, C coils, ky = H (phase encode), kx = W (readout)
    maps     [S, M, C, H, W] complex64  M = 1 or 2 ESPIRiT map sets (soft-SENSE, see :mod:`dpm_core.operators`)
    eigvals  [S, M, H, W] float32       ESPIRiT eigenvalue of each map set (1 inside the support, ~0 outside)
    mask     1-D phase-encode mask [H] (bool), or [S, 1, H, 1]

ESPIRiT (Uecker et al., MRM 71:990, 2014), as sigpy's ``EspiritCalib`` computes it:
    1. calibration block: the centred n x n block of k-space, n = the ACS width (square, like sigpy and BART);
    2. calibration matrix of all kernel_width x kernel_width patches, [patches, C * k * k]; SVD; keep the right
       singular vectors v_j with sigma_j > threshold * sigma_max (the "signal space" kernels);
    3. image-space operator per pixel r: AHA(r) = (N / k^2) sum_j a_j(r) a_j(r)^H with
       a_j = ifft2c(zero-padded kernel j) (a C x C Hermitian matrix, eigenvalues in [0, 1]);
    4. the maps are the eigenvectors of AHA(r) with eigenvalue ~ 1; pixels where the eigenvalue is <= ``crop`` are 0.
    With M = 2 the second eigenvector is the second map set; it carries energy only where two image positions share
    one pixel, i.e. where anatomy outside a too-small FOV folds in (DESIGN.md §2).
    5. the basis of the M-map subspace, as ``ecalib`` returns it (:func:`map_set_basis`): where two eigenvalues nearly
       coincide (the overlap of a fold, both near 1) the eigenvectors are ill-conditioned and turn from pixel to
       pixel; ecalib's orthogonal iteration keeps a basis that follows the subspace instead. The soft-SENSE forward
       model depends on the subspace only; a prior on each map-set image (L1-wavelet, the DPM) depends on the basis.

Two implementations with one convention:
    - :func:`espirit_sigpy`: the reference. M = 1 is ``sigpy.mri.app.EspiritCalib`` itself (100 power iterations per
      pixel on the full-resolution AHA). For M = 2 sigpy has no API; we build the same full-resolution AHA with sigpy's
      own primitives (``array_to_blocks``, ``resize``, ``ifft``: the same code as ``EspiritCalib``) and take the two
      leading eigenvectors of every pixel with ``numpy.linalg.eigh`` (exact, no power iteration), then step 5.
    - :func:`espirit_fast`: torch, batched over slices, CPU or CUDA. AHA(r) is a trigonometric polynomial in r with
      frequencies |Delta| <= k - 1 (the autocorrelation of the k x k kernels), so its (2k-1)^2 Fourier coefficients are
      computed once from the kernels with small FFTs, AHA is evaluated exactly on a coarse grid (``grid_size`` points
      per axis), ``torch.linalg.eigh`` gives the eigenvectors there, they are phase-aligned, linearly interpolated
      (periodic) to full resolution, renormalized and cropped with the interpolated eigenvalue.
Phase convention (both): every map set is normalized to sum_c |S_mc|^2 = 1 inside its support and its phase is
relative to a virtual body coil: sum_c conj(u_c) S_mc(r) is real and >= 0, where u is the dominant eigenvector of the
ACS coil covariance (u_0 made real positive). Maps are therefore comparable pixel by pixel between implementations.

Preprocessing (torch, batched, any device): :func:`remove_readout_oversampling`, :func:`noise_covariance`,
:func:`whitening_matrix`, :func:`prewhiten`, :func:`coil_compress`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .fft import ifft2c
from .masks import DEFAULT_NUM_ACS, acs_of, acs_slice, phase_encode_mask

__all__ = [
    "MAX_CALIB_WIDTH", "DEFAULT_THRESHOLD", "DEFAULT_CROP", "DEFAULT_KERNEL_WIDTH", "DEFAULT_GRID_SIZE",
    "DEFAULT_REFINE_ITERS", "SECOND_MAP_ENERGY_THRESHOLD",
    "MAP_BASIS_ITERATIONS", "calibration_width", "calibration_block", "virtual_coil", "normalize_map_phase",
    "map_set_basis",
    "espirit_sigpy", "espirit_fast", "estimate_coil_maps", "auto_coil_maps", "choose_num_maps", "second_map_energy",
    "needs_second_map",
    "remove_readout_oversampling", "noise_covariance", "whitening_matrix", "prewhiten", "coil_compress",
]

# ESPIRiT settings as BART's ``ecalib`` (0.8.00, src/calib/calib.c) uses them by default, so that our maps and BART's
# agree and BART stays the yardstick: calibration region at most 24 x 24 (``-r 24``), kernels kept while
# sigma_j / sigma_0 > sqrt(0.001) (``-t 0.001`` is a threshold on sigma^2), hard crop at eigenvalue 0.8 (``-c 0.8``),
# 6 x 6 kernels (``-k 6``).
MAX_CALIB_WIDTH = 24
DEFAULT_THRESHOLD = math.sqrt(0.001)
DEFAULT_CROP = 0.8
DEFAULT_KERNEL_WIDTH = 6
# espirit_fast: coarse eigen grid points per axis and subspace iterations per refined pixel (speed only: the refined
# maps are exact ESPIRiT maps up to the iteration's convergence, tests/test_coils.py)
DEFAULT_GRID_SIZE = 32
DEFAULT_REFINE_ITERS = 10
# ecalib's orthogonal iterations per pixel (calib.c: num_orthiter = 30), which set its map-set basis (map_set_basis)
MAP_BASIS_ITERATIONS = 30
# second_map_energy above this: folded (real slice: 0.0000 unfolded, >= 0.070 folded; unfolded phantoms up to 0.032)
SECOND_MAP_ENERGY_THRESHOLD = 0.05


# ---------------------------------------------------------------------------------------------------------------------
# Input checks and the calibration block.

def _as_kspace(kspace, name: str = "kspace") -> torch.Tensor:
    k = torch.as_tensor(kspace)
    if k.ndim != 4 or not k.is_complex():
        raise ValueError(f"{name} must be a complex tensor [S, C, H, W]; got shape {tuple(k.shape)} dtype {k.dtype}. "
                         "Add a leading slice axis for a single slice (kspace[None]).")
    return k.to(torch.complex64)


def calibration_width(kspace_shape, mask=None, num_acs: int | None = None) -> int:
    """Width n of the square, centred calibration block used by both ESPIRiT implementations.

    Args:
        kspace_shape: (S, C, H, W).
        mask: 1-D phase-encode mask. The block is the widest n x n block centred on (H // 2, W // 2) (sigpy's
            ``resize`` centring) whose rows lie in the contiguous measured run around H // 2
            (:func:`dpm_core.masks.find_acs_lines`), capped at ``num_acs`` if given, else at :data:`MAX_CALIB_WIDTH`.
            None: k-space is fully sampled and n = ``num_acs`` (default :data:`dpm_core.masks.DEFAULT_NUM_ACS`).
        num_acs: see ``mask``.
    """
    _, _, H, W = kspace_shape
    if mask is None:
        n = int(num_acs or DEFAULT_NUM_ACS)
    else:
        rows = acs_of(mask, H)
        # Centred block [H//2 - n//2, H//2 - n//2 + n) must fit in [rows.start, rows.stop).
        n = rows.stop - rows.start
        while n > 0 and not (H // 2 - n // 2 >= rows.start and H // 2 - n // 2 + n <= rows.stop):
            n -= 1
        n = min(n, int(num_acs) if num_acs else MAX_CALIB_WIDTH)
    n = min(n, H, W)
    return n


def calibration_block(kspace: torch.Tensor, width: int) -> torch.Tensor:
    """The centred ``width`` x ``width`` k-space block. [S, C, H, W] -> [S, C, n, n] (same centring as sigpy.resize)."""
    H, W = kspace.shape[-2:]
    y0, x0 = H // 2 - width // 2, W // 2 - width // 2
    return kspace[..., y0:y0 + width, x0:x0 + width]


def _check_espirit_args(width: int, kernel_width: int, threshold: float, crop: float, num_maps: int) -> None:
    if num_maps not in (1, 2):
        raise ValueError(f"num_maps must be 1 or 2; got {num_maps!r}")
    if kernel_width < 1 or width < kernel_width + 1:
        raise ValueError(f"the calibration block is {width} lines wide, too narrow for kernel_width={kernel_width}; "
                         "acquire more ACS lines (24 is usual) or lower kernel_width")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1) (fraction of the largest singular value); got {threshold}")
    if not 0 <= crop < 1:
        raise ValueError(f"crop must be in [0, 1) (eigenvalue cut-off); got {crop}")


def virtual_coil(calib: torch.Tensor) -> torch.Tensor:
    """Virtual body coil weights u [S, C] complex64: the dominant eigenvector of the calibration-block coil covariance,
    with u_0 real and >= 0. calib: [S, C, ...] complex."""
    S, C = calib.shape[:2]
    x = calib.reshape(S, C, -1).to(torch.complex128)
    _, vecs = torch.linalg.eigh(x @ x.conj().transpose(1, 2))       # ascending eigenvalues
    u = vecs[..., -1]                                               # [S, C]
    u = u * torch.exp(-1j * torch.angle(u[:, :1]))
    return u.to(torch.complex64)


def _vector_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis of a complex [..., C] tensor, kept as [..., 1].

    The sum of squares of the real view: ``torch.linalg.vector_norm`` on complex input is ~16x slower on the CPU
    (torch 2.13: 8.5 against 0.5 ms for 40,000 pixels x 8 coils), and it made a third of the map estimate.
    """
    return torch.view_as_real(v.resolve_conj()).square().sum((-1, -2)).sqrt().unsqueeze(-1)


def normalize_map_phase(maps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Rotate each pixel of each map set so that sum_c conj(u_c) S_mc is real >= 0. maps [S, M, C, H, W], u [S, C]."""
    ref = torch.einsum("sc,smchw->smhw", u.conj().to(maps.dtype), maps)           # [S, M, H, W]
    mag = ref.abs()
    rot = torch.where(mag > 0, ref.conj() / mag.clamp_min(1e-30), torch.ones_like(ref))
    return maps * rot.unsqueeze(2)


def map_set_basis(vecs: torch.Tensor, eigenvalues: torch.Tensor,
                  iterations: int = MAP_BASIS_ITERATIONS) -> torch.Tensor:
    """The orthonormal basis of each pixel's M-map ESPIRiT subspace that BART's ``ecalib`` returns.

    ecalib finds the maps by orthogonal iteration: ``iterations`` products with AHA(r) from the unit vectors of coils
    M - 1, ..., 0, Gram-Schmidt in that order (its map m is the iterate started from coil M - 1 - m). Within the
    subspace of the M leading eigenvectors V that is Q R = V Λ^n Vᴴ E, E = [e_(M-1), ..., e_0], which this computes.
    Where the eigenvalues are well apart Λ^n separates them and Q are the eigenvectors (up to phase); where they nearly
    coincide — in a fold's overlap both are ~1, and the exact eigenvectors turn from pixel to pixel — Q stays the
    projection of the fixed start vectors, which follows the subspace smoothly. The forward model sees only the
    subspace; a prior on each map-set image sees the basis: on the held-out synthetic folded scans of
    benchmarks/bench_real.py our L1-wavelet went 0.0510 -> 0.0433 NRMSE (synth0, BART PICS 0.0445) with this basis
    instead of the eigenvectors (docs/coils.md).

    Args:
        vecs: [..., C, M] complex, orthonormal eigenvectors (columns), eigenvalues descending.
        eigenvalues: [..., M] real, >= 0.
    Returns: [..., C, M], the eigenvectors themselves for M = 1 and where a start vector has no component in the
        subspace (phases are set afterwards by :func:`normalize_map_phase`).
    """
    M = vecs.shape[-1]
    if M == 1:
        return vecs
    start = torch.arange(M - 1, -1, -1, device=vecs.device)
    # Z = Λ^n Vᴴ E in subspace coordinates [..., M, M]: (Vᴴ e_k)_m = conj(V[k, m]).
    weights = eigenvalues.clamp_min(0).to(vecs.real.dtype) ** iterations                 # [..., M]
    Z = weights[..., :, None] * vecs[..., start, :].conj().transpose(-1, -2)
    scale = weights[..., :1].clamp_min(torch.finfo(weights.dtype).tiny)                  # [..., 1]
    columns, degenerate = [], torch.zeros(Z.shape[:-2], dtype=torch.bool, device=Z.device)
    for j in range(M):
        z = Z[..., j]
        for q in columns:
            z = z - (q.conj() * z).sum(-1, keepdim=True) * q
        norm = _vector_norm(z)
        degenerate |= (norm <= 1e-4 * scale)[..., 0]
        columns.append(z / norm.clamp_min(torch.finfo(norm.dtype).tiny))
    basis = vecs @ torch.stack(columns, -1)
    return torch.where(degenerate[..., None, None], vecs, basis)


# ---------------------------------------------------------------------------------------------------------------------
# Reference: sigpy.

def espirit_sigpy(kspace, mask=None, num_acs: int | None = None, kernel_width: int = DEFAULT_KERNEL_WIDTH,
                  threshold: float = DEFAULT_THRESHOLD, crop: float = DEFAULT_CROP, num_maps: int = 1,
                  max_iter: int = 100, return_eigenvalues: bool = False):
    """ESPIRiT maps with sigpy (the reference implementation), one slice at a time on the CPU.

    Args:
        kspace: [S, C, H, W] complex (torch or numpy), zero-filled where not measured.
        mask: 1-D phase-encode mask [H] (or [S, 1, H, 1]); None: fully sampled, calibrate on the central ``num_acs``.
        num_acs: calibration width (see :func:`calibration_width`).
        kernel_width: ESPIRiT kernel size k (k x k).
        threshold: keep singular vectors with sigma > threshold * sigma_max.
        crop: zero the maps where the eigenvalue is <= crop.
        num_maps: 1 (``sigpy.mri.app.EspiritCalib``, power method, ``max_iter`` iterations) or 2 (sigpy's AHA, then
            ``numpy.linalg.eigh`` per pixel for the two leading eigenvectors, in ecalib's basis:
            :func:`map_set_basis`).
        return_eigenvalues: also return the eigenvalue maps.
    Returns: maps [S, M, C, H, W] complex64 on the input's device (and eigenvalues [S, M, H, W] float32).
    """
    import sigpy as sp
    import sigpy.mri as mr

    k = _as_kspace(kspace)
    S, C, H, W = k.shape
    n = calibration_width(k.shape, mask, num_acs)
    _check_espirit_args(n, kernel_width, threshold, crop, num_maps)
    k_np = k.detach().cpu().numpy()
    u = virtual_coil(calibration_block(k, n).cpu())
    maps = np.zeros((S, num_maps, C, H, W), np.complex64)
    eigvals = np.zeros((S, num_maps, H, W), np.float32)
    for s in range(S):
        if num_maps == 1:
            app = mr.app.EspiritCalib(k_np[s], calib_width=n, thresh=threshold, kernel_width=kernel_width, crop=crop,
                                      max_iter=max_iter, output_eigenvalue=True, show_pbar=False)
            mps, ev = app.run()
            maps[s, 0] = mps
            eigvals[s, 0] = np.abs(ev).reshape(H, W)
            continue
        # num_maps == 2: the AHA of EspiritCalib.__init__ (same sigpy calls), then exact eigenvectors per pixel.
        calib = sp.resize(k_np[s], [C, n, n])
        mat = sp.array_to_blocks(calib, [kernel_width] * 2, [1, 1])
        mat = mat.reshape([C, -1, kernel_width ** 2]).transpose([1, 0, 2]).reshape([-1, C * kernel_width ** 2])
        _, sv, vh = np.linalg.svd(mat, full_matrices=False)
        vh = vh[sv > threshold * sv.max(), :]
        kernels = vh.reshape([len(vh), C, kernel_width, kernel_width])
        aha = np.zeros((H, W, C, C), dtype=np.complex64)
        for kernel in kernels:
            img_kernel = sp.ifft(sp.resize(kernel, (C, H, W)), axes=(-2, -1))      # [C, H, W]
            a = np.moveaxis(img_kernel, 0, -1)                                      # [H, W, C]
            aha += a[..., :, None] * a[..., None, :].conj()
        aha *= H * W / kernel_width ** 2
        ev, vecs = np.linalg.eigh(aha)                                              # ascending
        ev, vecs = ev[..., ::-1][..., :2].copy(), vecs[..., ::-1][..., :2].copy()   # the two leading, descending
        vecs = map_set_basis(torch.from_numpy(vecs), torch.from_numpy(ev)).numpy()  # [H, W, C, 2]
        for m in range(2):
            eigvals[s, m] = ev[..., m]
            maps[s, m] = np.moveaxis(vecs[..., m], -1, 0) * (ev[..., m] > crop)
    maps_t = normalize_map_phase(torch.from_numpy(maps), u).to(k.device)
    if return_eigenvalues:
        return maps_t, torch.from_numpy(eigvals).to(k.device)
    return maps_t


# ---------------------------------------------------------------------------------------------------------------------
# Fast torch ESPIRiT.

def _signal_kernels(calib: torch.Tensor, kernel_width: int, threshold: float) -> torch.Tensor:
    """Signal-space kernels of the calibration matrix. calib [S, C, n, n] -> [S, R, C, k, k] (dropped ones zeroed).

    The right singular vectors come from ``eigh`` of the smaller Gram matrix of the calibration matrix (cheaper and,
    on a loaded CPU, far steadier than ``svd``): sigma_j^2 are its eigenvalues, v_j^H = u_j^H mat / sigma_j.
    """
    S, C, n, _ = calib.shape
    k = kernel_width
    blocks = calib.unfold(2, k, 1).unfold(3, k, 1)                          # [S, C, nb, nb, k, k]
    nb = blocks.shape[2]
    mat = blocks.permute(0, 2, 3, 1, 4, 5).reshape(S, nb * nb, C * k * k)   # rows: patches; columns (c, ky, kx)
    if mat.shape[1] <= mat.shape[2]:
        ev, U = torch.linalg.eigh(mat @ mat.conj().transpose(1, 2))          # [S, P], [S, P, P] ascending
        sv = ev.clamp_min(0).sqrt()
        vh = (U.conj().transpose(1, 2) @ mat) / sv.clamp_min(1e-30).unsqueeze(-1).to(mat.dtype)   # [S, P, C k k]
    else:
        ev, V = torch.linalg.eigh(mat.conj().transpose(1, 2) @ mat)          # [S, Ckk, Ckk]
        sv = ev.clamp_min(0).sqrt()
        vh = V.conj().transpose(1, 2)
    keep = (sv > threshold * sv.max(dim=1, keepdim=True).values).to(vh.dtype)   # [S, R]
    return (vh * keep.unsqueeze(-1)).reshape(S, -1, C, k, k)


def _aha_coefficients(kernels: torch.Tensor) -> torch.Tensor:
    """Fourier coefficients G [S, C, C, 2k-1, 2k-1] of the ESPIRiT operator:

        AHA(r)[c, d] = sum_D G[c, d, D] exp(i 2 pi D . (r - N//2) / N),   D in [-(k-1), k-1]^2,

    G[c, d, D] = (1/k^2) sum_j sum_p K_j[c, p] conj(K_j[d, p - D]) (kernel cross-correlation, computed with FFTs of
    size 2k, large enough that the circular correlation does not wrap). This equals sigpy's
    (N/k^2) sum_j ifft(resize(K_j)) ifft(resize(K_j))^H at every pixel.
    """
    S, R, C, k, _ = kernels.shape
    L = 2 * k
    kh = torch.fft.fft2(kernels, s=(L, L))                                 # [S, R, C, L, L]
    gh = torch.einsum("srcyx,srdyx->scdyx", kh, kh.conj())                  # [S, C, C, L, L]
    g = torch.fft.ifft2(gh)                                                 # circular cross-correlation, index D mod L
    idx = torch.arange(-(k - 1), k, device=kernels.device) % L
    G = g[..., idx, :][..., idx] / (k * k)
    # G[c, d, D] = conj(G[d, c, -D]) holds exactly (AHA(r) is Hermitian); imposing it on these (2k-1)^2 coefficients
    # removes the FFTs' rounding, so no evaluation of AHA has to be symmetrized (at every pixel that cost 1/6 of the
    # map estimate: 0.16 s for 256 x 256 x 16 coils).
    return 0.5 * (G + G.transpose(1, 2).flip(-2, -1).conj())


def _eval_aha(G: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """AHA at pixel coordinates ry [ny] x rx [nx] (may be fractional): [S, ny, nx, C, C]."""
    k = (G.shape[-1] + 1) // 2
    d = torch.arange(-(k - 1), k, dtype=torch.float64, device=G.device)
    ey = torch.exp(2j * math.pi * d[None, :] * (ry[:, None] - H // 2) / H).to(G.dtype)   # [ny, 2k-1]
    ex = torch.exp(2j * math.pi * d[None, :] * (rx[:, None] - W // 2) / W).to(G.dtype)   # [nx, 2k-1]
    t = torch.einsum("scdab,xb->scdax", G, ex)                                           # [S, C, C, 2k-1, nx]
    return torch.einsum("scdax,ya->syxcd", t, ey)


def _interp_weights(n: int, N: int, device):
    """Periodic linear interpolation from n samples at r_j = j N / n to pixels r = 0..N-1: (j0, j1, w1), each [N]."""
    t = torch.arange(N, dtype=torch.float64, device=device) * n / N
    j0 = torch.floor(t)
    w1 = (t - j0).to(torch.float32)
    j0 = j0.long() % n
    return j0, (j0 + 1) % n, w1


def _polar_unitary(A: torch.Tensor) -> torch.Tensor:
    """Unitary polar factor Q = A (A^H A)^(-1/2) of [..., M, M] matrices, M = 1 or 2, in closed form.

    For M = 2, sqrt(B) = (B + s I) / sqrt(tr B + 2 s) with s = sqrt(det B), and det sqrt(B) = s. Where A is (nearly)
    singular the factor is not unique; there the diagonal phases of A are used (per-column phase alignment).
    """
    diag_phase = torch.diag_embed(torch.diagonal(A, dim1=-2, dim2=-1))
    diag_phase = diag_phase / diag_phase.abs().clamp_min(1e-30)
    if A.shape[-1] == 1:
        return diag_phase
    B = A.conj().transpose(-1, -2) @ A                                          # Hermitian PSD 2 x 2
    s = (B[..., 0, 0] * B[..., 1, 1] - B[..., 0, 1] * B[..., 1, 0]).real.clamp_min(0).sqrt()
    t = (B[..., 0, 0].real + B[..., 1, 1].real + 2 * s).clamp_min(1e-30).sqrt()
    eye = torch.eye(2, dtype=A.dtype, device=A.device)
    R = (B + s[..., None, None] * eye) / t[..., None, None]                     # sqrt(B)
    adj = torch.stack([torch.stack([R[..., 1, 1], -R[..., 0, 1]], -1),
                       torch.stack([-R[..., 1, 0], R[..., 0, 0]], -1)], -2)    # adj(R) = det(R) R^-1, det(R) = s
    Q = A @ adj / s.clamp_min(1e-30)[..., None, None]
    return torch.where((s > 1e-6)[..., None, None], Q, diag_phase)


def _orthonormalize(V: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt over the last axis (map sets) of [..., C, M], M = 1 or 2, with unit-norm columns."""
    v1 = V[..., 0] / _vector_norm(V[..., 0]).clamp_min(1e-12)
    if V.shape[-1] == 1:
        return v1.unsqueeze(-1)
    v2 = V[..., 1] - (v1.conj() * V[..., 1]).sum(-1, keepdim=True) * v1
    v2 = v2 / _vector_norm(v2).clamp_min(1e-12)
    return torch.stack([v1, v2], -1)


def _interpolate_eigenvectors(vecs: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Coarse eigenvectors [S, ny, nx, C, M] -> [S, H, W, C, M] by periodic bilinear interpolation.

    Eigenvectors carry an arbitrary phase (and, where eigenvalues coincide, an arbitrary basis of their subspace), so
    before blending, each of the three other corners of a pixel's cell is rotated onto the first corner with the
    orthogonal Procrustes solution (unitary polar factor of B^H A, an M x M matrix); then columns are
    re-orthonormalized.
    """
    S, ny, nx, C, M = vecs.shape
    y0, y1, wy = _interp_weights(ny, H, vecs.device)
    x0, x1, wx = _interp_weights(nx, W, vecs.device)
    wy, wx = wy[:, None, None, None], wx[None, :, None, None]
    a = vecs[:, y0[:, None], x0[None, :]]                                       # [S, H, W, C, M]
    out = a * ((1 - wy) * (1 - wx)).to(a.dtype)
    for yi, xi, w in ((y0, x1, (1 - wy) * wx), (y1, x0, wy * (1 - wx)), (y1, x1, wy * wx)):
        b = vecs[:, yi[:, None], xi[None, :]]
        b = b @ _polar_unitary(b.conj().transpose(-1, -2) @ a)
        out = out + b * w.to(a.dtype)
    return _orthonormalize(out)


def _cells_to_refine(ev: torch.Tensor, crop: float) -> torch.Tensor:
    """[S, ny, nx] bool: coarse cells (corner (j, i) to (j+1, i+1), periodic) whose pixels get the exact AHA.

    ev [S, M, ny, nx]. Every cell where some map's eigenvalue exceeds ``crop / 2`` at some corner: all pixels that can
    end up inside a map's support (the eigenvalue is a smooth function of position, so a pixel above ``crop`` has a
    corner above ``crop / 2``). Interpolated eigenvectors alone are not accurate enough there for two map sets: at
    nominal R = 6 on the real 96 x 96 slice, SENSE with 2-map sets interpolated from a 64-point grid has twice the
    error of SENSE with exact ones (benchmarks/results/folding.md).
    """
    shifts = ((0, 0), (1, 0), (0, 1), (1, 1))
    corners = torch.stack([torch.roll(ev, (-dy, -dx), dims=(-2, -1)) for dy, dx in shifts])      # [4, S, M, ny, nx]
    return (corners > crop / 2).any(0).any(1)


def _aha_at_pixels(G: torch.Tensor, pixels: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """AHA at full-resolution pixels [P, 3] (s, y, x) -> [P, C, C], one small matrix product per image row."""
    S, C = G.shape[:2]
    k = (G.shape[-1] + 1) // 2
    d = torch.arange(-(k - 1), k, dtype=torch.float64, device=G.device)
    ey = torch.exp(2j * math.pi * d[None, :] * (torch.arange(H, device=G.device)[:, None] - H // 2) / H).to(G.dtype)
    ex = torch.exp(2j * math.pi * d[None, :] * (torch.arange(W, device=G.device)[:, None] - W // 2) / W).to(G.dtype)
    T = torch.einsum("scdab,ya->sycdb", G, ey).reshape(S, H, C * C, -1)      # [S, H, C*C, 2k-1]: rows of AHA
    out = torch.empty(len(pixels), C * C, dtype=G.dtype, device=G.device)
    rows = pixels[:, 0] * H + pixels[:, 1]                                     # pixels come sorted (torch.nonzero)
    uniq, counts = torch.unique_consecutive(rows, return_counts=True)
    start = 0
    for row, count in zip(uniq.tolist(), counts.tolist()):
        sl = slice(start, start + count)
        out[sl] = (T[row // H, row % H] @ ex[pixels[sl, 2]].T).T              # [count, C*C]
        start += count
    return out.reshape(-1, C, C)


def _refine_eigen(A: torch.Tensor, X: torch.Tensor, iters: int):
    """Leading M eigenpairs of Hermitian A [P, C, C] by subspace iteration from X [P, C, M] plus Rayleigh-Ritz.

    Returns (eigenvalues [P, M] descending, eigenvectors [P, C, M]).
    """
    # Two iterations per product with A^2 (computed once): the subspace of ``iters`` products with A, with half the
    # orthonormalizations, which cost most. Eigenvalues lie in [0, 1], so nothing over- or underflows; a second map
    # matters only where lambda_2 > crop / 2 ... 1, so (lambda_2 / lambda_1)^2 >= 0.16 per step keeps its digits.
    A_squared = A @ A
    for _ in range(iters // 2):
        X = _orthonormalize(A_squared @ X)
    if iters % 2:
        X = _orthonormalize(A @ X)
    B = X.conj().transpose(-1, -2) @ A @ X                                       # [P, M, M]
    if X.shape[-1] == 1:
        return B[..., 0].real, X
    # Closed-form 2 x 2 Hermitian eigen decomposition (a batched LAPACK call per 2 x 2 matrix is slow on the CPU).
    a, d, b = B[..., 0, 0].real, B[..., 1, 1].real, 0.5 * (B[..., 0, 1] + B[..., 1, 0].conj())
    half, radius = 0.5 * (a + d), torch.sqrt((0.5 * (a - d)) ** 2 + b.abs() ** 2)
    # Eigenvector of half + radius: [lam - d, conj(b)] if a >= d else [b, lam - a] (no cancellation either way).
    lam = half + radius
    big = torch.where((a >= d)[..., None], torch.stack([(lam - d).to(b.dtype), b.conj()], -1),
                      torch.stack([b, (lam - a).to(b.dtype)], -1))
    big_norm = _vector_norm(big)
    v1 = big / big_norm.clamp_min(1e-30)
    v1 = torch.where(big_norm > 0, v1, torch.ones_like(v1) * torch.tensor(
        [1, 0], dtype=b.dtype, device=b.device))
    v2 = torch.stack([-v1[..., 1].conj(), v1[..., 0].conj()], -1)
    R = torch.stack([v1, v2], -1)                                                # [P, 2, 2], columns
    return torch.stack([half + radius, half - radius], -1), X @ R


def _coarse_eigen(k: torch.Tensor, mask, num_acs, kernel_width: int, threshold: float, crop: float, num_maps: int,
                  grid_size: int):
    """The ESPIRiT operator's Fourier coefficients and its leading eigenpairs on the coarse grid.

    k [S, C, H, W]. Returns (G [S, C, C, 2k-1, 2k-1], virtual coil u [S, C], eigenvalues ev [S, M, ny, nx]
    descending, eigenvectors [S, M, C, ny, nx]; the input's precision); ny x nx = min(grid_size, H) x min(grid_size, W).
    """
    S, C, H, W = k.shape
    n = calibration_width(k.shape, mask, num_acs)
    _check_espirit_args(n, kernel_width, threshold, crop, num_maps)
    if grid_size < 2 * kernel_width:
        raise ValueError(f"grid_size={grid_size} is too coarse for kernel_width={kernel_width}; "
                         f"use >= {2 * kernel_width}")
    calib = calibration_block(k, n)                                            # [S, C, n, n]
    u = virtual_coil(calib)                                                    # [S, C]
    G = _aha_coefficients(_signal_kernels(calib, kernel_width, threshold))     # [S, C, C, 2k-1, 2k-1]
    ny, nx = min(grid_size, H), min(grid_size, W)
    ry = torch.arange(ny, dtype=torch.float64, device=k.device) * (H / ny)
    rx = torch.arange(nx, dtype=torch.float64, device=k.device) * (W / nx)
    aha = _eval_aha(G, ry, rx, H, W)                                           # [S, ny, nx, C, C], exact
    ev, vecs = torch.linalg.eigh(aha)                                          # ascending
    ev = ev.flip(-1)[..., :num_maps].permute(0, 3, 1, 2)                       # [S, M, ny, nx]
    vecs = vecs.flip(-1)[..., :num_maps].permute(0, 4, 3, 1, 2)                # [S, M, C, ny, nx]
    return G, u, ev, vecs


def _interpolate_eigenvalues(ev: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Coarse eigenvalues [S, M, ny, nx] -> [S, M, H, W] float32 >= 0 by periodic bilinear interpolation."""
    ny, nx = ev.shape[-2:]
    y0, y1, wy = _interp_weights(ny, H, ev.device)
    x0, x1, wx = _interp_weights(nx, W, ev.device)
    wy, wx = wy[:, None], wx[None, :]
    eig = (ev[..., y0[:, None], x0[None, :]] * (1 - wy) * (1 - wx) + ev[..., y0[:, None], x1[None, :]] * (1 - wy) * wx
           + ev[..., y1[:, None], x0[None, :]] * wy * (1 - wx) + ev[..., y1[:, None], x1[None, :]] * wy * wx)
    return eig.float().clamp_min(0)


def espirit_fast(kspace, mask=None, num_acs: int | None = None, kernel_width: int = DEFAULT_KERNEL_WIDTH,
                 threshold: float = DEFAULT_THRESHOLD, crop: float = DEFAULT_CROP, num_maps: int = 1,
                 grid_size: int = DEFAULT_GRID_SIZE, refine: bool = True, refine_iters: int = DEFAULT_REFINE_ITERS,
                 return_eigenvalues: bool = False):
    """ESPIRiT maps in torch, batched over slices, on the input's device (CPU or CUDA).

    Same calibration and operator as :func:`espirit_sigpy`. The eigen decomposition runs on a coarse grid of
    ``grid_size`` x ``grid_size`` pixels (exact AHA there); the eigenvectors are interpolated (periodic linear) to
    H x W and, at every pixel that can lie inside a map's support, refined on the exact AHA of that pixel; with M = 2
    the map sets are then ecalib's basis of that subspace (:func:`map_set_basis`). The maps are therefore the exact
    ESPIRiT maps up to the subspace iteration's convergence (|<S_fast, S_sigpy>| >= 0.98 per pixel inside the object,
    see tests/test_coils.py), and SENSE with them matches SENSE with BART's maps.

    Args: as :func:`espirit_sigpy`, plus
        grid_size: coarse grid points per axis (min(grid_size, H) x min(grid_size, W)), the starting point of the
            refinement; it only sets the speed.
        refine: recompute every pixel of a coarse cell where some eigenvalue exceeds crop / 2 with the exact AHA at
            the pixel: ``refine_iters`` subspace iterations from the interpolated vectors, then Rayleigh-Ritz. Off:
            interpolated maps only (faster, and measurably worse for SENSE at high R).
    Returns: maps [S, M, C, H, W] complex64 (and eigenvalues [S, M, H, W] float32 if ``return_eigenvalues``).
    """
    k = _as_kspace(kspace)
    coarse = _coarse_eigen(k, mask, num_acs, kernel_width, threshold, crop, num_maps, grid_size)
    maps, eig = _maps_from_coarse(k, *coarse, crop, refine, refine_iters)
    if return_eigenvalues:
        return maps, eig
    return maps


def _maps_from_coarse(k: torch.Tensor, G: torch.Tensor, u: torch.Tensor, ev: torch.Tensor, vecs: torch.Tensor,
                      crop: float, refine: bool, refine_iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`espirit_fast` after its coarse grid (:func:`_coarse_eigen`): interpolation, refinement, ecalib's
    basis, phase convention and crop. Returns (maps [S, M, C, H, W] complex64, eigenvalues [S, M, H, W] float32)."""
    S, C, H, W = k.shape
    ny, nx = ev.shape[-2:]
    vecs = normalize_map_phase(vecs, u)                                        # a smooth gauge where it can be

    # Interpolate to H x W (phase/basis-aligned) -- the eigenvalues linearly.
    full = _interpolate_eigenvectors(vecs.permute(0, 3, 4, 2, 1), H, W)       # [S, H, W, C, M]
    eig = _interpolate_eigenvalues(ev, H, W)                                    # [S, M, H, W]
    y0, _, _ = _interp_weights(ny, H, k.device)
    x0, _, _ = _interp_weights(nx, W, k.device)

    # Exact AHA and iterated eigenvectors at every pixel that can lie inside a support.
    if refine and (ny < H or nx < W):
        cells = _cells_to_refine(ev, crop)                                     # [S, ny, nx]
        pixels = torch.nonzero(cells[:, y0[:, None], x0[None, :]])               # [P, 3] (s, y, x)
        if len(pixels):
            s_i, y_i, x_i = pixels.unbind(1)
            ev_p, vec_p = _refine_eigen(_aha_at_pixels(G, pixels, H, W), full[s_i, y_i, x_i], refine_iters)
            full[s_i, y_i, x_i] = vec_p.to(full.dtype)
            eig[s_i, :, y_i, x_i] = ev_p.float().clamp_min(0)

    # ecalib's basis of the map subspace where the crop keeps a map (elsewhere every map is zeroed below), the phase
    # convention, then crop on the eigenvalue.
    kept = eig[:, 0] > crop                                                    # [S, H, W]
    if full.shape[-1] > 1:
        full[kept] = map_set_basis(full[kept], eig.permute(0, 2, 3, 1)[kept])
    maps = normalize_map_phase(full.permute(0, 4, 3, 1, 2), u)                  # [S, M, C, H, W]
    maps = maps * (eig > crop).unsqueeze(2)
    return maps.to(torch.complex64), eig


def estimate_coil_maps(kspace, mask=None, method: str = "fast", num_maps: int | str = 1, **options) -> torch.Tensor:
    """ESPIRiT coil maps [S, M, C, H, W] complex64 by name.

    Args:
        kspace: [S, C, H, W] complex, zero-filled.
        mask: 1-D phase-encode mask [H] (or [S, 1, H, 1]); None for fully sampled k-space.
        method: "fast" (:func:`espirit_fast`, default, for inline use) or "sigpy" (:func:`espirit_sigpy`, reference).
        num_maps: 1, 2, or "auto": the count :func:`choose_num_maps` picks (the same for all slices;
            :func:`auto_coil_maps`, which also returns the energy that decided it).
        options: keyword arguments of the chosen implementation (num_acs, kernel_width, threshold, crop, ...).
    """
    funcs = {"fast": espirit_fast, "sigpy": espirit_sigpy}
    if method not in funcs:
        raise ValueError(f"unknown coil-map method {method!r}; use 'fast' or 'sigpy'")
    options.pop("return_eigenvalues", None)
    if num_maps == "auto":
        return auto_coil_maps(kspace, mask, method, **options)[0]
    return funcs[method](kspace, mask, num_maps=num_maps, **options)


def auto_coil_maps(kspace, mask=None, method: str = "fast", **options) -> tuple[torch.Tensor, torch.Tensor]:
    """ESPIRiT maps with as many map sets as :func:`choose_num_maps` picks, and the second-map energy [S] float32
    that decided it. The fast path takes the decision and the maps from one coarse calibration (the kernels, the AHA
    coefficients and the coarse eigen decomposition once instead of twice, about an eighth of the auto estimate); the
    maps equal ``estimate_coil_maps(..., num_maps=<that count>)`` exactly.

    Args: as :func:`estimate_coil_maps` without ``num_maps``.
    Returns: (maps [S, M, C, H, W] complex64, energy [S] float32).
    """
    if method != "fast":
        num_maps, energy = choose_num_maps(kspace, mask, **options)
        return estimate_coil_maps(kspace, mask, method, num_maps, **options), energy
    return _auto_fast(_as_kspace(kspace), mask, **options)


def _auto_fast(k: torch.Tensor, mask, num_acs: int | None = None, kernel_width: int = DEFAULT_KERNEL_WIDTH,
               threshold: float = DEFAULT_THRESHOLD, crop: float = DEFAULT_CROP,
               grid_size: int = DEFAULT_GRID_SIZE, refine: bool = True,
               refine_iters: int = DEFAULT_REFINE_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    G, u, ev, vecs = _coarse_eigen(k, mask, num_acs, kernel_width, threshold, crop, 2, grid_size)
    num_maps, energy = _second_map_decision(k, mask, ev, crop, kernel_width)
    maps, _ = _maps_from_coarse(k, G, u, ev[:, :num_maps], vecs[:, :num_maps], crop, refine, refine_iters)
    return maps, energy


def choose_num_maps(kspace, mask=None, num_acs: int | None = None, kernel_width: int = DEFAULT_KERNEL_WIDTH,
                    threshold: float = DEFAULT_THRESHOLD, crop: float = DEFAULT_CROP,
                    grid_size: int = DEFAULT_GRID_SIZE,
                    **map_options) -> tuple[int, torch.Tensor]:
    """How many ESPIRiT map sets the scan needs: (1 or 2, second-map energy [S] float32), before any map is made.

    2 for every slice when some slice's second-map energy exceeds :data:`SECOND_MAP_ENERGY_THRESHOLD` (one forward
    model per volume), else 1 (soft-SENSE with an empty second map would only double the DPM's network evaluations).
    The energy is :func:`second_map_energy` with the second map's support taken from the ESPIRiT eigenvalues of
    :func:`espirit_fast`'s coarse grid, interpolated: on the 30 cases of benchmarks/results/folding.md and real.md
    (real slice, its folds to 88 ... 48 rows, 12 synthetic scans) within 1.3 % of the energy of the full two-map
    estimate wherever it exceeds 0.01 (0.00076 against 0.00086 at 88 rows), and the same decision on all. Deciding
    first spares the second map set on unfolded scans (two map sets take twice the time of one: 0.349 against
    0.146 s for 256 x 256 x 8 coils, benchmarks/results/coils.md).

    Args: kspace [S, C, H, W] zero-filled, mask as :func:`estimate_coil_maps`; the calibration settings as
        :func:`espirit_fast`; map_options: the estimator's other options (refine, max_iter, ...), which do not enter
        the decision.
    """
    k = _as_kspace(kspace)
    _, _, ev, _ = _coarse_eigen(k, mask, num_acs, kernel_width, threshold, crop, 2, grid_size)
    return _second_map_decision(k, mask, ev, crop, kernel_width)


def _second_map_decision(k: torch.Tensor, mask, ev: torch.Tensor, crop: float, kernel_width: int
                         ) -> tuple[int, torch.Tensor]:
    """:func:`choose_num_maps` from the coarse eigenvalues ev [S, 2, ny, nx]: (1 or 2, energy [S] float32). A
    single-coil scan (ev [S, 1, ny, nx]) has no second map set: 1, energy 0."""
    H, W = k.shape[-2:]
    if ev.shape[1] < 2:
        return 1, torch.zeros(k.shape[0], dtype=torch.float32, device=k.device)
    support = _interpolate_eigenvalues(ev[:, 1:], H, W)[:, 0] > crop                # [S, H, W]
    energy = _support_energy(support, k, mask, kernel_width)
    return (2 if bool((energy > SECOND_MAP_ENERGY_THRESHOLD).any()) else 1), energy


def second_map_energy(maps: torch.Tensor, kspace, mask=None, kernel_width: int = DEFAULT_KERNEL_WIDTH) -> torch.Tensor:
    """Fraction of the calibration image's energy inside the second ESPIRiT map's support, per slice: [S] float32.

    The second map set is non-zero where its eigenvalue exceeds the crop, i.e. where the calibration data need two
    image positions per pixel: anatomy from outside a too-small phase FOV folded in. Weighting that support by the
    energy of the low-resolution image (root-sum-of-squares of the zero-filled ACS lines) ignores the spurious
    second-eigenvalue pixels at the edge of the object and in the background that unfolded scans show. On the real
    16-coil slice: 0 unfolded, 0.0009 with the phase FOV cut to 88 of 96 rows (the object spans 80), 0.070 at 80,
    0.24 at 72, 0.71 at 48 (benchmarks/results/folding.md). 0 for M = 1.

    Args:
        maps: [S, M, C, H, W].
        kspace: [S, C, H, W] the maps were estimated from (zero-filled).
        mask: its 1-D phase-encode mask [H]; None: fully sampled (the central 24 lines are used).
        kernel_width: the ESPIRiT kernel size the maps were estimated with (sets the readout-edge margin).
    """
    if maps.ndim != 5:
        raise ValueError(f"maps must be [S, M, C, H, W]; got shape {tuple(maps.shape)}")
    if maps.shape[1] < 2:
        return torch.zeros(maps.shape[0], device=maps.device)
    return _support_energy(maps[:, 1].abs().sum(dim=1) > 0, kspace, mask, kernel_width)


def _support_energy(support: torch.Tensor, kspace, mask, kernel_width: int) -> torch.Tensor:
    """[S] float32: the ACS image's energy inside ``support`` [S, H, W] bool (:func:`second_map_energy`)."""
    k = _as_kspace(kspace).to(support.device)
    S, C, H, W = k.shape
    rows = acs_slice(H, DEFAULT_NUM_ACS) if mask is None else acs_of(mask, H)
    acs_only = torch.zeros_like(k)
    acs_only[:, :, rows] = k[:, :, rows]
    energy = (ifft2c(acs_only).abs() ** 2).sum(dim=1)                          # [S, H, W]
    second = support.to(energy.dtype)
    # Readout never folds (it is oversampled and cropped), but a head cut by the readout FOV wraps around in
    # ESPIRiT's periodic model and gets a second map within half a kernel footprint of the readout edges
    # (W * kernel_width / (2 * calibration width) columns: 16 of 128 on a synthetic head cut at the edge). Those
    # columns do not count.
    margin = math.ceil(W * kernel_width / (2 * calibration_width(k.shape, mask)))
    second[..., :margin] = 0
    second[..., W - margin:] = 0
    return ((energy * second).flatten(1).sum(1) / energy.flatten(1).sum(1).clamp_min(1e-30)).float()


def needs_second_map(maps: torch.Tensor, kspace, mask=None, threshold: float = SECOND_MAP_ENERGY_THRESHOLD
                     ) -> torch.Tensor:
    """[S] bool: the second map set holds signal (folded anatomy), so 1-map SENSE would break (DESIGN.md §2)."""
    return second_map_energy(maps, kspace, mask) > threshold


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing.

def remove_readout_oversampling(kspace: torch.Tensor, factor: int = 2, size: int | None = None) -> torch.Tensor:
    """Keep the central 1/``factor`` of the readout FOV (or its central ``size`` pixels).
    [..., W] complex -> [..., W // factor] (or [..., size]) complex.

    Centred orthonormal 1-D inverse FFT along the readout (last axis), crop the centre Wn pixels (start
    W//2 - Wn//2, the :mod:`dpm_core.fft` centring), forward FFT. Image pixel values are preserved (orthonormal both
    ways), so images from the result equal the centre of the images from the input.
    """
    kspace = torch.as_tensor(kspace)
    if not kspace.is_complex():
        raise ValueError(f"kspace must be complex; got {kspace.dtype}")
    W = kspace.shape[-1]
    if size is None:
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer; got {factor}")
        if W % factor:
            raise ValueError(f"readout length W={W} is not divisible by the oversampling factor {factor}")
        Wn = W // factor
    else:
        if not 0 < size <= W:
            raise ValueError(f"size {size} must be within 1..{W} (the readout length of kspace)")
        Wn = int(size)
    x = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(kspace, dim=-1), dim=-1, norm="ortho"), dim=-1)
    x = x[..., W // 2 - Wn // 2: W // 2 - Wn // 2 + Wn]
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(x, dim=-1), dim=-1, norm="ortho"), dim=-1)


def noise_covariance(noise: torch.Tensor, dwell_time_ratio: float = 1.0) -> torch.Tensor:
    """Noise covariance [C, C] complex from noise samples [C, N] (or [C, ...], flattened).

    Psi = X X^H / N (noise is zero-mean; no mean is removed), times ``dwell_time_ratio`` = noise dwell time /
    acquisition dwell time (noise variance scales with bandwidth, as in Gadgetron's NoiseAdjustGadget).
    """
    x = torch.as_tensor(noise)
    if x.ndim < 2 or not x.is_complex():
        raise ValueError(f"noise must be complex [C, N]; got shape {tuple(x.shape)} dtype {x.dtype}")
    x = x.reshape(x.shape[0], -1).to(torch.complex128)
    if x.shape[1] < x.shape[0]:
        raise ValueError(f"need at least as many noise samples as coils to estimate a covariance; got {x.shape[1]} "
                         f"samples for {x.shape[0]} coils")
    cov = (x @ x.conj().T) / x.shape[1] * dwell_time_ratio
    return cov.to(torch.complex64)


def whitening_matrix(cov: torch.Tensor) -> torch.Tensor:
    """Prewhitening matrix W [C, C] = L^-1 with cov = L L^H (Cholesky), so W cov W^H = I."""
    cov = torch.as_tensor(cov)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [C, C] matrix; got shape {tuple(cov.shape)}")
    c = cov.to(torch.complex128)
    c = 0.5 * (c + c.conj().T)
    L, info = torch.linalg.cholesky_ex(c)
    if int(info) != 0:
        raise ValueError("the noise covariance is not positive definite (a dead or duplicated coil channel?); "
                         "drop the channel or use more noise samples")
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    return torch.linalg.solve_triangular(L, eye, upper=False).to(torch.complex64)


def prewhiten(kspace: torch.Tensor, whitening: torch.Tensor, coil_dim: int = -3) -> torch.Tensor:
    """Apply the whitening matrix over the coil axis: y_w[c] = sum_d W[c, d] y[d].

    Args:
        kspace: complex, coil axis at ``coil_dim`` ([S, C, H, W] and [C, H, W] with the default -3; noise [C, N] with
            coil_dim=0).
        whitening: [C, C] from :func:`whitening_matrix`.
    """
    kspace = torch.as_tensor(kspace)
    C = kspace.shape[coil_dim]
    if tuple(whitening.shape) != (C, C):
        raise ValueError(f"whitening matrix is {tuple(whitening.shape)} but k-space has {C} coils on axis {coil_dim}")
    x = kspace.movedim(coil_dim, -1)
    y = x @ whitening.to(device=kspace.device, dtype=kspace.dtype).T
    return y.movedim(-1, coil_dim)


def coil_compress(kspace: torch.Tensor, num_virtual: int, mask=None):
    """SVD (PCA) coil compression per slice to ``num_virtual`` virtual coils.

    The compression matrix A [S, V, C] holds the V leading eigenvectors (conjugated) of the coil covariance of the
    measured lines (all lines if ``mask`` is None, else the lines the 1-D mask marks), so y_v = A y keeps the most
    signal energy. Apply the same A to coil maps estimated before compression (S_v = A S), or estimate maps after.

    Args:
        kspace: [S, C, H, W] complex.
        num_virtual: V, 1 <= V <= C.
        mask: 1-D phase-encode mask [H] or None.
    Returns: (compressed k-space [S, V, H, W], A [S, V, C]).
    """
    k = _as_kspace(kspace)
    S, C, H, W = k.shape
    if not 1 <= num_virtual <= C:
        raise ValueError(f"num_virtual must be between 1 and the number of coils {C}; got {num_virtual}")
    rows = slice(None) if mask is None else torch.as_tensor(phase_encode_mask(mask, H, common=True), device=k.device)
    x = k[:, :, rows].reshape(S, C, -1).to(torch.complex128)
    _, vecs = torch.linalg.eigh(x @ x.conj().transpose(1, 2))                 # ascending
    A = vecs.flip(-1)[..., :num_virtual].conj().transpose(1, 2)               # [S, V, C]
    A = A * torch.exp(-1j * torch.angle(A[..., :1]))                          # deterministic phase
    A = A.to(torch.complex64)
    return torch.einsum("svc,schw->svhw", A, k), A
