"""The sampler registry: one :class:`Sampler` record per sampler (see :mod:`dpm_core.samplers`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..schedules import geometric_sigmas, karras_sigmas
from .ald import ald
from .dds import dds
from .dds_lora import dds_lora
from .dds_ssl import dds_ssl
from .dps import dps
from .pnp import PNP_LEVELS, PNP_SIGMA_END, PNP_SIGMA_START, PNP_TRIAL_LEVELS, PNP_ZETA_GRID, pnp

ZETA_RULES = ("gcv", "holdout")     # the rules of dpm_core.zeta_rules a record can name

__all__ = ["Sampler", "SAMPLERS", "get_sampler", "default_sigmas", "warm_start_sigmas", "num_evaluations"]


@dataclass(frozen=True)
class Sampler:
    """One posterior sampler: its function and what the Reconstructor needs to know to call it.

    name: registry name.  run: the function (the common signature of :mod:`dpm_core.samplers`); the record is
    callable like it.
    schedule: "karras" (levels > 0 ending in 0) or "geometric" (all levels > 0).  default_steps: schedule length.
    options: keyword options ``run`` accepts beyond the common ones; the Reconstructor passes the measured noise level
    when "noise_std" is among them, the data-consistency weight when "zeta" is, the denoiser's sigma_data when
    "sigma_data" is.
    evaluations: (number of sigmas, options) -> (forward, backward) network evaluations per slice and map image.
    summary: one line for docs and errors.
    warm_start_steps: schedule length when the sampler starts from an estimate (a warm start runs its levels at or
    below σ_start, :func:`warm_start_sigmas`); None: ``default_steps``. A record sets it only where a validation sweep
    chose it (benchmarks/bench_warm_start.py --steps-at).
    card_zeta: the model card's ζ table (swept with the fast sampler: ζ divides the Gaussian-consistent proximal
    weight) means the same for this sampler; where False and no ζ is given, the sampler's own default ζ is used.
    sigma_band: (σ_start, σ_end) of a geometric schedule of the sampler's own, independent of the denoiser's trained
    range; None: the range (:func:`default_sigmas`).
    zeta_rule: how zeta="auto" chooses ζ per slice: "gcv" (:func:`dpm_core.zeta_rules.gcv_zeta`) or "holdout"
    (:func:`dpm_core.zeta_rules.holdout_zeta`).  auto_zeta: with no ζ given, the Reconstructor chooses it by that rule
    instead of the card's table or the sampler's default.  zeta_grid: the rule's candidates; None:
    :data:`dpm_core.zeta_rules.ZETA_GRID`.  zeta_trial_steps: schedule length of the rule's candidate runs (the
    record's default schedule at that length) where it chooses as well as the full one; None: the full schedule.
    zeta_trial_sampler: the sampler the rule's candidate runs use (with this record's schedule and the options that
    sampler takes); None: this one. An adapted sampler refines DDS at DDS's ζ, and adapting inside every candidate
    run would multiply the rule's cost by the adaptation's.
    stochastic: draws differ by seed; False (a deterministic method) makes num_samples > 1 an error, since its
    "samples" would be identical and their spread zero.
    """
    name: str
    run: Callable[..., torch.Tensor]
    schedule: str
    default_steps: int
    options: frozenset
    evaluations: Callable[[int, dict], tuple[int, int]]
    summary: str
    warm_start_steps: int | None = None
    card_zeta: bool = False
    sigma_band: tuple[float, float] | None = None
    zeta_rule: str = "gcv"
    auto_zeta: bool = False
    zeta_grid: tuple[float, ...] | None = None
    zeta_trial_steps: int | None = None
    zeta_trial_sampler: str | None = None
    stochastic: bool = True

    def __post_init__(self):
        if self.zeta_rule not in ZETA_RULES:
            raise ValueError(f"sampler {self.name!r}: zeta_rule={self.zeta_rule!r} must be one of {ZETA_RULES}")

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.run(*args, **kwargs)

    def check_options(self, options: dict) -> None:
        """Raise ValueError naming the options ``run`` does not take (a typo would otherwise surface mid-scan)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"sampler {self.name!r} takes no option(s) {unknown}; it takes {sorted(self.options)} "
                             "(plus steps or sigmas for the schedule)")


