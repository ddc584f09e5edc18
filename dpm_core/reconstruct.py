"""Reconstructor: the one entry point from accelerated multi-coil k-space to images.

The Gadgetron gadget, the connect-mode server, the replay tool and training validation all call
:meth:`Reconstructor.reconstruct`, so a number measured anywhere holds everywhere. Steps, per volume:

    k-space [S, C, H, W] + mask [H]  ->  check input  ->  scale = normalization_scale (ACS, per slice)
    ->  coil maps from the ACS block (unless given)  ->  method (DPM posterior sampling, SENSE-CG, L1-wavelet,
    zero-filled) on k-space / scale  ->  images · scale  (+ posterior std · scale)

Input k-space holds every measured line (imaging and calibration), zero elsewhere, with readout oversampling removed
and noise prewhitened (the transport layer does that).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import baselines
from .masks import Sampling, readout_block, sampling_of
from .noise import estimate_noise_std
from .normalize import normalization_scale
from .operators import as_mask_tensor, combine_map_images
from .zeta_rules import HOLDOUT_MIN_LINES, gcv_zeta, holdout_zeta

__all__ = ["Reconstructor", "ReconResult", "ReconstructionError", "METHODS", "resolve_device"]

METHODS = ("dpm", "sense", "l1_wavelet", "zero_filled")
WARM_START_SIGMA = 0.2   # DPM warm start: the SENSE image + noise at this level; chosen on validation subjects
                         # (benchmarks/bench_warm_start.py, docs/samplers.md)
BUDGET_PROJECTION_AFTER = 0.1   # time_budget: the finish is projected from the steps done once this fraction is
                                # done (the first steps include the one-slice memory probe and warm-up)


class ReconstructionError(RuntimeError):
    """The DPM stage failed on valid input (non-finite output, out of memory, unusable model)."""


@dataclass
class ReconResult:
    """Output of :meth:`Reconstructor.reconstruct`.

    images: [S, H, W] complex64, original intensity units.
    std: [S, H, W] float32 per-pixel posterior standard deviation (DPM with num_samples > 1), else None.
    maps: [S, M, C, H, W] complex64 coil maps used.
    method: what produced the images, e.g. "dpm:fast", "sense".
    timings: seconds per stage ("coil_maps", "sampling", "total").
    info: effective acceleration, ζ, network evaluations, scale, ...
    """
    images: np.ndarray
    std: np.ndarray | None
    maps: np.ndarray
    method: str
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda when available, else cpu; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a device name ({exc}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available here; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device} requested but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1}); use device='auto' or one of them")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device} is not supported; use auto, cpu, cuda or cuda:N")
    return device


class Reconstructor:
    """Accelerated multi-coil k-space -> complex images, by one of :data:`METHODS`.

    Args:
        method: "dpm" (diffusion posterior sampling), "sense" (SENSE-CG), "l1_wavelet", "zero_filled".
        model: for "dpm": path to a model card (.json next to its .safetensors), an already built denoiser
            (callable x [B, H, W] complex, σ [B] -> [B, H, W]) with a ``card`` attribute or None for the shipped
            default.
        sampler: sampler name in :data:`dpm_core.samplers.SAMPLERS` (e.g. "fast", "dps", "ald").
        sampler_options: extra keyword arguments for the sampler (steps, …).
        num_samples: posterior samples per slice; > 1 also returns a per-pixel standard-deviation map.
        zeta: data-consistency weight ζ: a number; "auto" (chosen per slice from the measured data by the sampler's
            rule, :mod:`dpm_core.zeta_rules`: generalized cross-validation for DDS, held-out lines for pnp); or None:
            the model card's ζ table where it brackets the scan's effective R, else "auto" — for the samplers the
            table was swept for (``Sampler.card_zeta``); pnp always "auto"; the others (DPS, whose ζ is a step length)
            take their own default. What was used and why is in ``info["zeta"]`` / ``info["zeta_rule"]``.
        seed: base seed; slice s, sample k uses a generator derived from (seed, s, k).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        coil_method: "fast" (torch ESPIRiT) or "sigpy" (reference ESPIRiT).
        num_maps: ESPIRiT map sets, 1 or 2, or "auto" (default: 2 when the second map holds signal, i.e. the phase FOV
            is smaller than the head; :func:`dpm_core.coils.choose_num_maps`).
        cg_iters, cg_tol, l2_weight: SENSE-CG: Tikhonov weight λ₂ on normalized k-space (1e-3 keeps the normal
            equations well posed at high R), CG until ‖r‖ <= cg_tol·‖Aᴴy‖ or cg_iters iterations.
        l1_lamda, l1_iters: L1-wavelet: λ (None: per scan, :data:`dpm_core.baselines.L1_LAMDA_PER_EDGE_LEVEL` times
            the k-space edge level, :func:`dpm_core.noise.kspace_edge_level`) and the FISTA iteration limit.
        coil_options: extra keyword arguments for the coil-map estimator.
        output_guard: check every DPM result before returning it (:mod:`dpm_core.guard`: data residual against the
            measured noise, the model denoising its own output) and raise ReconstructionError when it fails, so the
            caller sends the SENSE fallback. Off only where models are evaluated while they train (validation, the
            E-step of EM fine-tuning), not in the scanner's path.
        progress: sampler progress in slice-steps (steps × slices × samples) — "auto" (a tqdm bar with ETA, shown
            only on a terminal), a callable ``progress(done, total)`` called after every step of every sampler call
            (servers log with it), or None.
        memory_budget: bytes of working memory one sampler call may use; the slices (and samples) of a volume run in
            as few calls as fit it, sized from the measured peak of the first, one-slice call (:mod:`dpm_core.memory`).
            "auto": what the device has free at the start of the volume; None: all in one call, nothing measured.
        warm_start: the DPM starts from the SENSE-CG image plus noise of this σ and runs only the levels of its
            schedule at or below it (:func:`dpm_core.samplers.warm_start_sigmas`); the schedule is the sampler's warm
            one unless steps are given (the fast sampler: 30 Karras steps, of which 8 lie at or below 0.2: 8 network
            evaluations instead of 50 from pure noise at equal error, docs/samplers.md); None starts from pure noise
            at the schedule's σ_max. Default :data:`WARM_START_SIGMA`.
        time_budget: seconds one DPM volume may take (from the start of ``reconstruct``), so that a slow device
            cannot hold the scanner's image pipeline past the exam: ReconstructionError (the pipeline then sends the
            flagged SENSE fallback) as soon as the time is spent: after the coil maps, after every step of the
            ζ rule's candidate runs, and during sampling as soon as the elapsed time, or the finish projected from
            the steps done (once :data:`BUDGET_PROJECTION_AFTER` of them are), passes it. None: no limit.
    """

    def __init__(self, method: str = "dpm", model=None, sampler: str = "fast", sampler_options: dict | None = None,
                 num_samples: int = 1, zeta: float | None = None, seed: int = 0, device="auto",
                 coil_method: str = "fast", num_maps: int | str = "auto", cg_iters: int = 100, cg_tol: float = 1e-4,
                 l2_weight: float = 1e-3, l1_lamda: float | None = None, l1_iters: int = 200,
                 coil_options: dict | None = None, output_guard: bool = True, progress="auto",
                 memory_budget: int | str | None = "auto", warm_start: float | None = WARM_START_SIGMA,
                 time_budget: float | None = None):
        if method not in METHODS:
            raise ValueError(f"method {method!r} is unknown; choose one of {METHODS}")
        if num_maps not in (1, 2, "auto"):
            raise ValueError(f"num_maps must be 1, 2 or 'auto'; got {num_maps!r}")
        if not (zeta is None or zeta == "auto" or (isinstance(zeta, (int, float)) and zeta > 0)):
            raise ValueError(f"zeta must be a positive number, 'auto' or None (the model card's table); got {zeta!r}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        self.method = method
        self.model = model
        self.sampler = sampler
        self.sampler_options = dict(sampler_options or {})
        self.num_samples = int(num_samples)
        self.zeta = zeta
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.coil_method = coil_method
        self.num_maps = num_maps
        self.cg_iters = cg_iters
        self.cg_tol = cg_tol
        self.l2_weight = l2_weight
        self.l1_lamda = l1_lamda
        self.l1_iters = l1_iters
        self.coil_options = dict(coil_options or {})
        self.output_guard = bool(output_guard)
        if not (progress in (None, "auto") or callable(progress)):
            raise ValueError(f"progress must be 'auto', None or a callable(done, total); got {progress!r}")
        self.progress = progress
        if not (warm_start is None or (isinstance(warm_start, (int, float)) and 0 < warm_start < float("inf"))):
            raise ValueError(f"warm_start must be a positive σ or None (start from pure noise); got {warm_start!r}")
        self.warm_start = None if warm_start is None else float(warm_start)
        if not (memory_budget in (None, "auto") or (isinstance(memory_budget, int) and memory_budget > 0)):
            raise ValueError(f"memory_budget must be a positive number of bytes, 'auto' or None; got {memory_budget!r}")
        self.memory_budget = memory_budget
        if not (time_budget is None or (isinstance(time_budget, (int, float)) and 0 < time_budget < float("inf"))):
            raise ValueError(f"time_budget must be a positive number of seconds or None (no limit); got "
                             f"{time_budget!r}")
        self.time_budget = None if time_budget is None else float(time_budget)
        self._denoiser = None
        if method == "dpm":
            from .samplers import get_sampler
            spec = get_sampler(sampler)
            if "zeta" in self.sampler_options:      # the Reconstructor sets ζ (a number, its rule or the card's)
                raise ValueError(f"sampler_options: give ζ as Reconstructor(zeta={self.sampler_options['zeta']!r}), "
                                 "not as a sampler option")
            spec.check_options({k: v for k, v in self.sampler_options.items() if k not in ("steps", "sigmas")})
            if self.num_samples > 1 and not spec.stochastic:
                raise ValueError(f"num_samples={self.num_samples}: the {spec.name} sampler is deterministic, so its "
                                 f"samples would be identical and their std map zero; use num_samples=1, or a "
                                 f"posterior sampler (e.g. 'fast') for a std map")

    # -- model ---------------------------------------------------------------------------------------------------
    def denoiser(self):
        """The DPM denoiser, loaded once (from the configured card or the shipped default) and kept on the device."""
        if self._denoiser is None:
            from .checkpoints import DEFAULT_MODEL_PATH, load_checkpoint
            from .networks import ComplexDenoiser
            if self.model is None or isinstance(self.model, (str, Path)):
                path = Path(self.model) if self.model is not None else Path(DEFAULT_MODEL_PATH)
                precond, card = load_checkpoint(path, device=self.device)
                self._denoiser = ComplexDenoiser(precond)
                self._denoiser.card = card
                self._denoiser.name = path.stem
            else:
                self._denoiser = self.model
            if hasattr(self._denoiser, "eval"):
                self._denoiser.eval()
        return self._denoiser

    # -- main entry ------------------------------------------------------------------------------------------------
    def reconstruct(self, kspace, mask, maps=None, method: str | None = None, slice_ids=None,
                    noise_std=None, readout=None, calibration=None) -> ReconResult:
        """Reconstruct one volume.

        Args:
            kspace: [S, C, H, W] complex64 (numpy or torch): every measured line, zeros elsewhere.
            mask: [H] bool, the measured phase-encode lines (the ACS block is the run around H // 2), or [S, 1, H, 1].
            maps: optional coil maps [S, M, C, H, W] or [S, C, H, W]; estimated from the ACS block when None.
            method: overrides ``self.method`` for this call (the gadget's SENSE fallback uses it).
            slice_ids: stable ids of the S slices (e.g. ISMRMRD ``idx.slice``); the random stream of slice s is seeded
                from (seed, slice_ids[s], sample), so a slice gets the same result alone or in any batch.
                Default 0..S-1.
            noise_std: the measurement noise std per real channel in the units of ``kspace``, when it is known (a noise
                scan prewhitened the data: 1/√2, :data:`dpm_core.noise.PREWHITENED_NOISE_STD`); a float or one value
                per slice; recorded as info["noise_source"] = "given". None: estimated from the scan's calibration
                matrix (:func:`dpm_core.noise.estimate_noise_std`), "calibration matrix".
            readout: [W] bool, the readout samples every measured line holds when the echo is asymmetric (one block
                around W // 2, :func:`dpm_core.masks.readout_block`); the others are unknowns the method fills, never
                data. None: the whole readout is measured.
            calibration: [S, C, H, W] complex k-space with an ACS block around H // 2 and zeros off its measured
                lines, from other volumes of the scan (interleaved calibration: lines of the interleaved repetitions
                put together); the coil maps, the normalization scale and the estimated noise level then come from
                it, and ``kspace``'s own lines are the data only (they need no ACS block). None: all from ``kspace``.
        Returns: :class:`ReconResult`.
        Raises: ValueError for unusable input; ReconstructionError when the DPM stage fails.
        """
        method = method or self.method
        if method not in METHODS:
            raise ValueError(f"method {method!r} is unknown; choose one of {METHODS}")
        t_start = time.perf_counter()
        timings = {}
        k = torch.as_tensor(kspace)
        if k.ndim != 4 or not k.is_complex():
            raise ValueError(f"kspace must be complex [S, C, H, W]; got shape {tuple(k.shape)} dtype {k.dtype}")
        if not bool(torch.isfinite(k).all()):
            raise ValueError("kspace contains NaN or Inf samples; check the acquisition (corrupt lines) before "
                             "reconstructing")
        S, C, H, W = k.shape
        known_noise = None
        if noise_std is not None:
            known_noise = torch.as_tensor(noise_std, dtype=torch.float32).reshape(-1)
            if known_noise.numel() not in (1, S):
                raise ValueError(f"noise_std has {known_noise.numel()} values for {S} slices; give one value or one "
                                 f"per slice")
            known_noise = known_noise.expand(S).clone()
            if not bool(torch.all(torch.isfinite(known_noise) & (known_noise > 0))):
                raise ValueError(f"noise_std={noise_std} must be finite and > 0 (one value or one per slice); pass "
                                 f"None to estimate it from the calibration matrix")
        readout = readout_block(readout, W)
        # derived once; raises when there is no ACS block (in the calibration data when they are given)
        sampling = sampling_of(mask, H, readout, calibrated_elsewhere=calibration is not None)
        k = k.to(self.device, torch.complex64) * as_mask_tensor(sampling, S, H, W, device=self.device)
        if calibration is None:
            cal_k, cal_sampling = k, sampling
        else:
            cal_k = torch.as_tensor(calibration).to(self.device, torch.complex64)
            if tuple(cal_k.shape) != (S, C, H, W):
                raise ValueError(f"calibration must be k-space of the volume's shape {(S, C, H, W)}; got "
                                 f"{tuple(cal_k.shape)}")
            cal_lines = (cal_k.abs().sum(dim=(0, 1, 3)) > 0).cpu().numpy()
            cal_sampling = sampling_of(cal_lines, H, readout)
            cal_k = cal_k * as_mask_tensor(cal_sampling, S, H, W, device=self.device)

        scale = normalization_scale(cal_k, cal_sampling)            # [S]
        kn = k / scale.view(S, 1, 1, 1)
        cal_kn = kn if calibration is None else cal_k / scale.view(S, 1, 1, 1)

        t0 = time.perf_counter()
        maps_t, map_energy = self._coil_maps(cal_kn, cal_sampling, maps)
        timings["coil_maps"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        std = None
        info = {"effective_acceleration": sampling.effective_acceleration, "num_maps": int(maps_t.shape[1]),
                "scale": scale.cpu().tolist()}
        if sampling.readout is not None:
            info["readout_fraction"] = float(sampling.readout.mean())
        if calibration is not None:
            info["calibration"] = f"{int(cal_sampling.mask.sum())} lines of the interleaved volumes"
        if map_energy is not None:
            info["second_map_energy"] = map_energy.cpu().tolist()
        if method == "zero_filled":
            images = baselines.zero_filled(kn, sampling, maps_t)
        elif method == "sense":
            images = combine_map_images(self._sense(kn, sampling, maps_t))
            info["l2_weight"] = self.l2_weight
        elif method == "l1_wavelet":
            x, l1_info = self._l1_wavelet(kn, sampling, maps_t)
            images = combine_map_images(x)
            info.update({"l1_lamda": l1_info["lamda"], "l1_iterations": l1_info["iterations"],
                         "lamda_rule": "given" if self.l1_lamda is not None else
                         f"edge:{baselines.L1_LAMDA_PER_EDGE_LEVEL:g}*kspace_edge_level"})
        else:
            ids = list(range(S)) if slice_ids is None else [int(i) for i in slice_ids]
            if len(ids) != S:
                raise ValueError(f"slice_ids has {len(ids)} entries for {S} slices")
            self._check_budget(t_start, "after the coil maps")
            images, std, dpm_info = self._sample(
                kn, sampling, maps_t, ids, None if known_noise is None else known_noise.to(scale.device) / scale,
                noise_from=(cal_kn, cal_sampling), t_start=t_start)
            info.update(dpm_info)
            # the noise level in the units of the k-space given (prewhitened k-space: 1/√2 per real channel)
            info["measured_noise_std"] = (torch.as_tensor(dpm_info["noise_std"]).reshape(-1).to(scale.device)
                                          * scale).cpu().tolist()
        timings["sampling"] = time.perf_counter() - t0

        images = images * scale.view(S, 1, 1)
        if std is not None:
            std = std * scale.view(S, 1, 1)
        timings["total"] = time.perf_counter() - t_start
        name = f"dpm:{self.sampler}" if method == "dpm" else method
        return ReconResult(images=images.detach().cpu().numpy().astype(np.complex64),
                           std=None if std is None else std.detach().cpu().numpy().astype(np.float32),
                           maps=maps_t.detach().cpu().numpy(), method=name, timings=timings, info=info)

    # -- stages ------------------------------------------------------------------------------------------------------
    def _sense(self, kn: torch.Tensor, sampling: Sampling, maps_t: torch.Tensor) -> torch.Tensor:
        """Our SENSE-CG image [S, M, H, W] of normalized k-space (Tikhonov ``l2_weight``, CG to ``cg_tol``)."""
        return baselines.sense_cg(kn, sampling, maps_t, self.cg_iters, self.l2_weight, tol=self.cg_tol)

    def _run_inputs(self, y: torch.Tensor, sampling: Sampling, maps_t: torch.Tensor, phase_reference: bool) -> dict:
        """The data-dependent inputs of a DPM sampler run on k-space y measured on ``sampling``, from y alone: the
        SENSE start (``x_init``, with a warm start) and the L1 image as ``phase_reference`` (when asked)."""
        inputs = {} if self.warm_start is None else {"x_init": self._sense(y, sampling, maps_t)}
        if phase_reference:
            inputs["phase_reference"] = self._l1_wavelet(y, sampling, maps_t)[0]
        return inputs

    def _l1_wavelet(self, kn: torch.Tensor, sampling: Sampling, maps_t: torch.Tensor):
        """Our L1-wavelet image [S, M, H, W] of normalized k-space (λ given or by the per-scan rule) and its info."""
        return baselines.l1_wavelet(kn, sampling, maps_t, lamda=self.l1_lamda, max_iter=self.l1_iters,
                                    return_info=True)

    def _coil_maps(self, kn: torch.Tensor, sampling: Sampling, maps):
        """Maps [S, M, C, H, W] and the second-map energy [S] that chose M (num_maps "auto") or of the 2 map sets
        estimated or given; None with one map set by request."""
        from .coils import DEFAULT_KERNEL_WIDTH, auto_coil_maps, estimate_coil_maps, second_map_energy
        S, C, H, W = kn.shape
        if maps is not None:
            m = torch.as_tensor(maps).to(self.device, torch.complex64)
            if m.ndim == 4:
                m = m.unsqueeze(1)
            if m.ndim != 5 or m.shape[0] != S or m.shape[2:] != (C, H, W):
                raise ValueError(f"maps must be [S={S}, M, C={C}, H={H}, W={W}]; got {tuple(m.shape)}")
            return m, (second_map_energy(m, kn, sampling) if m.shape[1] > 1 else None)
        if self.num_maps == "auto":
            return auto_coil_maps(kn, sampling, method=self.coil_method, **self.coil_options)
        m = estimate_coil_maps(kn, sampling, method=self.coil_method, num_maps=self.num_maps, **self.coil_options)
        if self.num_maps == 2:
            return m, second_map_energy(m, kn, sampling, self.coil_options.get("kernel_width", DEFAULT_KERNEL_WIDTH))
        return m, None

    def _sample(self, kn, sampling: Sampling, maps_t, slice_ids, known_noise_std, noise_from, t_start: float):
        from .memory import available_bytes
        from .operators import SenseOp
        from .samplers import default_sigmas, get_sampler, posterior_samples, warm_start_sigmas

        denoiser = self.denoiser()
        card = getattr(denoiser, "card", {}) or {}
        op = SenseOp(maps_t, sampling)
        options = dict(self.sampler_options)
        spec = get_sampler(self.sampler)

        def schedule(sigmas):                            # a warm start runs the levels at or below its σ
            return sigmas if self.warm_start is None else warm_start_sigmas(sigmas, self.warm_start)
        warm = self.warm_start is not None
        sigmas = options.pop("sigmas", None)
        if sigmas is None:
            sigmas = default_sigmas(spec, denoiser, options.pop("steps", None), warm=warm)
        elif "steps" in options:
            raise ValueError("sampler_options: give either sigmas or steps, not both")
        options["sigmas"] = schedule(sigmas)
        # [S] per real channel, in the units of kn: the noise scan's level when the caller knows it, else estimated
        # noise_from: (k-space, Sampling) of the calibration data, the volume's own or its interleaved group's
        noise_std = estimate_noise_std(*noise_from) if known_noise_std is None else known_noise_std
        if "noise_std" in spec.options:                  # the data term is weighed by the measured noise, per slice
            noise_std = options.setdefault("noise_std", noise_std)
        demodulate = "demodulate" not in spec.options or options.get("demodulate", _run_default(spec, "demodulate"))
        own_reference = "phase_reference" in spec.options and demodulate and "phase_reference" not in options

        def run_inputs(y, part: Sampling) -> dict:
            return self._run_inputs(y, part, maps_t, own_reference)
        inputs = run_inputs(kn, sampling)
        x_init = inputs.pop("x_init", None)
        options.update(inputs)
        zeta, zeta_rule, zeta_info = None, "n/a (sampler has no ζ)", {}
        if "zeta" in spec.options:
            zeta, zeta_rule = self._zeta_rule(spec, card, sampling.effective_acceleration)
            if zeta == "auto":
                chosen = None
                within_budget = (None if self.time_budget is None else      # the candidate runs count too
                                 lambda state: self._check_budget(t_start, "while choosing ζ"))
                # the rule's candidate runs: the record's trial sampler, with the options it takes
                trial_spec = get_sampler(spec.zeta_trial_sampler or spec)
                trial_options = {k: v for k, v in options.items() if k == "sigmas" or k in trial_spec.options}
                if spec.zeta_rule == "holdout":
                    trial = dict(trial_options)       # shorter candidate runs where the record says they suffice
                    if spec.zeta_trial_steps is not None and not {"steps", "sigmas"} & set(self.sampler_options):
                        trial["sigmas"] = schedule(default_sigmas(spec, denoiser, spec.zeta_trial_steps, warm=warm))
                    chosen = holdout_zeta(trial_spec, denoiser, kn, sampling, maps_t, seed=self.seed,
                                          slice_ids=slice_ids, run_inputs=run_inputs, options=trial,
                                          callback=within_budget)
                    if chosen is None:
                        zeta_rule = (f"auto:gcv (fewer than {HOLDOUT_MIN_LINES} lines outside the calibration block "
                                     "to hold out)")
                if chosen is None:                      # GCV's runs share the phase reference of the full data
                    chosen = gcv_zeta(trial_spec, denoiser, kn, op, noise_std, seed=self.seed, slice_ids=slice_ids,
                                      options=trial_options, x_init=x_init, callback=within_budget,
                                      warm_image=None if self.warm_start is None else
                                      (lambda y: self._sense(y, sampling, maps_t)))
                if trial_spec is not spec:
                    zeta_rule += f", scored on {trial_spec.name} runs"
                zeta, zeta_info = chosen
            options["zeta"] = zeta
        self._check_budget(t_start, "after choosing ζ")
        callback, bar = self._progress_callback(spec, options, kn.shape[0] * self.num_samples)
        callback = self._budget_callback(callback, t_start, self._slice_steps(spec, options,
                                                                               kn.shape[0] * self.num_samples))
        try:
            budget = available_bytes(kn.device) if self.memory_budget == "auto" else self.memory_budget
            mean, std, sampler_info = posterior_samples(spec, denoiser, kn, op, num_samples=self.num_samples,
                                                        seed=self.seed, slice_ids=slice_ids, callback=callback,
                                                        x_init=x_init, memory_budget=budget, **options)
        except torch.cuda.OutOfMemoryError as exc:
            raise ReconstructionError(f"out of GPU memory while sampling {kn.shape[0]} slices: {exc}") from exc
        finally:
            if bar is not None:
                bar.close()
        if not bool(torch.isfinite(mean).all()):
            raise ReconstructionError("the DPM sampler produced non-finite pixels (NaN/Inf); check the model and "
                                      "sampler settings")
        # The measurements say nothing outside the coil maps' support (ESPIRiT crops there); SENSE returns 0 there, and
        # so must the DPM, whose prior would otherwise paint unconstrained anatomy into the background.
        support = (maps_t.abs().sum(dim=2) > 0)                      # [S, M, H, W]
        mean = mean * support
        guard = {}
        if self.output_guard:
            from .guard import check_output
            least_squares = x_init if x_init is not None else self._sense(kn, sampling, maps_t)
            problems, guard = check_output(denoiser, mean, kn, op, noise_std,
                                           float(getattr(denoiser, "sigma_data", 0.5)), slice_ids, least_squares)
            if problems:
                raise ReconstructionError("the DPM output failed its check: " + "; ".join(problems))
        images = combine_map_images(mean)
        std_img = None
        if self.num_samples > 1:
            std_img = torch.sqrt(((std.float() * support) ** 2).sum(dim=1))     # map sets add in quadrature
        info = {"sampler": self.sampler, "num_samples": self.num_samples, "zeta_rule": zeta_rule,
                "noise_std": torch.as_tensor(noise_std).cpu().tolist(),
                "noise_source": "calibration matrix" if known_noise_std is None else "given", **zeta_info,
                "warm_start": self.warm_start,
                "model": getattr(denoiser, "name", None) or card.get("name"), "model_sha256": card.get("sha256"),
                **({"output_guard": guard} if guard else {})}
        if zeta is not None:
            z = torch.as_tensor(zeta).cpu()
            info["zeta"] = float(z) if z.numel() == 1 else z.tolist()
        info.update(sampler_info or {})
        return images, std_img, info

    def _progress_callback(self, spec, options: dict, items: int):
        """(sampler callback, tqdm bar or None) for :attr:`progress`, counted in slice-steps (sampler steps × the
        slices of each call, so that chunked calls add up): a bar with an ETA on a terminal ("auto"; tqdm hides it
        elsewhere: servers, spawned gadgets, tests), ``progress(done, total)`` for a callable, nothing for None."""
        if self.progress is None:
            return None, None
        total = self._slice_steps(spec, options, items)
        if callable(self.progress):
            done = [0]

            def report(state):
                done[0] += int(state["x"].shape[0])
                self.progress(done[0], total)
            return report, None
        from tqdm import tqdm
        bar = tqdm(total=total, desc=f"DPM {spec.name}", unit="slice-step", leave=False, disable=None,
                   dynamic_ncols=True)
        return (lambda state: bar.update(int(state["x"].shape[0]))), bar

    @staticmethod
    def _slice_steps(spec, options: dict, items: int) -> int:
        """Sampler steps × slices × samples: what one sampling pass reports through its callback."""
        return max(len(options["sigmas"]) - (1 if spec.schedule == "karras" else 0), 1) * items

    def _check_budget(self, t_start: float, stage: str) -> None:
        elapsed = time.perf_counter() - t_start
        if self.time_budget is not None and elapsed > self.time_budget:
            raise ReconstructionError(f"time budget of {self.time_budget:g} s per volume spent {stage} "
                                      f"({elapsed:.1f} s); raise the gadget property time_budget or use a faster "
                                      f"device")

    def _budget_callback(self, callback, t_start: float, total: int):
        """``callback`` (or nothing) plus the time-budget check after every sampler step (see ``time_budget``)."""
        if self.time_budget is None:
            return callback
        budget, done, t_sampling = self.time_budget, [0], time.perf_counter()

        def check(state):
            if callback is not None:
                callback(state)
            done[0] += int(state["x"].shape[0])
            now = time.perf_counter()
            fraction = min(done[0] / total, 1.0)
            projected = (t_sampling - t_start) + (now - t_sampling) / fraction
            if now - t_start > budget or (fraction >= BUDGET_PROJECTION_AFTER and projected > budget):
                raise ReconstructionError(
                    f"time budget of {budget:g} s per volume: after {now - t_start:.1f} s the DPM had run "
                    f"{fraction:.0%} of its sampling steps and would end at about {projected:.1f} s; raise the "
                    f"gadget property time_budget or use a faster device")
        return check

    def _zeta_rule(self, spec, card: dict, acceleration: float):
        """(ζ or "auto", the rule's name): a given number; "auto" (the sampler's rule, ``spec.zeta_rule``); the
        sampler's own default where the card's table does not apply to it (``spec.card_zeta``); or the card's table
        where it brackets the scan's R."""
        auto = f"auto:{spec.zeta_rule}"
        if self.zeta == "auto":
            return "auto", auto
        if self.zeta is not None:
            return float(self.zeta), "given"
        if spec.auto_zeta:
            return "auto", f"{auto} (the {spec.name} sampler's rule)"
        if not spec.card_zeta:
            return (float(_run_default(spec, "zeta")),
                    f"the {spec.name} sampler's default (the card's ζ table is for the fast sampler)")
        from .checkpoints import zeta_for_acceleration
        table = sorted(float(r) for r in (card.get("zeta") or {}))
        if table and table[0] <= acceleration <= table[-1]:
            return zeta_for_acceleration(card, acceleration), "card"
        return "auto", f"{auto} (the card's table does not bracket R)"


def _run_default(spec, option: str):
    """The default of keyword ``option`` of a sampler's function: its signature is the one place that states it."""
    return inspect.signature(spec.run).parameters[option].default
