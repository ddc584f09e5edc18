"""The quick-start demo as a new user runs it: reconstruction seconds and image quality, default against pure noise.

    OMP_NUM_THREADS=1 python benchmarks/bench_demo.py

Runs ``dpm-demo`` (the command ``./run.sh demo`` ends in) twice in fresh processes on the same synthetic exam (seed 7,
128², 8 coils, 8 slices, nominal R 4): with its defaults (the DPM's warm start from the SENSE image) and with
``--set warm_start=none`` (the sampler from pure noise, the demo before the warm start). Reports the replay's
reconstruction seconds (``timings_s.reconstruction`` of its summary: model load excluded, every slice's coil maps,
sampling and guard included), the whole command's wall time, and NRMSE / SSIM / PSNR of the DPM and of SENSE against
the fully sampled reference, as the demo computes them. Goal (issue 14): ≤ 60 s of reconstruction on the 2-core
development CPU, quality unchanged (NRMSE within 2 %). Writes benchmarks/results/demo.{json,md}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

GOAL_SECONDS = 60.0
NRMSE_TOLERANCE = 1.02      # "quality unchanged": the default's NRMSE within 2 % of the one from pure noise (as cpu_path)
RUNS = (("default (warm start)", []), ("from pure noise", ["--set", "warm_start=none"]))


def run_demo(extra: list[str], out: Path) -> tuple[dict, float]:
    """(demo_report.json, wall seconds) of one ``dpm-demo --out out`` in a fresh process."""
    command = [sys.executable, "-c", "import sys; from training.demo import main; sys.exit(main())",
               "--out", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return json.loads((out / "demo_report.json").read_text()), time.perf_counter() - t0


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in RUNS:
            report, wall = run_demo(extra, Path(tmp) / label.split()[0])
            dpm = report["metrics_vs_fully_sampled"]["repetition_0"]
            sense = report["sense_metrics_vs_fully_sampled"]["repetition_0"]
            rows.append({"run": label, "arguments": " ".join(extra) or "(none)", "methods": ",".join(report["methods"]),
                         "reconstruction s": report["timings_s"]["reconstruction"], "command wall s": wall,
                         "DPM NRMSE": dpm["nrmse"], "DPM SSIM": dpm["ssim"], "DPM PSNR": dpm["psnr"],
                         "SENSE NRMSE": sense["nrmse"], "slices": dpm["slices"]})
            print(rows[-1], flush=True)
    default, cold = rows
    met = default["reconstruction s"] <= GOAL_SECONDS
    unchanged = default["DPM NRMSE"] <= NRMSE_TOLERANCE * cold["DPM NRMSE"]
    notes = (f"One command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} python benchmarks/bench_demo.py`. "
             f"dpm-demo defaults: synthetic FLAIR exam seed 7, 128x128, 8 coils, {default['slices']} slices, nominal R 4 "
             "+ 24 ACS, the shipped model chosen from the header. Reconstruction seconds from the replay summary "
             "(model load excluded). Metrics against the fully sampled reference, as the demo reports them.\n\n"
             f"- Default: {default['reconstruction s']:.1f} s of reconstruction (goal ≤ {GOAL_SECONDS:g} s: "
             f"{'met' if met else 'missed'}), from pure noise {cold['reconstruction s']:.1f} s; DPM NRMSE "
             f"{default['DPM NRMSE']:.4f} vs {cold['DPM NRMSE']:.4f}, SSIM {default['DPM SSIM']:.4f} vs "
             f"{cold['DPM SSIM']:.4f} (quality unchanged, NRMSE ≤ {NRMSE_TOLERANCE:g} × the one from pure noise: "
             f"{'yes' if unchanged else 'no'}).")
    write_results("demo", rows, ["run", "arguments", "methods", "reconstruction s", "command wall s", "DPM NRMSE",
                                 "DPM SSIM", "DPM PSNR", "SENSE NRMSE", "slices"],
                  "The quick-start demo: reconstruction time and quality", notes,
                  extra={"goal_met": met, "quality_unchanged": unchanged})


if __name__ == "__main__":
    main()
