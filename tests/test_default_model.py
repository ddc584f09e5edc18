"""The shipped default model: loads as the embedded default and beats the classical baselines on held-out FLAIR."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from dpm_core import metrics
from dpm_core.checkpoints import DEFAULT_MODEL_PATH, load_checkpoint
from dpm_core.coils import remove_readout_oversampling
from dpm_core.masks import equispaced_mask
from dpm_core.reconstruct import Reconstructor
from training.synth import generate_subject, subject_seed


def test_default_model_is_shipped_small_and_verified():
    card = json.loads(DEFAULT_MODEL_PATH.read_text())
    weights = DEFAULT_MODEL_PATH.with_name(card["weights_file"])
    precond, loaded_card = load_checkpoint(DEFAULT_MODEL_PATH)   # verifies sha256 and the architecture
    assert loaded_card["normalization"] == "p99_rss_acs"
    assert weights.stat().st_size <= 20 * 2 ** 20
    assert "AXFLAIR" in card["training_data"] and card["zeta"]


@functools.lru_cache(maxsize=1)                     # both tests below share one set of reconstructions
def _held_out_errors_at_R4() -> dict:
    # Corpus seed 1000 is held out: the shipped model was pre-trained and fine-tuned on corpus seeds 1-3.
    subject = generate_subject(subject_seed(1000, 0, "AXFLAIR"), "AXFLAIR", 128, 8, 8, lesion=True)
    k = remove_readout_oversampling(subject.kspace, 2)[3:5]
    H = k.shape[2]
    mask = equispaced_mask(H, 4, num_acs=24)
    under = k * torch.from_numpy(mask).view(1, 1, H, 1)
    dpm = Reconstructor(method="dpm", sampler="fast", sampler_options={"steps": 20}, device="cpu").reconstruct(under, mask)
    reference = Reconstructor(method="sense", device="cpu").reconstruct(k, np.ones(H, bool), maps=dpm.maps).images
    errors = {"dpm": metrics.nrmse(dpm.images, reference)}
    for method in ("sense", "l1_wavelet"):
        res = Reconstructor(method=method, device="cpu").reconstruct(under, mask, maps=dpm.maps)
        errors[method] = metrics.nrmse(res.images, reference)
    print("held-out FLAIR, R=4:", {k: round(v, 4) for k, v in errors.items()})
    return errors


def test_default_model_beats_sense_at_R4_on_a_held_out_flair_subject():
    errors = _held_out_errors_at_R4()
    assert errors["dpm"] < errors["sense"]


@pytest.mark.xfail(strict=True, reason="issue 10: with the per-scan λ rule and cycle spinning our L1-wavelet (NRMSE "
                   "0.032) beats the shipped DPM (0.037 since the wide-variety retraining, 0.041 before) on this "
                   "held-out subject; a better prior (issue 11) must turn this test green, and strict=True makes that "
                   "visible")
def test_default_model_beats_l1_at_R4_on_a_held_out_flair_subject():
    errors = _held_out_errors_at_R4()
    assert errors["dpm"] < errors["l1_wavelet"]
