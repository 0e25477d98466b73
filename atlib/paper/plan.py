"""How long a profile's CIFAR-10 suite takes on one GPU, from throughput measured on that GPU.

    python -m atlib plan --profile paper --rates results/benchmarks/h200-2026-11-26/1-main-and-plan.json \\
        results/benchmarks/h200-2026-11-26/2-single-runs.json results/benchmarks/h200-2026-11-26/3-channels-last.json

``plan_groups`` lists what ``schedule.run_cells`` will train, group by group (a cohort, a set of concurrent runs
or a single run), each with its *shape* (student, teacher, methods, size, shared batches, concurrent).
``benchmarks/throughput.py --plan PROFILE --json FILE`` measures every distinct shape on the GPU (aggregate
images/s; ``load_rates`` reads the file); ``estimate`` turns the two into seconds:

    seconds(group) = epochs x size x (train images + test images / 3) / rate(shape) + epochs x EPOCH_OVERHEAD_S

with evaluation of the test images (10,000 on CIFAR-10) each epoch counted as forward passes, a third of a training
image each, and a fixed per-epoch cost for checkpoints and metrics. ``measured_rates`` (``MEASURED_RATE_FILES``: the
H200 files above) gives the report its per-run GPU estimates (``run_seconds``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..paths import REPO_ROOT
from ..training.config import RunConfig
from .grids import TABLES
from .schedule import cohort_size, concurrent_size, is_cohort, schedule
from .settings import Settings
from .suite import suite_jobs

TRAIN_IMAGES = {"cifar10": 50_000, "sample": 2_500}
TEST_IMAGES = {"cifar10": 10_000, "sample": 1_000}
EPOCH_OVERHEAD_S = 0.05


def group_shape(group: list[RunConfig], shared: bool) -> dict:
    """What decides a group's speed: architectures, methods, size, shared batches, and for a set of concurrent
    single runs ``concurrent: True`` (absent otherwise, so earlier rate files keep their keys)."""
    c0 = group[0]
    teachers = sorted({c.teacher_arch for c in group if c.teacher_arch})
    cohort = is_cohort(group)
    shape = {"student": c0.student, "teacher": teachers[0] if teachers else None,
             "methods": sorted(c.method for c in group), "k": len(group), "shared": bool(shared and cohort),
             "precision": c0.precision}
    if len(group) > 1 and not cohort:
        shape["concurrent"] = True
    return shape


def shape_key(shape: dict) -> str:
    return json.dumps({k: shape[k] for k in sorted(shape)}, sort_keys=True)


def shape_label(shape: dict) -> str:
    counts = Counter(shape["methods"])
    methods = ", ".join(f"{n} x {m}" if n > 1 else m for m, n in sorted(counts.items()))
    teacher = f" from {shape['teacher']}" if shape["teacher"] else ""
    if shape["k"] == 1:
        kind = "single"
    elif shape.get("concurrent"):
        kind = f"{shape['k']} concurrent"
    else:
        kind = f"cohort of {shape['k']}" + (" (shared batches)" if shape["shared"] else "")
    return f"{kind}: {shape['student']}{teacher} [{methods}]"


def plan_groups(settings: Settings, tables=None) -> list[dict]:
    """The groups ``run_cells`` trains for ``tables`` (default: the CIFAR-10 tables), in order."""
    settings.check_paper_suite("plan")
    cells = [c for name in (tables or list(TABLES)) for c in TABLES[name]()]
    teachers, students = suite_jobs(cells, settings)
    size, concurrent = cohort_size(settings), concurrent_size(settings, on_gpu=True)
    rows = []
    for phase, configs in (("teachers", teachers), ("students", students)):
        for group in schedule(configs, size, settings.share_batches, concurrent):
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


def _nearest_rate(shape: dict, rates: dict[str, float]) -> float | None:
    """A group shape not measured as such: the measured group of the same kind (cohort or concurrent), student,
    teacher, batch sharing and precision with the nearest size (per-run costs of CE, KD and AT are close; the size
    matters); concurrent runs also need the same methods."""
    concurrent = shape.get("concurrent", False)

    def kind(s: dict) -> dict:
        out = {f: s[f] for f in ("student", "teacher", "shared", "precision")}
        out["concurrent"] = s.get("concurrent", False)
        if concurrent:
            out["methods"] = sorted(set(s["methods"]))
        return out

    best = None
    for key, rate in rates.items():
        other = json.loads(key)
        if other["k"] > 1 and kind(other) == kind(shape):
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
            rate, approximate = _nearest_rate(row["shape"], rates), True
        if rate is None and row["shape"].get("concurrent"):
            alone = {**row["shape"], "methods": row["shape"]["methods"][:1], "k": 1}
            del alone["concurrent"]
            single = rates.get(shape_key(alone))
            rate, approximate = (single, True) if single else (None, False)
        seconds = None
        if rate:
            seconds = (row["images"] + row["eval_images"] / 3) / rate + row["epochs"] * EPOCH_OVERHEAD_S
        out.append({**row, "rate": rate, "approximate": approximate and rate is not None, "seconds": seconds})
    return out


# The rates measured so far (one NVIDIA H200, results/benchmarks/h200-2026-11-26; later files win: the last one was
# measured with the engine's current defaults, NHWC)
MEASURED_RATE_FILES = [REPO_ROOT / "results" / "benchmarks" / "h200-2026-11-26" / name
                       for name in ("1-main-and-plan.json", "2-single-runs.json", "3-channels-last.json")]
MEASURED_ON = "an H200"


def measured_rates() -> dict[str, float]:
    rates: dict[str, float] = {}
    for path in MEASURED_RATE_FILES:
        if path.is_file():
            rates.update(load_rates(path))
    return rates


def run_seconds(config: RunConfig, rates: dict[str, float]) -> tuple[float | None, bool]:
    """GPU seconds of one run trained alone: (seconds or None if nothing comparable was measured, approximate).
    Not measured as such: the mean rate of single runs of the same student and teacher with other methods, else
    the aggregate rate of a cohort of them (smaller than one run alone for the networks measured so far)."""
    shape = group_shape([config], False)
    rate, approximate = rates.get(shape_key(shape)), False
    if rate is None:
        alike = [(json.loads(k), r) for k, r in rates.items()]
        alike = [(s, r) for s, r in alike if s["student"] == shape["student"] and s["teacher"] == shape["teacher"]
                 and s["precision"] == shape["precision"] and not s.get("concurrent")]
        singles = [r for s, r in alike if s["k"] == 1]
        cohorts = [r for s, r in alike if s["k"] > 1]
        pool = singles or cohorts
        rate, approximate = (sum(pool) / len(pool), True) if pool else (None, False)
    if rate is None:
        return None, False
    n = config.train_subset or TRAIN_IMAGES.get(config.dataset, 50_000)
    test = config.test_subset or TEST_IMAGES.get(config.dataset, 10_000)
    return config.epochs * (n + test / 3) / rate + config.epochs * EPOCH_OVERHEAD_S, approximate


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
        lines.append("~: rate of the measured group of the same kind and networks with the nearest size; for "
                     "concurrent runs never measured together, one run's rate alone (no overlap assumed)")
    return "\n".join(lines)
