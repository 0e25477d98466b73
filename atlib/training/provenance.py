"""Where, when and with what a run was trained: the environment each metrics line and record carries, and the
segments of a run trained in several sittings (a CPU campaign continued on a GPU, say).

``environment(device, precision)``: device name (GPU name, or the CPU model with its AVX-512 / AMX support), torch,
threads, CUDA / cuDNN, TF32, the code commit. ``segments(rows)``: a run's metrics lines grouped into stretches of
consecutive epochs trained the same way (device, threads, torch, commit, precision, layout), each with its dates and
median images/s.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path

import torch

from ..paths import REPO_ROOT

CODE_PATHS = ("atlib", "profiles", "scripts", "pyproject.toml")  # what makes a run (not results or reports)


def code_commit() -> str:
    """The commit that made a run: ``ATLIB_COMMIT`` (set where the tree travels without ``.git``), else git's HEAD
    (with ``+dirty`` when the code, ``CODE_PATHS``, differs from it), else ``"unknown"``."""
    if os.environ.get("ATLIB_COMMIT"):
        return os.environ["ATLIB_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: torch.device, precision: str) -> dict:
    """Where and with what a run was trained: commit, CUDA/cuDNN versions, precision and whether TF32 was on."""
    cuda = device.type == "cuda"
    return {"commit": code_commit(), "precision": precision,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            # PyTorch's defaults: TF32 in convolutions on, in matrix products off (both at fp32 "precision")
            "tf32_conv": bool(torch.backends.cudnn.allow_tf32) if cuda else False,
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else False}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), with its AVX-512 / AMX support: CPU speed depends on both."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = " ".join(value.split())
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    extras = [label for label, flag in (("AVX-512", "avx512f"), ("AMX bf16", "amx_bf16")) if flag in flags]
    return f"{name} ({', '.join(extras) if extras else 'no AVX-512'})" if flags else name


SEGMENT_KEYS = ("device_name", "threads", "torch", "commit", "precision", "channels_last", "cuda_graph", "compiled",
                "teacher_ahead")


def segments(rows: list[dict]) -> list[dict]:
    """Consecutive epochs trained the same way (``SEGMENT_KEYS`` of each line's environment): first and last epoch,
    those settings, the dates of the first and last epoch (``at``; absent in lines written before 2026-12-07) and
    the median images/s."""
    out: list[dict] = []
    for row in rows:
        env = row.get("environment", {})
        how = {k: env.get(k) for k in SEGMENT_KEYS}
        if out and out[-1]["how"] == how and out[-1]["last"] == row["epoch"] - 1:
            seg = out[-1]
        else:
            seg = {"first": row["epoch"], "how": how, "from": row.get("at"), "rates": []}
            out.append(seg)
        seg["last"], seg["to"] = row["epoch"], row.get("at")
        seg["rates"].append(row["images_per_s"])
    for seg in out:
        seg["images_per_s"] = statistics.median(seg.pop("rates"))
    return out
