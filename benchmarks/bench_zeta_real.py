"""ζ on the real and folded cases of bench_real.py: what the default rule and GCV choose, against the best ζ of a sweep.

    OMP_NUM_THREADS=1 python benchmarks/bench_zeta_real.py [--cases PATTERN ...]

The same cases as ``benchmarks/bench_real.py`` (the real 16-coil dev slice at nominal R 2 / 4 / 6 and a random mask,
its folded variant at R 2 / 3, held-out synthetic oblique subjects unfolded and folded), the same NRMSE (magnitude,
against the RSS of the fully sampled coil images, no scale fitting). For every case the DPM runs with default
settings and num_maps="auto" three ways: as shipped (the card's ζ where its table brackets the scan's effective R,
else GCV), with ``zeta="auto"`` (GCV, whatever the card says), and at every ζ of :data:`ZETAS`, which is an oracle:
it needs the reference. The table says how far each rule's choice is from the sweep's best, and whether even the
best ζ would bring the DPM to BART's best PICS (read from ``benchmarks/results/real.json``, the run of
bench_real.py). It answers issue 10's "where a rule fails on a case, by how much", and whether ζ is what keeps the
DPM above PICS on real data.

Writes benchmarks/results/zeta_real.{json,md}.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import fnmatch  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_real import code_state, product_model, real_cases, synthetic_cases  # noqa: E402
from common import RESULTS, markdown_table, write_results  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.masks import effective_acceleration  # noqa: E402
from dpm_core.model_choice import model_entries  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.zeta_rules import ZETA_GRID  # noqa: E402

ZETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)   # wider than GCV's grid on both ends
REAL_RESULTS = RESULTS / "real.json"


def best_pics(case_name: str) -> float | None:
    """Best BART PICS NRMSE of a case (over λ and map counts) in bench_real.py's results, or None."""
    if not REAL_RESULTS.exists():
        return None
    rows = [r for r in json.loads(REAL_RESULTS.read_text())["rows"]
            if r["case"] == case_name and r["method"].startswith("BART PICS")]
    return min(r["NRMSE"] for r in rows) if rows else None


def dpm(kspace, mask, ref, model, maps=None, **options) -> tuple[float, dict, np.ndarray]:
    """(NRMSE, info, coil maps [S, M, C, H, W]) of the default DPM with ``model`` (a card path) and ``options`` on one
    case; ``maps`` given skips their estimation (the same maps: the estimate depends on the data only)."""
    result = Reconstructor(method="dpm", model=model, device="cpu", progress=None,
                           **options).reconstruct(kspace, mask, maps=maps)
    return metrics.nrmse(np.abs(result.images), ref), result.info, result.maps


def run_case(case, entries) -> dict:
    """One case with the model the product chooses for its contrast (as bench_real.py)."""
    entry = product_model(case, entries)
    model = str(entry.card_path)
    S, C, H, W = case.kspace.shape
    under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
    ref = rss(ifft2c(case.kspace)).numpy()
    t0 = time.perf_counter()
    default_nrmse, default_info, maps = dpm(under, case.mask, ref, model)
    # where the card does not bracket R the shipped rule is GCV itself: the same run
    gcv_nrmse, gcv_info = ((default_nrmse, default_info) if default_info["zeta_rule"].startswith("auto:gcv")
                           else dpm(under, case.mask, ref, model, maps, zeta="auto")[:2])
    sweep = {z: dpm(under, case.mask, ref, model, maps, zeta=z)[0] for z in ZETAS}
    best_zeta = min(sweep, key=sweep.get)
    pics = best_pics(case.name)
    row = {"case": case.name, "folded": "yes" if case.folded else "no", "model": entry.name,
           "R eff": round(effective_acceleration(case.mask), 2),
           "default rule": default_info["zeta_rule"], "default ζ": _zeta(default_info["zeta"]),
           "default NRMSE": default_nrmse, "GCV ζ": _zeta(gcv_info["zeta"]), "GCV NRMSE": gcv_nrmse,
           "best ζ (sweep)": best_zeta, "best NRMSE": sweep[best_zeta],
           "default / best": default_nrmse / sweep[best_zeta], "GCV / best": gcv_nrmse / sweep[best_zeta],
           "best PICS": pics if pics is not None else "",
           "best-ζ DPM / best PICS": sweep[best_zeta] / pics if pics else "",
           "sweep": {str(z): v for z, v in sweep.items()}, "gcv_table": gcv_info.get("zeta_gcv"),
           "seconds": time.perf_counter() - t0}
    print(f"{case.name}: default ζ {row['default ζ']} ({row['default rule']}) {default_nrmse:.5f}, "
          f"GCV ζ {row['GCV ζ']} {gcv_nrmse:.5f}, best ζ {best_zeta:g} {sweep[best_zeta]:.5f}", flush=True)
    return row


def _zeta(value) -> str:
    """ζ as one number, or per slice joined by '/' when the slices differ."""
    values = value if isinstance(value, list) else [value]
    text = [f"{float(v):.3g}" for v in values]
    return text[0] if len(set(text)) == 1 else "/".join(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["*"], help="case names or glob patterns (as bench_real.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    state = code_state()

    def wanted(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in args.cases)

    cases = real_cases(wanted) + synthetic_cases(wanted, 3, 2)[0]
    if not cases:
        sys.exit(f"no case matches {args.cases} (or the real slice is absent)")
    t0 = time.perf_counter()
    entries = model_entries()
    rows = [run_case(c, entries) for c in cases]
    columns = ["case", "folded", "model", "R eff", "default rule", "default ζ", "default NRMSE", "GCV ζ", "GCV NRMSE",
               "best ζ (sweep)", "best NRMSE", "default / best", "GCV / best", "best PICS", "best-ζ DPM / best PICS"]
    sweep_rows = [{"case": r["case"], **{f"ζ {z:g}": r["sweep"][str(z)] for z in ZETAS}} for r in rows]
    notes = "\n".join([
        f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_zeta_real.py` ({time.perf_counter() - t0:.0f} s "
        f"for {len(rows)} cases; {state}). Cases, reference and NRMSE as `bench_real.py` (`real.md`).",
        "",
        "The DPM with default settings (warm start, num_maps=\"auto\", seed 0) and the model the product chooses "
        "for the case's contrast (as `bench_real.py`: foundation_default for the headerless real slice) as shipped "
        f"('default': the card's ζ where its table brackets the effective R, else GCV over {list(ZETA_GRID)}), "
        f"with zeta=\"auto\" (GCV) on every case, and at every ζ of {list(ZETAS)} (an oracle sweep: it uses the "
        "reference). 'best PICS' is BART's best l1-wavelet NRMSE over λ and map counts from `real.json`.",
    ])
    path = write_results("zeta_real", rows, columns, "ζ on real and folded scans: the rules against the best ζ",
                         notes, extra={"zetas": list(ZETAS), "gcv_grid": list(ZETA_GRID), "code": state})
    with path.open("a") as f:
        f.write("\n## NRMSE at every ζ of the sweep\n\n" + "\n".join(
            markdown_table(sweep_rows, ["case", *(f"ζ {z:g}" for z in ZETAS)])) + "\n")


if __name__ == "__main__":
    main()
