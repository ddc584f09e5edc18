"""A 3-D slab through a real Gadgetron 4.7.2 (from_stream) against dpm-replay in local mode on the same file: the
acquisition configurations (dpm_recon_acquisitions.xml, dpm_recon_offline.xml: our gadget assembles the slab), and
the ReconData one (dpm_recon.xml: Gadgetron's own RemoveROOversampling, AcquisitionAccumulateTrigger and
BucketToBuffer, E2 = kz, in front of our gadget; and for a 2-D multi-slice scan of the same phantom, split_slices,
whole and with a 75 % echo) with its NoiseAdjustGadget removed and a stream without noise scan, because that gadget
stops the stream under ``--disable_storage`` (it cannot store the noise covariance: "Failed to store item: URL using
bad/illegal format"; the last row runs it as shipped on the 2-D scan with a noise scan and reports that).

    PATH=$GADGETRON/bin:$PATH LD_LIBRARY_PATH=$GADGETRON/lib OMP_NUM_THREADS=1 \
        python docs/experiments/slab_gadgetron/run.py > docs/experiments/slab_gadgetron/run.log

The slab: BART's analytic 3-D phantom (``bart phantom -3 -k -x 32 -s 8``), 2x readout oversampling added (coil images
zero-padded along x), complex noise of 0.02 x the k-space RMS and a noise scan of the same level, ky equispaced R 2 +
12 ACS lines, kz fully sampled (``tests.harness.slab_acquisitions``). Method sense (the DPM's path through the
transports is the same; the slab's partitions are what is checked). Reported per configuration: images, their
pixels against replay's (max |difference| / max |replay|), their positions against replay's (max mm), and the
ImageFinish output's slice numbering.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
import bart  # noqa: E402
from bench_gadgetron import gadgetron_version, stream  # noqa: E402

from dpm_core.masks import equispaced_mask  # noqa: E402
from gadgets import replay  # noqa: E402
from gadgets.mrd_io import MrdRaw, make_raw_acquisitions, write_mrd_raw  # noqa: E402
from tests.harness import asymmetric_echo, slab_acquisitions  # noqa: E402

N, COILS, ACS, OVERSAMPLING, NOISE_FRACTION = 32, 8, 12, 2, 0.02
NOISE_ADJUST = ('<gadget><name>NoiseAdjust</name><dll>gadgetron_mricore</dll>'
                '<classname>NoiseAdjustGadget</classname></gadget>')
# (label, configuration, its NoiseAdjust removed, which scan)
RUNS = (("dpm_recon_acquisitions.xml", "dpm_recon_acquisitions.xml", False, "slab with noise scan"),
        ("dpm_recon_offline.xml", "dpm_recon_offline.xml", False, "slab with noise scan"),
        ("dpm_recon.xml without NoiseAdjust", "dpm_recon.xml", True, "slab"),
        ("dpm_recon.xml without NoiseAdjust, 2-D", "dpm_recon.xml", True, "2-D, 3 slices"),
        ("dpm_recon.xml as shipped, 2-D with a noise scan", "dpm_recon.xml", False, "2-D, 3 slices, noise scan"),
        ("dpm_recon.xml without NoiseAdjust, 2-D, 75 % echo", "dpm_recon.xml", True, "2-D, 3 slices, 75 % echo"))


def oversampled_slab(tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """(k-space [C, Z, H, 2W] with noise, noise scan [C, 256])."""
    subprocess.run(["bart", "phantom", "-3", "-x", str(N), "-s", str(COILS), "-k", str(tmp / "k")], check=True,
                   capture_output=True)
    k = np.transpose(bart.read_cfl(tmp / "k").reshape(N, N, N, COILS), (3, 2, 1, 0))          # [C, Z, H, W]
    images = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=-1), axis=-1, norm="ortho"), axes=-1)
    padded = np.zeros(k.shape[:-1] + (OVERSAMPLING * N,), complex)
    padded[..., OVERSAMPLING * N // 2 - N // 2:OVERSAMPLING * N // 2 + N // 2] = images
    kos = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(padded, axes=-1), axis=-1, norm="ortho"), axes=-1)
    sigma = NOISE_FRACTION * np.sqrt(np.mean(np.abs(kos) ** 2) / 2)
    rng = np.random.default_rng(0)
    kos = kos + sigma * (rng.standard_normal(kos.shape) + 1j * rng.standard_normal(kos.shape))
    noise = sigma * (rng.standard_normal((COILS, 256)) + 1j * rng.standard_normal((COILS, 256)))
    return kos.astype(np.complex64), noise.astype(np.complex64)


def images_of(path: Path) -> list:
    return sorted(replay.read_ismrmrd_images(path), key=lambda im: (im.image_series_index, im.image_index))


def main() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    print(f"Gadgetron {gadgetron_version()}")
    with tempfile.TemporaryDirectory(prefix="slab_gadgetron_") as tmp:
        tmp = Path(tmp)
        kos, noise = oversampled_slab(tmp)
        mask = np.asarray(equispaced_mask(N, 2, ACS))
        raws = {name: tmp / f"{i}.h5" for i, name in enumerate(("slab with noise scan", "slab", "2-D, 3 slices",
                                                                "2-D, 3 slices, 75 % echo",
                                                                "2-D, 3 slices, noise scan"))}
        for name, scan_noise in (("slab with noise scan", noise), ("slab", None)):
            write_mrd_raw(str(raws[name]), slab_acquisitions(kos, mask, num_acs=ACS, oversampling=OVERSAMPLING,
                                                             noise=scan_noise, slab_thickness_mm=64.0))
        # the same phantom's middle 3 partitions as a 2-D multi-slice scan (Gadgetron's ReconData path, split_slices)
        two_d = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kos, axes=1), axis=1, norm="ortho"), axes=1)
        two_d_raw = make_raw_acquisitions(np.moveaxis(two_d[:, N // 2 - 1:N // 2 + 2], 1, 0), mask, num_acs=ACS)
        write_mrd_raw(str(raws["2-D, 3 slices"]), two_d_raw)
        write_mrd_raw(str(raws["2-D, 3 slices, noise scan"]), make_raw_acquisitions(
            np.moveaxis(two_d[:, N // 2 - 1:N // 2 + 2], 1, 0), mask, num_acs=ACS, noise=noise))
        # the first quarter of the oversampled readout never recorded (Gadgetron's AsymmetricEchoAdjustRO pads it)
        write_mrd_raw(str(raws["2-D, 3 slices, 75 % echo"]),
                      MrdRaw(two_d_raw.header_xml, asymmetric_echo(two_d_raw.acquisitions, OVERSAMPLING * N // 4)))
        replayed = {}                                            # scan -> replay's images, once per file
        for label, name, drop_noise_adjust, scan in RUNS:
            raw = raws[scan]
            if scan not in replayed:
                replay.replay(str(raw), str(tmp / f"replay_{raw.stem}"), mode="local", config={"method": "sense"},
                              dicom=False)
                replayed[scan] = images_of(tmp / f"replay_{raw.stem}" / "images.h5")
            expected = replayed[scan]
            text = (REPO / "configs_xml" / name).read_text().replace('<property name="method" value="dpm"/>',
                                                                     '<property name="method" value="sense"/>')
            if drop_noise_adjust:
                assert NOISE_ADJUST in text, name
                text = text.replace(NOISE_ADJUST, "")
            config = tmp / f"{label.split()[0]}_{raw.stem}.xml"
            config.write_text(text)
            out = tmp / f"out_{config.stem}.h5"
            run = stream(raw, config, out, env, 600)
            got = images_of(out) if run["rc"] == 0 and out.exists() else []
            line = f"{label}: rc {run['rc']}, {len(got)} images (replay: {len(expected)})"
            if got and len(got) == len(expected):
                # ImageFinish through AutoScale -> FloatToUShort: magnitudes scaled per image to uint16, so each
                # image is compared after a least-squares scale of its own
                pixel = 0.0
                for g, e in zip(got, expected):
                    a, b = np.abs(np.asarray(g.data, float)).squeeze(), np.abs(np.asarray(e.data)).squeeze()
                    scale = float((a * b).sum() / (b * b).sum())
                    pixel = max(pixel, float(np.abs(a - scale * b).max() / (scale * b.max())))
                position = max(float(np.abs(np.asarray(g.position) - np.asarray(e.position)).max())
                               for g, e in zip(got, expected))
                line += (f"; pixels vs replay (each image's AutoScale factor removed): max |diff| / max {pixel:.2e}; "
                         f"positions: max {position:.2e} mm; slices {[im.slice for im in got][:4]}...")
            print(line)
            if run["rc"] != 0 or len(got) != len(expected):          # the reason, without Gadgetron's INFO lines
                print("\n".join(line for line in run["log"].splitlines() if "what()" in line or "ERROR" in line))


if __name__ == "__main__":
    main()
