"""Rules that choose the data-consistency weight ζ per slice from the measured k-space alone (``zeta="auto"``).

Two rules; each sampler record names the one it uses (``Sampler.zeta_rule``):
- ``"gcv"``, :func:`gcv_zeta`: generalized cross-validation with a Monte-Carlo divergence (the DDS samplers).
- ``"holdout"``, :func:`holdout_zeta`: cross-validation on held-out phase-encode lines (the pnp sampler, whose GCV
  curve is nearly flat: docs/experiments/pnp_zeta/run.md).
Both score candidates ζ of the record's ``zeta_grid`` (or :data:`ZETA_GRID`) by runs of the sampler and keep, per
slice, the candidate with the smallest score (GCV scores every candidate; the held-out rule walks the grid from its
middle to a minimum: :func:`descend_grid`); the Reconstructor then runs the sampler at the chosen ζ.
"""
from __future__ import annotations

from typing import Callable

import torch

from .holdout import HOLDOUT_FRACTION, holdout_folds
from .masks import Sampling, samples_of, sampling_of

__all__ = ["gcv_zeta", "holdout_zeta", "descend_grid", "ZETA_GRID", "HOLDOUT_MIN_LINES", "HOLDOUT_SCORED_LINES"]

ZETA_GRID = (1.0, 4.0, 16.0, 64.0, 256.0)   # candidates of zeta="auto" (Fig 5's range, factors of 4)
AUTO_ZETA_STEPS = 10    # sampler steps per candidate run (2 runs per candidate: y and y + ε b)
GCV_PROBE_SAMPLE = 1 << 20   # sample index of the GCV probe's seed: disjoint from the posterior samples' 0..K-1
GCV_PROBE_FLOOR = 1e-3       # the probe's σ at least this fraction of the data rms (float32 keeps ~7 digits)


def gcv_zeta(sampler, denoiser, kn, op, noise_std, *, seed: int, slice_ids, options: dict | None = None,
             warm_image: Callable[[torch.Tensor], torch.Tensor] | None = None, x_init: torch.Tensor | None = None,
             callback: Callable | None = None):
    """ζ per slice by generalized cross-validation (GCV), from the measured data alone; no noise level needed.

    For every ζ of :data:`ZETA_GRID` (or the sampler record's own ``zeta_grid``) the sampler runs a short schedule
    (:data:`AUTO_ZETA_STEPS` steps, the slice's own seed, so every candidate and its perturbed twin see the same
    sampler noise) on y and on y + ε b (b a seeded complex Gaussian on the measured samples, ε = 0.1 σ̂, at least
    0.1 · :data:`GCV_PROBE_FLOOR` times the measured samples' rms). With f(y) = A x̂(y) the predicted measurements,
    the degrees of freedom are the Monte-Carlo divergence df = Re bᴴ (f(y + ε b) − f(y)) / ε, and

        GCV(ζ) = n ‖y − f(y)‖² / (n − df)²,    n = 2 × measured complex samples (real dimensions)

    (Golub, Heath & Wahba 1979; Monte-Carlo divergence as in Ramani et al. 2008, used for SURE by SMRD). The ζ
    with the smallest GCV is kept. On the cases of benchmarks/bench_real.py its choice is within 1.014x of the best
    NRMSE of an oracle ζ sweep (benchmarks/results/zeta_real.md), except on the real folded slice at R 3 (ζ 16
    against 1: 1.047x), whose SENSE least-squares residual lies far above the noise level (a model floor that GCV's
    noise-only model does not have, which flattens its curve).

    A warm-started reconstruction is scored as it runs: its own schedule (``options["sigmas"]``) from
    ``warm_image(y)`` (the SENSE image of the same data, so the start's own dependence on y is in the divergence).

    Args: the sampler (name or :class:`dpm_core.samplers.Sampler`), denoiser, normalized k-space kn [S, C, H, W] and
    operator of the reconstruction; noise_std σ̂ per slice (only sets the probe's step ε); seed and slice_ids as for
    the reconstruction; sampler options; warm_image: k-space [S, C, H, W] -> start image [S, M, H, W], or None;
    x_init: warm_image(kn) when the caller has already computed it (saves one solve); callback: passed to every
    candidate run (the Reconstructor's time budget).
    Returns (ζ [S] tensor, info with the GCV table).
    """
    from .samplers import get_sampler, posterior_samples
    from .seeding import slice_seed
    sampler = get_sampler(sampler)
    zeta_grid = sampler.zeta_grid or ZETA_GRID
    S = kn.shape[0]
    sigma = torch.as_tensor(noise_std, dtype=torch.float32, device=kn.device).reshape(-1).expand(S)
    n = 2 * (op.mask.expand(S, 1, *kn.shape[2:]).flatten(1).sum(1) * kn.shape[1]).to(torch.float32)
    data_rms = torch.sqrt(kn.abs().square().flatten(1).sum(1) / (n / 2))          # per measured complex sample
    # on nearly noise-free data 0.1 σ̂ would sink the probe's effect into float32 rounding
    eps = (0.1 * torch.maximum(sigma, GCV_PROBE_FLOOR * data_rms)).view(S, 1, 1, 1)
    probes = []
    for s in slice_ids:
        g = torch.Generator().manual_seed(slice_seed(seed, s, GCV_PROBE_SAMPLE))
        probes.append(torch.complex(torch.randn(kn.shape[1:], generator=g), torch.randn(kn.shape[1:], generator=g)))
    b = torch.stack(probes).to(kn.device) * op.mask

    trial = dict(options or {})
    if warm_image is None:                                   # from pure noise: a short schedule instead of the full one
        trial = {k: v for k, v in trial.items() if k not in ("steps", "sigmas")}
        trial["steps"] = AUTO_ZETA_STEPS

    probed = kn + eps * b
    # the start depends on the data, not on ζ: one SENSE solve for y and one for the probed y, not one per candidate
    starts = (None, None) if warm_image is None else (warm_image(kn) if x_init is None else x_init, warm_image(probed))

    def predicted(y, x_init, zeta):
        mean, _, _ = posterior_samples(sampler, denoiser, y, op, num_samples=1, seed=seed, slice_ids=slice_ids,
                                       x_init=x_init, callback=callback, **trial, zeta=zeta)
        return op.forward(mean)

    gcv, dof = [], []
    for zeta in zeta_grid:
        f = predicted(kn, starts[0], float(zeta))
        df = (b.conj() * (predicted(probed, starts[1], float(zeta)) - f)).real.flatten(1).sum(1) / eps.view(S)
        residual = (kn - f).abs().pow(2).flatten(1).sum(1)
        gcv.append(n * residual / (n - df).clamp_min(1.0) ** 2)
        dof.append(df / n)
    gcv = torch.stack(gcv, dim=1)                                                 # [S, len(ZETA_GRID)]
    grid = torch.tensor(zeta_grid, dtype=torch.float32, device=kn.device)
    return grid[gcv.argmin(dim=1)], {"zeta_grid": list(zeta_grid), "zeta_gcv": gcv.cpu().tolist(),
                                      "zeta_dof_fraction": torch.stack(dof, 1).cpu().tolist()}


