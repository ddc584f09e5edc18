"""dpm-experiment end to end on the ``tiny`` config: outputs (CSV columns, PNG, markdown), resumability (a second run
computes no cell; a run interrupted mid-way continues and gives the uninterrupted numbers), ζ written to the card."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dpm_core.checkpoints import load_checkpoint, zeta_for_acceleration
from dpm_core.masks import equispaced_mask
from dpm_core.reconstruct import Reconstructor
from training import experiments
from training.finetune import load_validation_set

METRIC_COLUMNS = ["R_eff", "nrmse", "nrmse_se", "ssim", "ssim_se", "nrmse_support", "n_slices"]


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(directory, stem, columns, n_rows):
    rows = read_csv(directory / f"{stem}.csv")
    assert list(rows[0]) == columns
    assert len(rows) == n_rows
    for row in rows:
        assert 0 < float(row["nrmse"]) < 1 and float(row["nrmse_se"]) >= 0 and -1 <= float(row["ssim"]) <= 1
        assert int(row["n_slices"]) == 2
    png = (directory / f"{stem}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (directory / f"{stem}.md").read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    assert set(table[1].replace("|", "")) == {"-"}                         # header separator
    assert len({line.count("|") for line in table}) == 1                  # one column count for every row
    return rows, table


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """finetune-sweep, then methods, then zeta in one run directory (each later one reuses the earlier cells)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("exp")
    assert experiments.main(["finetune-sweep", "--config", "tiny", "--out", str(out), "--no-progress"]) == 0
    sweep_lines = (out / experiments.RESULTS_NAME).read_text().splitlines()
    summaries = {"methods": experiments.run_experiments(["methods"], "tiny", out, device="cpu", progress=False),
                 "zeta": experiments.run_experiments(["zeta"], "tiny", out, device="cpu", progress=False)}
    return out, sweep_lines, summaries


def test_finetune_sweep_outputs(tiny_run):
    out, sweep_lines, _ = tiny_run
    rows, table = check_outputs(out / "finetune-sweep", "finetune_sweep", ["lr", "epoch", "step", "R"] + METRIC_COLUMNS
                                + ["delta_vs_pretrained", "delta_vs_pretrained_se"],
                                n_rows=2 * 3 * 2)                       # 2 LRs x epochs {0, 1, 2} x R {2, 4}
    assert {float(r["lr"]) for r in rows} == {1e-4, 1e-5}
    assert {float(r["epoch"]) for r in rows} == {0.0, 1.0, 2.0}
    assert len(table) == 2 + 2 * 3
    keys = [json.loads(line)["key"] for line in sweep_lines]
    assert len(keys) == len(set(keys))                                   # every cell computed once
    assert sum(k.endswith("/done") for k in keys) == 3                   # pretrain + 2 fine-tuning runs
    assert "pretrained/eval" in keys                                     # epoch 0 shared by the LRs
    # Epoch 0 is the same (pre-trained) model for every LR.
    e0 = {(r["R"], r["nrmse"]) for r in rows if float(r["epoch"]) == 0}
    assert len(e0) == 2
    assert all(float(r["delta_vs_pretrained"]) == 0 for r in rows if float(r["epoch"]) == 0)


def test_methods_outputs_and_reuse(tiny_run):
    out, sweep_lines, summaries = tiny_run
    rows, table = check_outputs(out / "methods", "methods",
                                ["method", "label", "R"] + METRIC_COLUMNS
                                + ["delta_vs_m4", "delta_vs_m4_se", "selected_step", "train_steps", "train_subjects",
                                   "train_slices", "lr", "run"],
                                n_rows=6 * 2)
    assert len(table) == 2 + 6
    by = {int(r["method"]): r for r in rows if float(r["R"]) == 2}
    assert [int(by[m]["train_subjects"]) for m in range(1, 7)] == [3, 3, 5, 2, 4, 2]     # all=3, few=2, external=2
    assert by[4]["run"].startswith("finetune-sweep/lr=") and by[2]["run"] == "methods/m2"   # M4: the sweep's run
    assert int(by[2]["train_steps"]) == int(by[4]["train_steps"])        # same fine-tuning step budget
    assert float(by[4]["delta_vs_m4"]) == 0
    assert float(by[1]["delta_vs_m4"]) == pytest.approx(float(by[1]["nrmse"]) - float(by[4]["nrmse"]), abs=1e-12)
    # The methods run trained 5 new models and reused the sweep (no sweep cell recomputed).
    new = [json.loads(line)["key"] for line in
           (out / experiments.RESULTS_NAME).read_text().splitlines()[len(sweep_lines):]]
    assert sum(k.endswith("/done") for k in new) >= 5
    assert not any(k.startswith("finetune-sweep/") and "/step=" in k for k in new)


