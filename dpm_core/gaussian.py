"""An exact Gaussian image prior: its denoiser and the closed-form SENSE posterior, to validate samplers.

For a Gaussian prior every quantity a diffusion sampler approximates is known in closed form, so a sampler that is
right must reproduce the posterior mean (and, for Langevin samplers, the covariance) within Monte-Carlo error.
(DESIGN.md §3, "Correctness without training".)

Complex Gaussian conventions (stated once, used everywhere in this module and in :mod:`dpm_core.samplers`):
- Prior: x ~ CN(0, Sigma), circular: E[x x^H] = Sigma, E[x x^T] = 0; real and imaginary parts are independent with
  covariance Sigma / 2 each. Sigma is stationary: diagonal in the centred orthonormal Fourier basis,
  Sigma = F^H diag(p) F, F = :func:`dpm_core.fft.fft2c`, with power spectrum
  p(k) ∝ exp(-|k|^2 / (2 l^2)) + floor (k in cycles per FOV from the k-space centre), normalised so that the per-pixel
  complex variance mean(p) equals ``variance``.
- Diffusion noise: sigma is the std of *each real channel* (EDM on the [B, 2, H, W] view):
  x_sigma = x + sigma (z_re + i z_im), z ~ N(0, 1), so the complex noise is CN(0, 2 sigma^2 I) and the exact denoiser is
  D(x, sigma) = E[x_0 | x_sigma] = Sigma (Sigma + 2 sigma^2 I)^-1 x.
  The score is the real gradient (d/dRe + i d/dIm, what torch autograd returns for a real loss of a complex tensor):
  score = (D - x) / sigma^2.
- Measurement: y = A x + n, A a :class:`dpm_core.operators.SenseOp`, n with std ``noise_std`` per real channel
  (CN(0, 2 noise_std^2) on the sampled k-space entries). Posterior: CN(mu, C) with
  C = (Sigma^-1 + A^H A / (2 noise_std^2))^-1, mu = C A^H y / (2 noise_std^2); the per-pixel complex variance diag(C)
  is what a sampler's per-pixel std squared estimates.
Several map sets (M > 1) get independent priors per map image (the denoiser treats each map image as a batch item).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from .fft import fft2c, ifft2c
from .operators import SenseOp
from .seeding import randn_complex, stable_seed

__all__ = ["GaussianPrior", "GaussianDenoiser", "GaussianPosterior", "GaussianProblem", "gaussian_posterior",
           "synthetic_coil_maps", "gaussian_problem"]


class GaussianPrior:
    """Stationary circular complex Gaussian prior on an H x W grid, diagonal in the centred Fourier basis.

    Args:
        height, width: H, W of the image.
        length_scale: l, the width of the Gaussian power spectrum in k-space samples (cycles per FOV); larger l means
            rougher images.
        floor: white-noise floor of the spectrum relative to its peak (> 0 keeps Sigma invertible).
        variance: per-pixel complex variance E|x_ij|^2 (each real channel has half of it).
    """

    def __init__(self, height: int, width: int, length_scale: float = 3.0, floor: float = 0.02,
                 variance: float = 1.0):
        if height < 1 or width < 1:
            raise ValueError(f"GaussianPrior: height and width must be >= 1; got {height} x {width}")
        if not (length_scale > 0 and floor > 0 and variance > 0):
            raise ValueError(f"GaussianPrior: length_scale, floor and variance must be > 0; got {length_scale}, "
                             f"{floor}, {variance}")
        self.height, self.width = int(height), int(width)
        self.length_scale, self.floor, self.variance = float(length_scale), float(floor), float(variance)
        ky = torch.arange(height, dtype=torch.float64) - height // 2
        kx = torch.arange(width, dtype=torch.float64) - width // 2
        k2 = ky[:, None] ** 2 + kx[None, :] ** 2
        p = torch.exp(-k2 / (2 * length_scale ** 2)) + floor
        self.spectrum = p * (variance / p.mean())                    # [H, W] float64 eigenvalues of Sigma

    # -- dense forms (for the closed-form posterior; small grids only) ------------------------------------------------
    def fourier_matrix(self) -> torch.Tensor:
        """Dense unitary F [HW, HW] complex128 with F @ vec(x) = vec(fft2c(x)) (row-major vec)."""
        n = self.height * self.width
        eye = torch.eye(n, dtype=torch.complex128).reshape(n, self.height, self.width)
        return fft2c(eye).reshape(n, n).T.contiguous()

    def covariance(self) -> torch.Tensor:
        """Dense Sigma [HW, HW] complex128 (complex covariance E[x x^H])."""
        F = self.fourier_matrix()
        return F.conj().T @ (self.spectrum.reshape(-1, 1).to(torch.complex128) * F)

    def precision(self) -> torch.Tensor:
        """Dense Sigma^-1 [HW, HW] complex128."""
        F = self.fourier_matrix()
        return F.conj().T @ ((1.0 / self.spectrum).reshape(-1, 1).to(torch.complex128) * F)

    # -- sampling and denoising ----------------------------------------------------------------------------------------
    def sample(self, generators: Sequence[torch.Generator], num_maps: int = 1, device=None) -> torch.Tensor:
        """One prior draw per generator: [S, M, H, W] complex64 (S = len(generators), M = num_maps)."""
        w = torch.stack([randn_complex((num_maps, self.height, self.width), g) for g in generators]) / 2 ** 0.5
        amp = self.spectrum.sqrt().to(torch.float32)
        x = ifft2c(amp * w)                                          # CN(0, Sigma): w ~ CN(0, I)
        return x if device is None else x.to(device)

    def denoiser(self) -> "GaussianDenoiser":
        """The exact MMSE denoiser of this prior, with the network's callable interface."""
        return GaussianDenoiser(self)