# Fewer held-out lines cannot score a candidate; the caller falls back to GCV. 3 was tried (2026-12-07): on the cases
# holding out 2 lines GCV was better at real R 6 (1.009x the oracle against 1.020x) and on folded R 2 with the
# foundation model (the held-out pick fell to ζ 1/64, 1.27x), but far worse on the synthetic folded cases, where the
# held-out pick is the oracle's and GCV's is 1.065-1.111x (bench_real: synth0 folded R 3 pnp 0.962x -> 1.069x BART).
HOLDOUT_MIN_LINES = 2
# Folds are added (disjoint, each HOLDOUT_FRACTION of the lines) until this many lines are scored: what one fold of a
# 256-line scan at nominal R 6 with 24 ACS lines holds out (at R 4 it holds out 11; a 320-line one 10 at R 6, 15 at
# R 4), so clinical matrices keep one fold and its cost. A 96-line slice holds out 1-7 lines per fold, too few to rank
# candidates whose errors differ by a few per cent (docs/experiments/holdout_folds/run.md).
HOLDOUT_SCORED_LINES = 8


def descend_grid(score: Callable[[int], torch.Tensor], size: int) -> torch.Tensor:
    """Per-slice minima of scores over a grid of ``size`` candidates, visiting as few candidates as a descent needs.

    ``score(j)`` -> [S] scores of candidate j (one run of every slice). The middle candidate and its neighbours are
    scored first; then, while some slice's best scored candidate has an unscored neighbour, that neighbour is scored
    (for all slices: one run serves the batch). Each slice ends at a local minimum of its scores, which is the grid's
    minimum whenever its scores are unimodal over the grid; the visited candidates stay one contiguous run.
    Returns [S, size] scores, NaN where a candidate was not scored.
    """
    if size < 1:
        raise ValueError(f"descend_grid: the grid must have at least one candidate; got size {size}")
    middle = size // 2
    scores: dict[int, torch.Tensor] = {}
    wanted = {j for j in (middle - 1, middle, middle + 1) if 0 <= j < size}
    while wanted:
        for j in sorted(wanted):
            scores[j] = score(j).float()
        visited = sorted(scores)
        table = torch.stack([scores[j] for j in visited], dim=1)                     # [S, visited]
        best = [visited[int(b)] for b in table.argmin(dim=1)]
        wanted = {n for b in best for n in (b - 1, b + 1) if 0 <= n < size and n not in scores}
    out = torch.full((table.shape[0], size), float("nan"), device=table.device)
    out[:, visited] = table
    return out


