"""Tests of dpm_core.checkpoints: round trip, integrity, strict card/weights fit, no unpickling, ζ table."""
import json
import re
from pathlib import Path

import pytest
import torch

import dpm_core
from dpm_core.checkpoints import (DEFAULT_MODEL_PATH, FORMAT_VERSION, checkpoint_paths, load_checkpoint,
                                  save_checkpoint, sha256_file, zeta_for_acceleration)
from dpm_core.networks import ComplexDenoiser, build_network, count_parameters
from dpm_core.normalize import NORMALIZATION_RULE

CARD = {"training_data": "synthetic FLAIR phantoms, 4 subjects", "zeta": {"2": 1.0, "4": 1.5, "8": 2.5},
        "image_size": [64, 48], "training": {"epochs": 1, "lr": 1e-4, "ema": 0.999}}


def _small_unet(seed=0):
    torch.manual_seed(seed)
    pc = build_network("unet", {"preset": "small", "base_channels": 16, "emb_dim": 64})
    with torch.no_grad():                                                    # move off the near-identity init
        for p in pc.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return pc.eval()


@pytest.fixture()
def saved(tmp_path):
    pc = _small_unet()
    card_path, weights_path = save_checkpoint(tmp_path / "model", pc, CARD)
    return pc, card_path, weights_path


def test_saving_the_same_weights_again_gives_the_same_bytes(saved, tmp_path):
    """Re-saving a loaded model (refresh_validation rewrites cards this way) keeps the weights file and its sha256."""
    _, card_path, weights_path = saved
    hashes = {sha256_file(weights_path)}
    for i in range(6):                               # metadata order, if it varied, would show within a few saves
        precond, card = load_checkpoint(card_path)
        _, again = save_checkpoint(tmp_path / f"again{i}", precond, card)
        hashes.add(sha256_file(again))
    assert len(hashes) == 1


@pytest.mark.parametrize("arch,kwargs", [("unet", None), ("ncsnv2", {"ngf": 8, "depth": "deepest"})])
def test_round_trip_bit_identical(tmp_path, arch, kwargs):
    pc = _small_unet() if kwargs is None else build_network(arch, kwargs, sigma_min=0.0066, sigma_max=232.0).eval()
    card_path, weights_path = save_checkpoint(tmp_path / "m.json", pc, CARD)
    assert card_path.name == "m.json" and weights_path.name == "m.safetensors"
    for path in (tmp_path / "m", card_path, weights_path):
        loaded, card = load_checkpoint(path)
        x = torch.randn(2, 2, 45, 37, generator=torch.Generator().manual_seed(0))
        sigma = torch.tensor([0.05, 2.0])
        with torch.no_grad():
            assert torch.equal(pc(x, sigma), loaded(x, sigma))
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert (loaded.sigma_data, loaded.sigma_min, loaded.sigma_max) == (pc.sigma_data, pc.sigma_min, pc.sigma_max)
    assert card["arch"] == arch and card["precond"] == pc.precond


def test_card_contents(saved):
    pc, card_path, weights_path = saved
    card = json.loads(card_path.read_text())
    assert card["format_version"] == FORMAT_VERSION
    assert card["normalization"] == NORMALIZATION_RULE == "p99_rss_acs"
    assert card["arch"] == "unet" and card["arch_kwargs"]["base_channels"] == 16
    assert card["parameter_count"] == count_parameters(pc)
    assert card["sha256"] == sha256_file(weights_path)
    assert card["weights_file"] == "model.safetensors"
    assert card["zeta"] == {"2": 1.0, "4": 1.5, "8": 2.5}
    assert card["image_size"] == [64, 48] and card["training"]["lr"] == 1e-4
    assert card["training_data"].startswith("synthetic")
    assert (card["sigma_data"], card["sigma_min"], card["sigma_max"]) == (0.5, 0.002, 80.0)


