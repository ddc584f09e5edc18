"""Shared helpers for the benchmark scripts: machine description, JSON + markdown table output."""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "loadavg_1min": os.getloadavg()[0]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median_time(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds (CUDA synchronized)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    """Lines of a markdown table: one column per key in ``columns``, floats as 4 significant digits."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_results(name: str, rows: list[dict], columns: list[str], title: str, notes: str = "",
                  extra: dict | None = None) -> Path:
    """Write results/<name>.json (rows + machine + ``extra``) and results/<name>.md (notes, then a table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = machine()
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": meta, **(extra or {}), "rows": rows}, indent=2))
    lines = [f"# {title}", "", f"Machine: {meta['platform']}, {meta['cpu_count']} CPUs, torch {meta['torch']}"
             + (f", GPU {meta['gpu']}" if "gpu" in meta else ", no GPU") + f", load {meta['loadavg_1min']:.1f}", ""]
    if notes:
        lines += [notes, ""]
    lines += markdown_table(rows, columns)
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())
    return path


VOLUME_LOG = re.compile(r" in ([0-9.]+) s \(coil maps ([0-9.]+) s, sampling ([0-9.]+) s\)")


def parse_volume_log(log: str) -> tuple[float, float, float]:
    """(reconstruction, coil maps, sampling) seconds summed over the gadget's per-volume log lines (NaN if none)."""
    rows = [tuple(map(float, m)) for m in VOLUME_LOG.findall(log)]
    return tuple(sum(r[i] for r in rows) for i in range(3)) if rows else (float("nan"),) * 3