def holdout_zeta(sampler, denoiser, kn, sampling: Sampling, maps, *, seed: int, slice_ids,
                 run_inputs: Callable[[torch.Tensor, Sampling], dict], options: dict | None = None,
                 callback: Callable | None = None):
    """ζ per slice by cross-validation on held-out k-space lines, from the measured data alone.

    Seeded folds of the measured lines outside the ACS block are set aside, each :data:`HOLDOUT_FRACTION` of them,
    disjoint, until :data:`HOLDOUT_SCORED_LINES` lines are held out in all or no whole fold is left (one draw per
    buffer, from ``seed``: the slices share their sampling, and a slice's choice does not depend on its batch-mates).
    For every fold and candidate ζ the sampler reconstructs x̂_ζ from the fold's other lines alone — its
    data-dependent inputs too (``run_inputs`` of the kept lines: the SENSE start, pnp's L1 phase reference), so
    nothing of the held-out lines leaks in — and the candidate is scored by its relative error on the held-out lines,
    pooled over the folds,

        E(ζ) = Σ_k ‖P_k (A x̂_ζ^(k) − y)‖² / Σ_k ‖P_k y‖²          (per slice; P_k the lines fold k holds out)

    (an SSDU-style split: Yaman et al. 2020; K-fold cross-validation). The candidates are visited by
    :func:`descend_grid`, from the middle of the grid to a minimum of E, and the ζ with the smallest E is kept. On
    every logged curve of docs/experiments/holdout_folds, pnp_zeta and pnp_levers E was unimodal over the grid, so the
    descent kept the whole grid's pick with 3-4 of its 5 candidates (90 of 120 candidate runs over 24 cases:
    docs/experiments/zeta_descent). On the cases of benchmarks/bench_real.py the pick's NRMSE is within 1.004x
    (mean) / 1.023x (worst) of the best ζ of the grid with the FLAIR model (12 cases) and 1.004x / 1.019x with the
    foundation model (the 6 real ones), where one fold gave 1.003x / 1.020x and 1.049x / 1.270x
    (docs/experiments/holdout_folds/summary.md).

    Args: the sampler (name or :class:`dpm_core.samplers.Sampler`), denoiser, normalized k-space kn [S, C, H, W], its
    Sampling and coil maps [S, M, C, H, W] of the reconstruction; seed and slice_ids as for the reconstruction;
    run_inputs: (k-space [S, C, H, W], its Sampling) -> the keyword inputs of a sampler run computed from that data
    (``x_init``, ``phase_reference``); options: the other sampler options (schedule, noise level); callback: passed
    to every candidate run (the Reconstructor's time budget).
    Returns (ζ [S] tensor, info with the grid, the pooled held-out errors (None for candidates the descent did not
    visit), the lines and folds), or None when fewer than :data:`HOLDOUT_MIN_LINES` lines can be held out (nearly
    only ACS lines measured): the caller falls back to GCV.
    """
    from .operators import SenseOp
    from .samplers import get_sampler, posterior_samples
    from .seeding import stable_seed
    sampler = get_sampler(sampler)
    zeta_grid = sampler.zeta_grid or ZETA_GRID
    S, C, H, W = kn.shape
    generator = torch.Generator().manual_seed(stable_seed("zeta-holdout", int(seed)))
    held_masks = holdout_folds(sampling.mask, HOLDOUT_FRACTION, generator, min_lines=HOLDOUT_SCORED_LINES)
    held_lines = sum(int(held.sum()) for held in held_masks)
    if held_lines < HOLDOUT_MIN_LINES:
        return None
    folds = []                                                   # (kept lines' operator and data, their inputs, ...)
    held_energy = torch.zeros(S, device=kn.device)
    for held in held_masks:
        kept = sampling_of(sampling.mask & ~held, H, sampling.readout, calibrated_elsewhere=True)  # keeps any ACS
        op_kept, op_held = SenseOp(maps, kept), SenseOp(maps, samples_of(sampling, held))
        y_kept, y_held = op_kept.mask * kn, op_held.mask * kn
        folds.append((op_kept, y_kept, run_inputs(y_kept, kept), op_held, y_held))
        held_energy += y_held.abs().square().flatten(1).sum(1)

    def held_out_error(j: int) -> torch.Tensor:                                      # E(ζ_j) [S]
        residual = torch.zeros(S, device=kn.device)
        for op_kept, y_kept, inputs, op_held, y_held in folds:
            x, _, _ = posterior_samples(sampler, denoiser, y_kept, op_kept, num_samples=1, seed=seed,
                                        slice_ids=slice_ids, callback=callback, **{**(options or {}), **inputs},
                                        zeta=float(zeta_grid[j]))
            residual += (op_held.forward(x) - y_held).abs().square().flatten(1).sum(1)
        return residual / held_energy.clamp_min(1e-30)

    errors = descend_grid(held_out_error, len(zeta_grid))                          # [S, len(grid)], NaN: not visited
    grid = torch.tensor(zeta_grid, dtype=torch.float32, device=kn.device)
    chosen = torch.where(torch.isnan(errors), torch.inf, errors).argmin(dim=1)
    table = [[None if v != v else v for v in row] for row in errors.cpu().tolist()]
    return grid[chosen], {"zeta_grid": list(zeta_grid), "zeta_holdout_error": table,
                          "zeta_holdout_lines": held_lines, "zeta_holdout_folds": len(folds)}
