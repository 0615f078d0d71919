"""Shared helpers of the benchmarks: composing trainlab configs, printing tables, writing JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def time_command(command: list[str], cwd: Path, env: dict, marker: str | None = None) -> float:
    """Seconds from starting `command` to its exit, or to the line of its output holding `marker`
    (then it is stopped). A command that fails, or ends without printing `marker`, raises with
    the end of its output."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tail: list[str] = []
    for line in process.stdout:
        if marker and marker in line:
            elapsed = time.perf_counter() - start
            process.kill()
            process.wait()
            return elapsed
        tail = [*tail[-30:], line]
    if process.wait() != 0 or marker:
        raise RuntimeError(f"{' '.join(command)} failed or never printed {marker}:\n{''.join(tail)}")
    return time.perf_counter() - start


def compose(overrides: list[str], output_dir: Path):
    """The config of `python -m trainlab.train <overrides>`, with its run directory set."""
    from trainlab.utils.compose import compose_run_config

    return compose_run_config(overrides, output_dir)


def machine() -> dict:
    import torch

    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        print(f"{title}: no rows")
        return
    columns = list(rows[0])
    cells = [[_format(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