class GaussianDenoiser:
    """Exact denoiser D(x, sigma) = Sigma (Sigma + 2 sigma^2 I)^-1 x of a :class:`GaussianPrior`.

    Same interface as :class:`dpm_core.networks.ComplexDenoiser`: ``D(x, sigma)`` with x complex64 [B, H, W] and sigma
    float32 [B] (per real channel, see module docstring) returns complex64 [B, H, W]; differentiable in x.
    """

    def __init__(self, prior: GaussianPrior):
        self.prior = prior
        self.num_evaluations = 0                                     # counts batch items denoised (for benchmarks)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        H, W = self.prior.height, self.prior.width
        if x.ndim != 3 or tuple(x.shape[1:]) != (H, W) or not x.is_complex():
            raise ValueError(f"GaussianDenoiser: x must be complex [B, {H}, {W}]; got {tuple(x.shape)} {x.dtype}")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"GaussianDenoiser: sigma must be a scalar or [B={x.shape[0]}]; got {tuple(sigma.shape)}")
        self.num_evaluations += x.shape[0]
        p = self.prior.spectrum.to(device=x.device, dtype=torch.float32)            # [H, W]
        gain = p / (p + 2 * sigma.view(-1, 1, 1) ** 2)                              # [B, H, W]
        return ifft2c(gain * fft2c(x))

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(D(x, sigma) - x) / sigma^2: the real gradient of log p_sigma(x). Shapes as ``__call__``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        s2 = (sigma ** 2).view(-1, 1, 1) if sigma.numel() > 1 else sigma ** 2
        return (self(x, sigma) - x) / s2


class GaussianPosterior(NamedTuple):
    mean: torch.Tensor       # [S, M, H, W] complex128: posterior mean
    variance: torch.Tensor   # [S, M, H, W] float64: per-pixel complex variance E|x - mean|^2 (diag of C)


def _dense_forward(op: SenseOp, s: int) -> torch.Tensor:
    """Dense matrix of slice s of A: [C*H*W, M*H*W] complex128 (row-major vec of [C, H, W] and [M, H, W])."""
    _, M, C, H, W = op.maps.shape
    n = M * H * W
    maps = op.maps[s:s + 1].to(torch.complex128).expand(n, M, C, H, W)
    mask = None if op.mask is None else op.mask[s:s + 1].expand(n, *op.mask.shape[1:])
    basis = torch.eye(n, dtype=torch.complex128, device=op.maps.device).reshape(n, M, H, W)
    cols = SenseOp(maps, mask).forward(basis)                        # [n, C, H, W]
    return cols.reshape(n, C * H * W).T.contiguous()


def gaussian_posterior(prior: GaussianPrior, y: torch.Tensor, op: SenseOp, noise_std: float) -> GaussianPosterior:
    """Closed-form posterior of y = A x + n, x ~ prior per map image, n with std ``noise_std`` per real channel.

    Dense linear algebra in complex128 (M*H*W unknowns per slice; fine up to ~32 x 32).

    Args:
        prior: the Gaussian prior (its H, W must match the operator's).
        y: [S, C, H, W] complex k-space (zero where not sampled).
        op: the SENSE operator of y.
        noise_std: per-real-channel noise std, > 0.
    Returns: :class:`GaussianPosterior` (mean [S, M, H, W] complex128, variance [S, M, H, W] float64), on y's device.
    """
    S, M, H, W = op.ishape
    if (H, W) != (prior.height, prior.width):
        raise ValueError(f"gaussian_posterior: prior grid {prior.height} x {prior.width} does not match the operator's "
                         f"{H} x {W}")
    if tuple(y.shape) != op.oshape:
        raise ValueError(f"gaussian_posterior: y must have the operator's k-space shape {op.oshape}; got "
                         f"{tuple(y.shape)}")
    if not noise_std > 0:
        raise ValueError(f"gaussian_posterior: noise_std={noise_std} must be > 0 (a noiseless posterior is singular)")
    device = y.device
    prec1 = prior.precision().to(device)
    prior_prec = torch.block_diag(*([prec1] * M))                    # [MHW, MHW]
    means, variances = [], []
    for s in range(S):
        A = _dense_forward(op, s)                                    # [CHW, MHW]
        v = 2 * noise_std ** 2
        post_prec = prior_prec + (A.conj().T @ A) / v
        post_prec = (post_prec + post_prec.conj().T) / 2
        L = torch.linalg.cholesky(post_prec)
        rhs = (A.conj().T @ y[s].reshape(-1).to(torch.complex128)) / v
        mu = torch.cholesky_solve(rhs.reshape(-1, 1), L).reshape(M, H, W)
        cov = torch.cholesky_inverse(L)
        means.append(mu)
        variances.append(torch.diagonal(cov).real.reshape(M, H, W))
    return GaussianPosterior(torch.stack(means), torch.stack(variances))


