"""The main job on the embedded default: replay an accelerated synthetic FLAIR exam with the shipped model.

    dpm-demo [--out out/demo] [--acceleration 4] [--seed 7] [--matrix 128] [--coils 8] [--slices 8] [--set k=v ...]

1. Simulates a stroke-like FLAIR volume (training.synth: MNI152 anatomy, inversion-recovery contrast, lesion, coils,
   noise) and writes it as a real ISMRMRD raw measurement the way a scanner records it: a noise scan, 2x readout
   oversampling, an oblique multi-slice geometry, and only the lines of an equispaced R-fold mask plus 24 embedded
   ACS lines (``flair_R<R>.h5``), and the fully sampled version for scoring (``flair_full.h5``).
2. Replays the accelerated file through the gadget's code path (:mod:`gadgets.replay`, local mode) with the gadget's
   defaults: DPM posterior sampling with the shipped model (dpm_core/models/flair_default), SENSE fallback if the
   DPM stage cannot run (marked in the images).
3. Writes ISMRMRD images, a DICOM series, PNG previews with a contact sheet and summary.json (timings, NRMSE/PSNR/SSIM
   against the fully sampled reconstruction, and the same for SENSE on the same data).
4. Ends with one figure, ``demo_figure.png``: for a few slices, fully sampled reference | SENSE | DPM | their errors
   ×5 (| the posterior std ×5 when num_samples > 1), NRMSE/SSIM in the titles, radiological display orientation.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np


def write_synthetic_exam(out: Path, acceleration: float, seed: int, matrix: int, coils: int, slices: int) -> dict:
    """Simulate the FLAIR volume and write the accelerated and fully sampled ISMRMRD raw files. Returns their paths."""
    from dpm_core.masks import equispaced_mask
    from training.synth import IMAGE_FRAME, generate_subject

    from gadgets.mrd_io import GeometrySpec, make_raw_acquisitions, write_mrd_raw

    subject = generate_subject(seed, "AXFLAIR", matrix, coils, slices, lesion=True)
    protocol = subject.protocol
    kspace = subject.kspace.numpy()                                           # [S, C, H, 2W]
    rng = np.random.default_rng(seed)
    noise_samples = 8 * kspace.shape[-1]
    noise = (subject.noise_std / np.sqrt(2) * (rng.standard_normal((coils, noise_samples))
                                               + 1j * rng.standard_normal((coils, noise_samples)))).astype(np.complex64)
    geometry = GeometrySpec(slice_thickness=5.0, slice_gap=1.0, frame=IMAGE_FRAME)      # as the anatomy runs
    header_kwargs = dict(fov_mm=(240.0, 240.0), tr_ms=protocol.TR, te_ms=protocol.TE, ti_ms=protocol.TI,
                         flip_deg=protocol.flip_angle_deg, echo_train_length=protocol.echo_train_length,
                         protocol="AX FLAIR", patient_id=f"SYNTH{seed:04d}")
    paths = {}
    for name, mask, R in (("accelerated", equispaced_mask(matrix, acceleration, num_acs=24), acceleration),
                          ("full", np.ones(matrix, dtype=bool), 1)):
        raw = make_raw_acquisitions(kspace, mask, num_acs=24, noise=noise, geometry=geometry,
                                    acceleration=int(round(R)), header_kwargs=header_kwargs)
        path = out / (f"flair_R{acceleration:g}.h5" if name == "accelerated" else "flair_full.h5")
        write_mrd_raw(str(path), raw)
        paths[name] = path
    return paths


FIGURE_SLICES = 3          # rows of the demo figure: evenly spaced slices of the volume
ERROR_GAIN = 5             # error and std maps are shown ×5 on the reference's grey scale


def write_figure(path: Path, dpm_dir: Path, sense_dir: Path, reference_file: Path, config: dict,
                 acceleration: float) -> Path:
    """The demo's figure from the two replays' images.h5 and the fully sampled raw file (see the module docstring)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpm_core import metrics
    from gadgets.images import display_orientation
    from gadgets.mrd_io import read_mrd_raw
    from gadgets.replay import group_by_series, image_array, read_ismrmrd_images, reference_volumes

    main_series = int(config.get("series_index", 1))
    dpm_images = read_ismrmrd_images(dpm_dir / "images.h5")
    dpm, ref = reference_volumes(dpm_images, read_mrd_raw(str(reference_file)), config)[0]
    sense = np.stack([image_array(im) for im in group_by_series(read_ismrmrd_images(sense_dir / "images.h5"))
                      [main_series]])
    members = group_by_series(dpm_images)
    std_series = int(config.get("std_series_index", 1001))
    std = np.stack([image_array(im) for im in members[std_series]]) if std_series in members else None
    geometry = [(im.read_dir, im.phase_dir, im.slice_dir) for im in members[main_series]]
    S = ref.shape[0]
    rows = sorted({int(round(v)) for v in np.linspace(S * 0.25, S * 0.75, min(FIGURE_SLICES, S))})
    columns = ["reference", "SENSE", "DPM", f"|SENSE − ref| ×{ERROR_GAIN}", f"|DPM − ref| ×{ERROR_GAIN}"]
    if std is not None:
        columns.append(f"DPM std ×{ERROR_GAIN}")
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.4 * len(columns), 2.6 * len(rows)), squeeze=False)
    for r, s in enumerate(rows):
        top = float(np.percentile(np.abs(ref[s]), 99.5)) or 1.0
        panels = [(np.abs(ref[s]), "reference (fully sampled)", 1),
                  (np.abs(sense[s]), f"SENSE NRMSE {metrics.nrmse(sense[s], ref[s]):.3f} "
                                     f"SSIM {metrics.ssim(sense[s], ref[s]):.3f}", 1),
                  (np.abs(dpm[s]), f"DPM NRMSE {metrics.nrmse(dpm[s], ref[s]):.3f} "
                                   f"SSIM {metrics.ssim(dpm[s], ref[s]):.3f}", 1),
                  (np.abs(np.abs(sense[s]) - np.abs(ref[s])), columns[3], ERROR_GAIN),
                  (np.abs(np.abs(dpm[s]) - np.abs(ref[s])), columns[4], ERROR_GAIN)]
        if std is not None:
            panels.append((np.abs(std[s]), columns[5], ERROR_GAIN))
        for c, (image, title, gain) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(display_orientation(image, *geometry[s]), cmap="gray", vmin=0, vmax=top / gain)
            ax.set_title(f"slice {s}: {title}" if c == 0 else title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"dpm-demo: nominal R {acceleration:g} — errors against the fully sampled "
                 "reconstruction (radiological orientation)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from gadgets.config import parse_properties
    from gadgets.replay import replay

    parser = argparse.ArgumentParser(prog="dpm-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/demo", help="output directory [out/demo]")
    parser.add_argument("--acceleration", type=float, default=4.0, help="nominal R of the equispaced mask [4]")
    parser.add_argument("--seed", type=int, default=7, help="synthetic subject seed [7]")
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="gadget property, e.g. --set sampler=fast --set num_samples=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for previous in (out / "replay", out / "replay_sense"):      # a re-run replaces the demo's own earlier outputs
        if previous.is_dir():
            logging.getLogger("dpm-demo").info("replacing the previous run's %s", previous)
            shutil.rmtree(previous)
    paths = write_synthetic_exam(out, args.acceleration, args.seed, args.matrix, args.coils, args.slices)
    config = parse_properties(args.set)
    summary = replay(str(paths["accelerated"]), str(out / "replay"), config=config, reference=str(paths["full"]))
    sense = replay(str(paths["accelerated"]), str(out / "replay_sense"), config={**config, "method": "sense"},
                   reference=str(paths["full"]), dicom=False)
    figure = write_figure(out / "demo_figure.png", out / "replay", out / "replay_sense", paths["full"],
                          config, args.acceleration)
    report = {
        "raw_files": {k: str(v) for k, v in paths.items()},
        "figure": str(figure),
        "methods": summary["methods"], "errors": summary["errors"],
        "metrics_vs_fully_sampled": summary["metrics_vs_reference"],
        "sense_metrics_vs_fully_sampled": sense["metrics_vs_reference"],
        "timings_s": summary["timings_s"],
        "outputs": {"dicom": str(out / "replay" / "dicom"), "png": str(out / "replay" / "png"),
                    "ismrmrd_images": str(out / "replay" / "images.h5"),
                    "summary": str(out / "replay" / "summary.json")},
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
