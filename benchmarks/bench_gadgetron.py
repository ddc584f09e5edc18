"""Latency inside a real Gadgetron: the offline stream configuration on a synthetic FLAIR raw file.

    PATH=$GADGETRON/bin:$PATH LD_LIBRARY_PATH=$GADGETRON/lib python benchmarks/bench_gadgetron.py \
        [--matrix 128 --coils 8 --slices 4 --acceleration 4 --repeats 2]

Gadgetron 4.7.2 is built by ``../shared/tools/build_gadgetron.sh GADGETRON_GIT_DIR ISMRMRD_GIT_DIR`` (not in CI: its
sources come through the session's fetch). The raw file is the demo's (``training.demo.write_synthetic_exam``: a noise
scan, 2x readout oversampling, oblique slices, equispaced R + 24 ACS, an AX FLAIR header), streamed as a scanner
would: ``ismrmrd_hdf5_to_stream | gadgetron --from_stream -c configs_xml/dpm_recon_offline.xml --disable_storage true
| ismrmrd_stream_to_hdf5``, once per method (the configuration's ``method`` property set to it) and repeat. Every
stream spawns the gadget's Python process, which imports torch and loads the model: a warm ``dpm-server`` removes
that part (docs/server_replay.md). Reported: the pipeline's wall time, the images written, the gadget's own
reconstruction, coil-map and sampling seconds (its per-volume log lines, in Gadgetron's log) and the model the
images name.

Writes benchmarks/results/gadgetron.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_volume_log, write_results  # noqa: E402

CONFIG = REPO / "configs_xml" / "dpm_recon_offline.xml"
TOOLS = ("gadgetron", "ismrmrd_hdf5_to_stream", "ismrmrd_stream_to_hdf5")
METHODS = ("sense", "dpm")


def gadgetron_version() -> str:
    """'4.7.2 (846ed3f)' from ``gadgetron --info``."""
    out = subprocess.run(["gadgetron", "--info"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    version = re.search(r"-- Version\s*:\s*(\S+)", text)
    sha = re.search(r"-- Git SHA1\s*:\s*(\w{7})", text)
    return (version.group(1) if version else "unknown") + (f" ({sha.group(1)})" if sha else "")


def config_for(method: str, folder: Path) -> Path:
    """dpm_recon_offline.xml with its ``method`` property set to ``method``."""
    text = CONFIG.read_text()
    default = '<property name="method" value="dpm"/>'
    if default not in text:
        raise RuntimeError(f"{CONFIG} no longer holds {default!r}; update bench_gadgetron.py")
    path = folder / f"offline_{method}.xml"
    path.write_text(text.replace(default, f'<property name="method" value="{method}"/>'))
    return path


def stream(raw: Path, config: Path, out: Path, env: dict, timeout: float) -> dict:
    """One from_stream run; the wall time spans the three processes of the pipeline."""
    command = (f"ismrmrd_hdf5_to_stream -i {raw} --use-stdout | gadgetron --from_stream -c {config} "
               f"--disable_storage true | ismrmrd_stream_to_hdf5 --use-stdin -o {out}")
    t0 = time.perf_counter()
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=env,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    return {"rc": done.returncode, "wall_s": wall, "log": done.stderr}


def image_summary(path: Path) -> dict:
    """Images in the output file and what their meta says of the method and model."""
    import ismrmrd

    from gadgets.replay import read_ismrmrd_images
    if not path.exists():
        return {"images": 0}
    images = read_ismrmrd_images(path)
    meta = ismrmrd.Meta.deserialize(images[0].attribute_string) if images else {}
    return {"images": len(images), "DPM_Method": meta.get("DPM_Method", ""), "DPM_Model": meta.get("DPM_Model", ""),
            "matrix": "x".join(str(n) for n in images[0].data.shape[-2:]) if images else ""}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per stream")
    args = parser.parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"bench_gadgetron: {', '.join(missing)} not on PATH; build Gadgetron 4.7.2 with "
              "../shared/tools/build_gadgetron.sh and put its bin/ on PATH and lib/ on LD_LIBRARY_PATH",
              file=sys.stderr)
        return 2
    from training.demo import write_synthetic_exam

    # Gadgetron spawns `python -m gadgetron ...` for the external gadget: this interpreter, with the repository.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_gadgetron_") as tmp:
        folder = Path(tmp)
        raw = write_synthetic_exam(folder, args.acceleration, args.seed, args.matrix, args.coils,
                                   args.slices)["accelerated"]
        for repeat in range(1, args.repeats + 1):
            for method in METHODS:
                out = folder / f"images_{method}_{repeat}.h5"
                run = stream(raw, config_for(method, folder), out, env, args.timeout)
                recon, coil_maps, sampling = parse_volume_log(run["log"])
                row = {"method": method, "repeat": repeat, "rc": run["rc"], **image_summary(out),
                       "stream_s": run["wall_s"], "gadget_recon_s": recon, "coil_maps_s": coil_maps,
                       "sampling_s": sampling, "spawn_import_transport_s": run["wall_s"] - recon}
                rows.append(row)
                print(row, flush=True)
                if run["rc"] != 0 or row["images"] != args.slices:
                    print(run["log"][-4000:], file=sys.stderr)
    columns = ["method", "repeat", "rc", "images", "matrix", "DPM_Method", "DPM_Model", "stream_s", "gadget_recon_s",
               "coil_maps_s", "sampling_s", "spawn_import_transport_s"]
    version = gadgetron_version()
    notes = (f"One command: `python benchmarks/bench_gadgetron.py --matrix {args.matrix} --coils {args.coils} "
             f"--slices {args.slices} --acceleration {args.acceleration:g} --repeats {args.repeats}` with Gadgetron "
             f"{version} on PATH. Synthetic FLAIR exam (training.demo, seed {args.seed}): {args.matrix}x{args.matrix}, "
             f"{args.coils} coils, {args.slices} slices, equispaced R {args.acceleration:g} + 24 ACS, noise scan, 2x "
             "readout oversampling. Pipeline: ismrmrd_hdf5_to_stream | gadgetron --from_stream -c "
             "dpm_recon_offline.xml (method set per row) | ismrmrd_stream_to_hdf5. stream_s: the pipeline's wall "
             "time; gadget_recon_s, coil_maps_s, sampling_s: the gadget's per-volume log lines; "
             "spawn_import_transport_s: the rest (Gadgetron start, the gadget's Python start, imports and model "
             "load, transfer, the writer). torch threads: the gadget's default.")
    write_results("gadgetron", rows, columns, "Latency inside a real Gadgetron (from_stream, offline configuration)",
                  notes, extra={"gadgetron_version": version, "args": vars(args)})
    return 0 if all(r["rc"] == 0 and r["images"] == args.slices for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