def _ald_evaluations(n: int, options: dict) -> tuple[int, int]:
    return n * int(options.get("steps_per_level", 3)) + int(bool(options.get("final_denoise", False))), 0


def _adapted_evaluations(n: int, options: dict) -> tuple[int, int]:
    """dds_lora: 2 forward + 1 backward pass per Adam step and level (an upper bound when adapt_sigma_max skips
    levels)."""
    adapt_steps = int(options.get("adapt_steps", 1))
    return (n - 1) * max(2 * adapt_steps, 1), (n - 1) * adapt_steps


def _ssl_evaluations(n: int, options: dict) -> tuple[int, int]:
    """dds_ssl: pass 1 adapt_steps + 1 forward and adapt_steps backward passes per level, pass 2 one forward (an
    upper bound: a slice with no line to withhold runs pass 2 alone)."""
    adapt_steps = int(options.get("adapt_steps", 1))
    return (n - 1) * (adapt_steps + 2 if adapt_steps > 0 else 1), (n - 1) * adapt_steps


# DDS from the SENSE image at σ_start = 0.2: the levels ≤ 0.2 of a 30-step Karras schedule (8 network evaluations)
# are the shortest as good as the cold start from pure noise (50 steps) on validation subjects at R 2/4/6 for both
# shipped models (benchmarks/results/warm_start_steps.md, the rule stated there). 15 steps (4 evaluations) met the
# rule with the models and noise level before; with the retrained models and the calibration-matrix noise level it
# is 0.0074 worse than cold at R 6 (FLAIR model).
DDS_WARM_START_STEPS = 30

SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("ald", ald, "geometric", 1156,            # csgm's levels 1155..2310
            frozenset({"steps_per_level", "eps", "weighting", "noise_std", "gamma", "mse_weight", "final_denoise"}),
            _ald_evaluations, "annealed Langevin dynamics (reference A, Jalal et al. 2021)"),
    Sampler("dps", dps, "karras", 300, frozenset({"zeta"}), lambda n, o: (n - 1, n - 1),
            "EDM Euler + diffusion posterior sampling, step ζ (reference B, the paper authors' sampler)"),
    Sampler("dds", dds, "karras", 50, frozenset({"cg_iters", "noise_std", "sigma_data", "lamda", "eta", "zeta"}),
            lambda n, o: (n - 1, 0),
            "decomposed diffusion sampling: Tweedie denoise + CG data step (Chung et al. 2024)",
            warm_start_steps=DDS_WARM_START_STEPS, card_zeta=True),
    Sampler("dds_lora", dds_lora, "karras", 50,
            frozenset({"cg_iters", "noise_std", "sigma_data", "lamda", "eta", "zeta", "lora_rank", "adapt_steps",
                       "adapt_lr", "adapt_holdout", "adapt_sigma_max"}), _adapted_evaluations,
            "DDS with the denoiser adapted to each slice's k-space by LoRA (steerable conditional diffusion)",
            card_zeta=True, zeta_trial_sampler="dds"),
    # dds_ssl's two passes are DDS: it keeps DDS's warm schedule (not swept for dds_ssl itself)
    Sampler("dds_ssl", dds_ssl, "karras", 50,
            frozenset({"cg_iters", "noise_std", "sigma_data", "lamda", "eta", "zeta", "lora_rank", "adapt_steps",
                       "adapt_lr", "adapt_fraction"}), _ssl_evaluations,
            "DDS with the denoiser adapted by LoRA to predict withheld measured lines (zero-shot self-supervised)",
            warm_start_steps=DDS_WARM_START_STEPS, card_zeta=True, zeta_trial_sampler="dds"),
    Sampler("pnp", pnp, "geometric", PNP_LEVELS,
            frozenset({"noise_std", "zeta", "demodulate", "phase_reference", "cg_iters", "cg_tol"}),
            lambda n, o: (n, 0),
            "plug-and-play: the denoiser in half-quadratic splitting, data steps solved (DPIR, Zhang et al. 2021)",
            sigma_band=(PNP_SIGMA_START, PNP_SIGMA_END), zeta_rule="holdout", auto_zeta=True,
            zeta_grid=PNP_ZETA_GRID, zeta_trial_steps=PNP_TRIAL_LEVELS, stochastic=False),
)}
SAMPLERS["fast"] = SAMPLERS["dds"]
"""Samplers by name. "fast" is the chosen fast sampler (DDS; see docs/samplers.md for the measurements)."""
for _record in SAMPLERS.values():
    _trial = SAMPLERS.get(_record.zeta_trial_sampler)
    if _record.zeta_trial_sampler is not None and (_trial is None or "zeta" not in _trial.options):
        raise ValueError(f"sampler {_record.name!r}: zeta_trial_sampler={_record.zeta_trial_sampler!r} must name a "
                         "registered sampler that takes zeta")