def synthetic_coil_maps(num_coils: int, height: int, width: int, num_maps: int = 1, num_slices: int = 1,
                        device=None) -> torch.Tensor:
    """Smooth synthetic coil maps: [S, M, C, H, W] complex64.

    Coil c is a broad Gaussian bump centred on a ring around the FOV with a linear phase, normalised so that
    sum_c |S_c|^2 = 1 at every pixel (ESPIRiT-like). Map set m > 0 is the first set times 0.5 with a different smooth
    phase (a soft-SENSE second set that still carries signal), so M = 2 gives a valid, non-degenerate operator.
    """
    if num_coils < 1 or num_maps < 1 or num_slices < 1:
        raise ValueError(f"synthetic_coil_maps: num_coils, num_maps, num_slices must be >= 1; got {num_coils}, "
                         f"{num_maps}, {num_slices}")
    yy = (torch.arange(height, dtype=torch.float64) - height / 2) / height
    xx = (torch.arange(width, dtype=torch.float64) - width / 2) / width
    Y, X = torch.meshgrid(yy, xx, indexing="ij")
    maps = []
    for c in range(num_coils):
        angle = 2 * torch.pi * c / num_coils
        cy, cx = 0.6 * torch.sin(torch.tensor(angle)), 0.6 * torch.cos(torch.tensor(angle))
        mag = torch.exp(-((Y - cy) ** 2 + (X - cx) ** 2) / (2 * 0.5 ** 2))
        phase = angle + 2.0 * (Y * torch.cos(torch.tensor(angle)) - X * torch.sin(torch.tensor(angle)))
        maps.append(mag * torch.exp(1j * phase))
    maps = torch.stack(maps)                                          # [C, H, W]
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))
    sets = [maps]
    for m in range(1, num_maps):
        sets.append(0.5 * maps * torch.exp(1j * (m * 1.3 + 3.0 * X * Y)))
    out = torch.stack(sets).to(torch.complex64)                       # [M, C, H, W]
    out = out.unsqueeze(0).expand(num_slices, -1, -1, -1, -1).contiguous()
    return out if device is None else out.to(device)


class GaussianProblem(NamedTuple):
    prior: GaussianPrior
    op: SenseOp              # [S, M, H, W] -> [S, C, H, W]
    x_true: torch.Tensor     # [S, M, H, W] complex64 prior draws
    y: torch.Tensor          # [S, C, H, W] complex64 noisy measurement
    noise_std: float         # per real channel
    posterior: GaussianPosterior


def gaussian_problem(height: int = 16, width: int = 16, num_coils: int = 4, num_maps: int = 1, num_slices: int = 1,
                     acceleration: int = 3, num_acs: int = 4, noise_std: float = 0.1, length_scale: float = 3.0,
                     floor: float = 0.02, seed: int = 0, device=None) -> GaussianProblem:
    """A small undersampled multi-coil Gaussian problem with its exact posterior (tests and benchmarks).

    The mask keeps every ``acceleration``-th phase-encode line plus ``num_acs`` centre lines (same for all slices).
    """
    from .masks import equispaced_mask
    prior = GaussianPrior(height, width, length_scale=length_scale, floor=floor)
    maps = synthetic_coil_maps(num_coils, height, width, num_maps=num_maps, num_slices=num_slices, device=device)
    mask = torch.as_tensor(equispaced_mask(height, acceleration, num_acs=num_acs))
    op = SenseOp(maps, mask)
    gens = [torch.Generator().manual_seed(stable_seed("gaussian_problem", seed, s, "image")) for s in range(num_slices)]
    x_true = prior.sample(gens, num_maps=num_maps, device=device)
    noise = torch.stack([randn_complex((num_coils, height, width), torch.Generator().manual_seed(
        stable_seed("gaussian_problem", seed, s, "noise"))) for s in range(num_slices)]).to(x_true.device)
    y = op.forward(x_true) + noise_std * noise
    if op.mask is not None:
        y = y * op.mask
    return GaussianProblem(prior, op, x_true, y, float(noise_std), gaussian_posterior(prior, y, op, noise_std))
