"""How long a profile's CIFAR-10 suite takes on one GPU, from throughput measured on that GPU.

    python -m atlib plan --profile paper --rates results/benchmarks/throughput-h200.json

``plan_groups`` lists what ``experiments.run_cells`` will train, group by group (a cohort or a single run), each
with its *shape* (student, teacher, methods, size, shared batches). ``benchmarks/throughput.py --plan PROFILE``
measures every distinct shape on the GPU (aggregate images/s); ``estimate`` turns the two into seconds:

    seconds(group) = epochs x train images x size / rate(shape) x (1 + EVAL_FRACTION) + epochs x EPOCH_OVERHEAD_S

with evaluation of the 10,000 test images each epoch counted as forward passes (a third of a training image each)
and a fixed per-epoch cost for checkpoints and metrics.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .config import RunConfig
from .experiments import TABLES, Settings, cohort_size, schedule, suite_jobs

TRAIN_IMAGES = {"cifar10": 50_000, "sample": 2_500}
TEST_IMAGES = {"cifar10": 10_000, "sample": 1_000}
EPOCH_OVERHEAD_S = 0.05


def group_shape(group: list[RunConfig], shared: bool) -> dict:
    """What decides a group's speed: architectures, methods, size, shared batches."""
    c0 = group[0]
    teachers = sorted({c.teacher_arch for c in group if c.teacher_arch})
    return {"student": c0.student, "teacher": teachers[0] if teachers else None,
            "methods": sorted(c.method for c in group), "k": len(group), "shared": bool(shared and len(group) > 1),
            "precision": c0.precision}


def shape_key(shape: dict) -> str:
    return json.dumps({k: shape[k] for k in sorted(shape)}, sort_keys=True)


def shape_label(shape: dict) -> str:
    counts = Counter(shape["methods"])
    methods = ", ".join(f"{n} x {m}" if n > 1 else m for m, n in sorted(counts.items()))
    teacher = f" from {shape['teacher']}" if shape["teacher"] else ""
    kind = "single" if shape["k"] == 1 else f"cohort of {shape['k']}" + (" (shared batches)" if shape["shared"]
                                                                         else "")
    return f"{kind}: {shape['student']}{teacher} [{methods}]"


def plan_groups(settings: Settings, tables=None) -> list[dict]:
    """The groups ``run_cells`` trains for ``tables`` (default: the CIFAR-10 tables), in order."""
    cells = [c for name in (tables or list(TABLES)) for c in TABLES[name]()]
    teachers, students = suite_jobs(cells, settings)
    size = cohort_size(settings)
    rows = []
    for phase, configs in (("teachers", teachers), ("students", students)):
        for group in schedule(configs, size, settings.share_batches):
            c0 = group[0]
            n = c0.train_subset or TRAIN_IMAGES.get(c0.dataset, 50_000)
            rows.append({"phase": phase, "shape": group_shape(group, settings.share_batches), "runs": len(group),
                         "epochs": c0.epochs, "images": c0.epochs * n * len(group),
                         "eval_images": c0.epochs * (c0.test_subset or TEST_IMAGES.get(c0.dataset, 10_000))
                         * len(group)})
    return rows


def _case_shape(result: dict) -> dict | None:
    """The group shape a benchmark result measured: its ``shape``, or for a plain graphed engine case (student,
    teacher WRN-16-2 where the method needs one) the single-run shape it stands for."""
    if "shape" in result:
        return result["shape"]
    options = result.get("options", {})
    if result.get("kind") != "engine" or not options.get("graph") or options.get("replay_only") \
            or options.get("cudnn_benchmark"):
        return None
    method = options["method"]
    return {"student": options.get("student", "wrn-16-1"),
            "teacher": None if method == "student" else options.get("teacher", "wrn-16-2"),
            "methods": [method], "k": 1, "shared": False, "precision": options.get("precision", "fp32")}


def load_rates(path: str | Path) -> dict[str, float]:
    """Measured aggregate images/s by shape key, from ``benchmarks/throughput.py --json`` (a case measured twice:
    the later one, so list a file measured with the engine's current defaults last)."""
    rates = {}
    for result in json.loads(Path(path).read_text())["results"]:
        shape = _case_shape(result)
        if shape is not None and result.get("images_per_s"):
            rates[shape_key(shape)] = result["images_per_s"]
    return rates


def _nearest_cohort_rate(shape: dict, rates: dict[str, float]) -> float | None:
    """A cohort shape not measured as such: the measured cohort of the same student, teacher, batch sharing and
    precision with the nearest size (per-run costs of CE, KD and AT are close; the size matters)."""
    best = None
    for key, rate in rates.items():
        other = json.loads(key)
        if other["k"] > 1 and all(other[f] == shape[f] for f in ("student", "teacher", "shared", "precision")):
            distance = abs(other["k"] - shape["k"])
            if best is None or distance < best[0]:
                best = (distance, rate)
    return None if best is None else best[1]


def estimate(rows: list[dict], rates: dict[str, float]) -> list[dict]:
    """Rows with ``rate``, ``approximate`` and ``seconds`` (None where nothing comparable was measured)."""
    out = []
    for row in rows:
        rate, approximate = rates.get(shape_key(row["shape"])), False
        if rate is None and row["shape"]["k"] > 1:
            rate, approximate = _nearest_cohort_rate(row["shape"], rates), True
        seconds = None
        if rate:
            seconds = (row["images"] + row["eval_images"] / 3) / rate + row["epochs"] * EPOCH_OVERHEAD_S
        out.append({**row, "rate": rate, "approximate": approximate and rate is not None, "seconds": seconds})
    return out


def format_plan(rows: list[dict]) -> str:
    lines = [f"{'phase':<9} {'group':<72} {'runs':>4} {'Mimages':>8} {'img/s':>9} {'minutes':>8}"]
    for r in rows:
        rate = (("~" if r.get("approximate") else "") + f"{r['rate']:,.0f}") if r.get("rate") else "?"
        minutes = f"{r['seconds'] / 60:.1f}" if r.get("seconds") is not None else "?"
        lines.append(f"{r['phase']:<9} {shape_label(r['shape']):<72.72} {r['runs']:>4} {r['images'] / 1e6:>8.1f} "
                     f"{rate:>9} {minutes:>8}")
    known = [r["seconds"] for r in rows if r.get("seconds") is not None]
    missing = sum(1 for r in rows if r.get("seconds") is None)
    runs = sum(r["runs"] for r in rows)
    lines.append(f"total: {runs} runs in {len(rows)} groups, {sum(r['images'] for r in rows) / 1e9:.2f} G training "
                 f"images, {sum(known) / 3600:.2f} GPU-hours estimated"
                 + (f" ({missing} groups not measured: not counted)" if missing else ""))
    if any(r.get("approximate") for r in rows):
        lines.append("~: rate of the measured cohort of the same networks with the nearest size")
    return "\n".join(lines)