def test_zeta_outputs_card_and_reconstructor(tiny_run):
    out, _, summaries = tiny_run
    rows, table = check_outputs(out / "zeta", "zeta", ["R", "zeta"] + METRIC_COLUMNS, n_rows=2 * 3)
    assert len(table) == 2 + 3
    summary = summaries["zeta"]["zeta"]
    precond, card = load_checkpoint(summary["card"])
    for R in (2.0, 4.0):
        sub = [r for r in rows if float(r["R"]) == R]
        best = min(sub, key=lambda r: float(r["nrmse"]))
        assert summary["best_zeta"][f"{R:g}"] == float(best["zeta"])
        assert zeta_for_acceleration(card, float(best["R_eff"])) == pytest.approx(float(best["zeta"]))
    # The Reconstructor uses the card's ζ by default.
    config = experiments.load_config("tiny", out)
    val = config["corpora"]["validation"]
    valset = load_validation_set(val["dirs"], val["contrasts"], 1, num_acs=config["evaluation"]["num_acs"])
    H = valset.kspace.shape[2]
    mask = equispaced_mask(H, 4, config["evaluation"]["num_acs"])
    result = Reconstructor(model=summary["card"], sampler="fast", sampler_options={"steps": 2}, device="cpu",
                           output_guard=False,     # a model trained for 2 steps: the guard rightly refuses it
                           ).reconstruct(valset.kspace * torch.from_numpy(mask).view(1, 1, H, 1), mask)
    assert result.info["zeta"] == pytest.approx(zeta_for_acceleration(card, result.info["effective_acceleration"]))
    assert result.info["zeta"] == pytest.approx(summary["best_zeta"]["4"], rel=1e-3)   # card keys: eff R, rounded


def test_rerun_computes_nothing(tiny_run):
    out, _, _ = tiny_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    summary = experiments.run_experiments(list(experiments.EXPERIMENTS), "tiny", out, device="cpu", progress=False)
    assert summary["computed"] == 0 and summary["reused"] > 20
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}   # nothing retrained


def test_interrupted_sweep_continues(tmp_path, monkeypatch):
    """A crash in the middle of the sweep (during an evaluation): the rerun computes only the missing cells and
    reproduces the uninterrupted run's numbers (training resumes from its saved state)."""
    reference = experiments.run_experiments(["finetune-sweep"], "tiny", tmp_path / "ref", device="cpu",
                                            progress=False)
    real_validate, calls = experiments.validate, []

    def crashing_validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 * 2 + 1:            # tiny: 2 slices in chunks of 1 -> 2 calls per cell; crash in cell 3
            raise KeyboardInterrupt("simulated interruption")
        return real_validate(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(experiments, "validate", crashing_validate)
    with pytest.raises(KeyboardInterrupt):
        experiments.run_experiments(["finetune-sweep"], "tiny", out, device="cpu", progress=False)
    monkeypatch.setattr(experiments, "validate", real_validate)
    resumed = experiments.run_experiments(["finetune-sweep"], "tiny", out, device="cpu", progress=False)
    # Computed before the crash: 4 corpora (external, target, validation, test), the pre-trained model, 2 evaluations.
    assert resumed["computed"] == reference["computed"] - 7
    a = read_csv(tmp_path / "ref" / "finetune-sweep" / "finetune_sweep.csv")
    b = read_csv(out / "finetune-sweep" / "finetune_sweep.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([float(r["nrmse"]) for r in b], [float(r["nrmse"]) for r in a], rtol=1e-5)


def test_bad_config_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        experiments.main(["zeta", "--config", "nonexistent", "--out", str(tmp_path)])


def test_undersampled_experiment_outputs_and_reuse(tiny_run):
    """dpm-experiment undersampled (tiny): three arms (none / fully sampled / EM from accelerated copies) at every ζ,
    the accelerated copies hold only their mask's lines, and a second run computes nothing."""
    import h5py
    out, _, _ = tiny_run
    experiments.run_experiments(["undersampled"], "tiny", out, device="cpu", progress=False)
    directory = out / "undersampled"
    rows = read_csv(directory / "undersampled.csv")
    assert list(rows[0]) == ["arm", "label", "zeta", "R", *METRIC_COLUMNS, "delta_vs_none", "delta_vs_none_se",
                             "delta_vs_full", "delta_vs_full_se"]
    assert sorted((r["arm"], float(r["zeta"])) for r in rows) == sorted(
        (arm, z) for arm in ("none", "full", "em") for z in (1.0, 4.0))
    assert all(0 < float(r["nrmse"]) < 1 and int(r["n_slices"]) == 2 for r in rows)
    assert (directory / "undersampled.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = [line for line in (directory / "undersampled.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 + 2 + 3                                      # best-ζ table, then all ζ
    result = json.loads((directory / "undersampled.json").read_text())
    assert result["em_over_full"] == pytest.approx(result["best"]["em"]["nrmse"] / result["best"]["full"]["nrmse"])
    assert [r["round"] for r in result["em_rounds"]] == [1, 2]
    # Reported on the config's test subjects, which no arm selected its epoch on (the validation subjects did).
    assert result["reported_on"] == "test" and "held-out test subjects" in (directory / "undersampled.md").read_text()
    cells = [json.loads(line)["key"] for line in (out / experiments.RESULTS_NAME).read_text().splitlines()]
    assert {f"undersampled/{arm}/test/zeta={z}" for arm in ("none", "full", "em") for z in (1, 4)} <= set(cells)
    for path in (directory / "data" / "train").glob("*.h5"):
        with h5py.File(path, "r") as f:
            mask, kspace = f["mask"][()].astype(bool), f["kspace"][()]
        assert np.abs(kspace[..., ~mask]).max() == 0 and 1 < mask.size / mask.sum() < 3
    _, card = load_checkpoint(directory / "em" / "model.json")
    assert "accelerated scans only" in card["training_data"] and len(card["training"]["em_rounds"]) == 2
    again = experiments.run_experiments(["undersampled"], "tiny", out, device="cpu", progress=False)
    assert again["computed"] == 0