def get_sampler(sampler: str | Sampler) -> Sampler:
    """The :class:`Sampler` called ``sampler`` (one of :data:`SAMPLERS`), or the record itself."""
    if isinstance(sampler, Sampler):
        return sampler
    try:
        return SAMPLERS[sampler]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}") from None


def default_sigmas(sampler: str | Sampler, denoiser=None, steps: int | None = None, warm: bool = False) -> torch.Tensor:
    """The default schedule of a sampler, over the denoiser's trained range (or the record's own ``sigma_band``).

    sigma_min / sigma_max come from ``denoiser.sigma_min`` / ``.sigma_max`` (a :class:`ComplexDenoiser` has them) or
    default to the paper's MRI model, 0.004 / 10. "geometric": ``steps`` levels sigma_max -> sigma_min; "karras":
    karras_sigmas(steps, sigma_min, sigma_max), ending in 0; ``steps`` defaults to the record's ``default_steps`` —
    or, with ``warm=True`` (the schedule a warm start will cut at σ_start), to its ``warm_start_steps`` where it has
    them.
    Returns: float64 [n] (geometric) or [n + 1] (karras).
    """
    spec = get_sampler(sampler)
    if steps is None:
        steps = spec.warm_start_steps if warm and spec.warm_start_steps is not None else spec.default_steps
    n = int(steps)
    if spec.sigma_band is not None:
        return geometric_sigmas(spec.sigma_band[0], spec.sigma_band[1], n)
    sigma_min = float(getattr(denoiser, "sigma_min", 0.004))
    sigma_max = float(getattr(denoiser, "sigma_max", 10.0))
    if spec.schedule == "geometric":
        return geometric_sigmas(sigma_max, sigma_min, n)
    return karras_sigmas(n, sigma_min, sigma_max)


def warm_start_sigmas(sigmas: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """The levels of a schedule at or below ``sigma_start`` (a Karras schedule keeps its final 0): the part a sampler
    runs when it starts from an estimate instead of pure noise (SDEdit; "come closer, diffuse faster", Chung, Sim & Ye,
    CVPR 2022). The start is then x_init + sigmas[0] z, so ``sigma_start`` should be about the estimate's error.
    Raises ValueError when no level > 0 is left (sigma_start below the schedule's smallest level).
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if not sigma_start > 0:
        raise ValueError(f"warm start: sigma_start={sigma_start} must be > 0")
    kept = sigmas[sigmas <= sigma_start]
    if int((kept > 0).sum()) == 0:
        raise ValueError(f"warm start: sigma_start={sigma_start:g} is below every level of the schedule "
                         f"(smallest {float(sigmas[sigmas > 0].min()):g}); choose a larger one")
    return kept


def num_evaluations(sampler: str | Sampler, sigmas: torch.Tensor, backward: bool = False, **options) -> int:
    """Denoiser forward evaluations (``backward=True``: backpropagations) per slice and sample (per map image)."""
    forward, backprop = get_sampler(sampler).evaluations(int(torch.as_tensor(sigmas).numel()), options)
    return backprop if backward else forward