def test_flipped_byte_refused(saved):
    _, card_path, weights_path = saved
    data = bytearray(weights_path.read_bytes())
    data[-10] ^= 0x01                                                        # inside the tensor data
    weights_path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256 mismatch.*model\.safetensors"):
        load_checkpoint(card_path)


def test_wrong_kwargs_refused_naming_mismatch(saved):
    _, card_path, _ = saved
    card = json.loads(card_path.read_text())
    card["arch_kwargs"]["base_channels"] = 24
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"does not fit weights.*shape mismatches \['[^']+: card \("):
        load_checkpoint(card_path)
    card["arch_kwargs"]["base_channels"] = 16
    card["arch_kwargs"]["num_res_blocks"] = 2
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"missing keys \['dec\.l0_block2"):
        load_checkpoint(card_path)
    card["arch_kwargs"]["num_res_blocks"] = 1
    card["arch_kwargs"]["bogus"] = 1
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="invalid arguments for architecture 'unet'"):
        load_checkpoint(card_path)


def test_other_normalization_or_version_refused(saved, tmp_path):
    pc, card_path, _ = saved
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "normalization": "max_abs"}))
    with pytest.raises(ValueError, match="normalization 'max_abs'.*p99_rss_acs"):
        load_checkpoint(card_path)
    card_path.write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_checkpoint(card_path)
    with pytest.raises(ValueError, match="normalization"):
        save_checkpoint(tmp_path / "other", pc, {**CARD, "normalization": "max_abs"})
    with pytest.raises(ValueError, match=r"missing \['zeta'\]"):
        save_checkpoint(tmp_path / "other", pc, {k: v for k, v in CARD.items() if k != "zeta"})


def test_pickle_never_read(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match="never read"):
        load_checkpoint(pt)
    with pytest.raises(ValueError, match="never read"):
        checkpoint_paths(tmp_path / "model.pth")
    # A .safetensors name with pickle bytes inside: hash check passes (card made for it), the reader refuses.
    pc = _small_unet()
    card_path, weights_path = save_checkpoint(tmp_path / "evil", pc, CARD)
    weights_path.write_bytes(pt.read_bytes())
    card = json.loads(card_path.read_text())
    card["sha256"] = sha256_file(weights_path)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(card_path)
    # No unpickling code anywhere in the package.
    for source in Path(dpm_core.__file__).parent.rglob("*.py"):
        text = source.read_text()
        assert not re.search(r"torch\.load\(|import pickle|pickle\.load", text), f"unpickling in {source}"


def test_missing_default_model_message(tmp_path, monkeypatch):
    if DEFAULT_MODEL_PATH.exists():
        pytest.skip("a default model is installed")
    with pytest.raises(FileNotFoundError, match="does not exist yet.*save_checkpoint"):
        load_checkpoint(DEFAULT_MODEL_PATH)
    assert DEFAULT_MODEL_PATH.name == "flair_default.json" and DEFAULT_MODEL_PATH.parent.name == "models"
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


def test_zeta_for_acceleration():
    card = {"zeta": {"2": 1.0, "4": 1.5, "8": 2.5}}
    assert zeta_for_acceleration(card, 4) == 1.5
    assert zeta_for_acceleration(card, 3) == pytest.approx(1.25)
    assert zeta_for_acceleration(card, 6) == pytest.approx(2.0)
    assert zeta_for_acceleration(card, 1.5) == 1.0                         # nearest endpoint below
    assert zeta_for_acceleration(card, 12) == 2.5                          # nearest endpoint above
    assert zeta_for_acceleration({}, 4) == 1.0
    assert zeta_for_acceleration({"zeta": {}}, 4) == 1.0


def test_loaded_model_supports_input_gradients(saved):
    """Frozen parameters still let DPS differentiate with respect to the image."""
    _, card_path, _ = saved
    pc, _ = load_checkpoint(card_path)
    den = ComplexDenoiser(pc)
    x = torch.randn(1, 20, 20, dtype=torch.complex64).requires_grad_(True)
    den(x, torch.tensor([0.5])).abs().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
