"""The CPU demo (profile ``cpu-demo``): attention transfer shown on a laptop, in a low-data setting of its own.

NOT the paper's protocol. A WRN-16-1 student learns from the committed WRN-16-2 teacher of the ``one-seed`` profile
(200 epochs on full CIFAR-10) while itself training on the embedded class-balanced CIFAR-10 sample (2,500 training
images) for a few epochs; student alone, AT, KD and AT+KD, several seeds (KD and AT+KD on fewer: ``SEEDS_OF``). The
profile file says why its sizes are what they are.

- ``cells``: the four runs as table cells; ``seeds_of``: the seeds each one is trained with.
- ``train``: trains (or loads, or resumes) the runs seed by seed, ``settings.concurrent`` at a time, each in its own
  process on one CPU thread (so the numbers do not depend on how many run at once), then evaluates each run's final
  weights on the whole CIFAR-10 test set where a data root holds it (``final_test``).
- ``per_seed`` / ``paired``: the final test error of every run by seed, and each method's paired differences to the
  student of the same seed (same initialisation seed, same data order) with their median, a 95% t interval of
  their mean, the exact sign test and a verdict that follows from the interval (``atlib.paper.stats``).
- ``curves_figure`` (test error vs epoch on the sample's test images, mean and range over seeds), ``maps_figure``
  (Figure 6 style: student, AT student and teacher on the same test images), ``write_report``
  (``results/cpu-demo/REPORT.md``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path

import pandas as pd

from ..training.store import RunStore, atomic_write_bytes
from . import stats
from .grids import Cell, make_cell
from .settings import Settings
from .suite import run_id_for, teacher_config

logger = logging.getLogger(__name__)

TEACHER = "wrn-16-2"
STUDENT = "wrn-16-1"
ROW = "WRN-16-1 / WRN-16-2"
COLUMNS = [("student", "student"), ("AT", "at"), ("KD", "kd"), ("AT+KD", "at+kd")]  # (column, method)
# KD and AT+KD are trained with the profile's first 3 seeds only (the issue allows fewer seeds for them; the profile
# says why): every other column with all of them. Student and AT must have every seed (the paired AT comparison).
SEEDS_OF = {"KD": 3, "AT+KD": 3}
MAP_SEED_INDEX = 0  # the maps show the runs of the profile's first seed
SAMPLE_TEST_IMAGES = 1000   # the embedded sample's test images (100 per class)
CIFAR_TEST_IMAGES = 10000   # CIFAR-10's test set
FINAL_TEST_FILE = "final-test.json"  # in each run's directory: its final weights on the CIFAR-10 test set
TRAINING_FILE = "training.json"      # in results/<profile>/: the machine and its load when the runs were trained


def cells() -> list[Cell]:
    """Student, AT, KD and AT+KD (the methods' default options: beta 1000, p 2, all groups; T 4, alpha 0.9)."""
    return [make_cell("cpu-demo", ROW, column, None, STUDENT, method, teacher=None if method == "student" else TEACHER)
            for column, method in COLUMNS]


def seeds_of(settings: Settings, column: str) -> list[int]:
    """The seeds ``column`` is trained with: the profile's seeds, or their first ``SEEDS_OF[column]``."""
    if column not in dict(COLUMNS):
        raise ValueError(f"unknown demo column {column!r}; expected one of {[c for c, _ in COLUMNS]}")
    return settings.seeds[:SEEDS_OF[column]] if column in SEEDS_OF else list(settings.seeds)


def jobs(settings: Settings) -> list[tuple[int, Cell]]:
    """Every (seed, cell) of the demo, seed by seed, each seed in ``COLUMNS`` order."""
    return [(seed, cell) for seed in settings.seeds for cell in cells() if seed in seeds_of(settings, cell.column)]


def configs(settings: Settings) -> list:
    """The ``RunConfig`` of every job (``jobs`` order): what another trainer (``atlib work``) should train for the
    demo, with ``RUN_THREADS`` threads per run so that its numbers equal ``train``'s."""
    from .suite import config_for
    return [config_for(cell, settings, seed) for seed, cell in jobs(settings)]


def check(settings: Settings) -> None:
    """ValueError (one line) unless the settings borrow a finished teacher (``teachers_from``): the demo never
    trains its teacher. ``MissingTeacherError`` (with the command that trains it) if it is not there."""
    from .suite import check_borrowed_teachers
    if settings.teachers_from is None:
        raise ValueError("the CPU demo learns from another profile's finished teacher: set teachers_from (the "
                         "cpu-demo profile uses one-seed)")
    if isinstance(settings.concurrent, bool) or not isinstance(settings.concurrent, int) or settings.concurrent < 1:
        raise ValueError(f"concurrent must be a whole number of runs >= 1, got concurrent={settings.concurrent!r}")
    check_borrowed_teachers(cells(), settings)


def describe(settings: Settings) -> str:
    """The first line of everything the demo shows: what it is, how it departs from the paper's protocol, and which
    test set its numbers come from."""
    check(settings)
    theirs = teacher_config(TEACHER, settings.teacher_settings())
    teacher_data = "full CIFAR-10" if theirs.dataset == "cifar10" and not theirs.train_subset else \
        f"{theirs.train_subset or 2500:,} images of {theirs.dataset}"
    counts = sorted({len(seeds_of(settings, c)) for c, _ in COLUMNS}, reverse=True)
    seeds = f"{counts[0]} seeds" if len(counts) == 1 else \
        f"{counts[0]} seeds (KD and AT+KD: {counts[-1]})"
    return (f"Low-data CPU variant, not the paper's protocol: a {STUDENT.upper()} student trained on "
            f"{_images(settings)} for {settings.epochs} epoch{'s' * (settings.epochs != 1)} (learning rate schedule "
            f"scaled{_batch(settings)}), "
            f"learning from the `{settings.teachers_from}` profile's {TEACHER.upper()} teacher ({theirs.epochs} "
            f"epochs on {teacher_data}); {seeds}; final test error on {_final_test_words(settings)}. The "
            f"paper trains the student 200 epochs on all 50,000 images (Table 1: 8.77% alone, 7.93% with AT).")


def _batch(settings: Settings) -> str:
    return f", batch {settings.batch_size}" if settings.batch_size else ""


def _images(settings: Settings) -> str:
    if settings.dataset == "sample":
        if settings.train_subset:
            return f"the first {settings.train_subset:,} images of the embedded CIFAR-10 sample"
        return "2,500 CIFAR-10 training images (the embedded class-balanced sample, 250 per class)"
    return f"the first {settings.train_subset:,} CIFAR-10 training images" if settings.train_subset else \
        "all CIFAR-10 training images"


def _test_images(settings: Settings) -> str:
    """The images each epoch is evaluated on (the training data's own test split)."""
    n = settings.test_subset or (SAMPLE_TEST_IMAGES if settings.dataset == "sample" else CIFAR_TEST_IMAGES)
    if settings.dataset == "sample":
        return f"the embedded sample's {'first ' if settings.test_subset else ''}{n:,} test images"
    return f"{'the first ' if settings.test_subset else ''}{n:,} CIFAR-10 test images"


def _final_test_words(settings: Settings) -> str:
    if final_test(settings) == "cifar10":
        n = final_images(settings)
        curves = f"the per-epoch curves: {_test_images(settings)}"
        return f"the whole CIFAR-10 test set ({n:,} images; {curves})" if n == CIFAR_TEST_IMAGES else \
            f"the first {n:,} CIFAR-10 test images ({curves})"
    return (f"{_test_images(settings)} only (no CIFAR-10 data root found: set ATLIB_DATA or data_root for the whole "
            f"{CIFAR_TEST_IMAGES:,}-image test set)")


# -- the final test set --------------------------------------------------------------------------------------------
# Each epoch is evaluated on the training data's own test split (the sample's 1,000 images: one run's error near 47%
# carries a binomial standard error of ~1.6 points there, as large as the effect). Each run's final weights are also
# evaluated on the whole CIFAR-10 test set (~0.5 points) wherever a data root holds it; the tables use that.
def data_root_with_cifar(settings: Settings) -> Path | None:
    """The data root holding CIFAR-10's test batch (``settings.data_root``, else ``ATLIB_DATA``, else ./data), or
    None."""
    from ..data import resolve_data_root
    root = resolve_data_root(settings.data_root)
    return root if (root / "cifar-10-batches-py" / "test_batch").is_file() else None


def final_images(settings: Settings) -> int:
    """How many CIFAR-10 test images the final evaluation uses: all 10,000, or the first ``test_subset`` (tiny
    settings for tests)."""
    return min(settings.test_subset or CIFAR_TEST_IMAGES, CIFAR_TEST_IMAGES)


def final_test(settings: Settings) -> str:
    """"cifar10" when the final numbers come from the CIFAR-10 test set (a data root holds it, or every finished
    run has its stored evaluation), else "sample" (the records' own last-epoch errors)."""
    if data_root_with_cifar(settings) is not None:
        return "cifar10"
    store, n = RunStore(settings.store_root), final_images(settings)
    ids = [run_id_for(cell, settings, seed) for seed, cell in jobs(settings)]
    done = [i for i in ids if store.status(i) == "finished"]
    return "cifar10" if done and all(_stored_final(store, i, n) is not None for i in done) else "sample"


def _stored_final(store: RunStore, run_id: str, images: int) -> dict | None:
    path = store.run_dir(run_id) / FINAL_TEST_FILE
    if not path.is_file():
        return None
    found = json.loads(path.read_text())
    return found if found.get("images") == images else None


_TEST_SETS: dict[tuple[str, int], object] = {}


def _cifar_test(root: Path, images: int):
    """The first ``images`` of CIFAR-10's test set under ``root`` (loaded once per process)."""
    key = (str(root), images)
    if key not in _TEST_SETS:
        from ..data import ImageSet, load_cifar10
        _, test = load_cifar10(root, download=False)
        _TEST_SETS[key] = ImageSet(test.images[:images], test.labels[:images], test.classes)
    return _TEST_SETS[key]


RUN_THREADS = 1  # every demo run, and every final evaluation, on one CPU thread (see ``train``)


@contextlib.contextmanager
def _threads(n: int):
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_images(model, data) -> dict:
    """Test loss and top-1 error (%) of an eval-mode ``model`` on ``data`` (an ``ImageSet``), on the CPU with
    channels-last activations, as the engine evaluates each epoch."""
    import torch
    from torch import nn
    from ..data import eval_batches
    model = model.eval().to(memory_format=torch.channels_last)
    loss, wrong = 0.0, 0
    with torch.no_grad():
        for x, y in eval_batches(data, 1000, "cpu", torch.channels_last):
            logits, _ = model(x)
            loss += float(nn.functional.cross_entropy(logits.double(), y, reduction="sum"))
            wrong += int((logits.argmax(1) != y).sum())
    return {"images": len(data), "wrong": wrong, "test_error": 100.0 * wrong / len(data),
            "test_loss": loss / len(data)}


def evaluate_final(store_root: str | Path, run_id: str, data_root: str | Path, images: int) -> dict:
    """Evaluate a finished run's final weights on the first ``images`` CIFAR-10 test images under ``data_root`` (one
    thread), store the result as ``FINAL_TEST_FILE`` in its run directory and return it."""
    store = RunStore(store_root)
    data = _cifar_test(Path(data_root), images)
    t0 = time.perf_counter()
    with _threads(RUN_THREADS):
        model = store.load_model(run_id)
        out = {"run_id": run_id, "test_set": "CIFAR-10 test set" + ("" if images == CIFAR_TEST_IMAGES else
                                                                      f", first {images:,} images"),
               **evaluate_images(model, data)}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_bytes(store.run_dir(run_id) / FINAL_TEST_FILE,
                       (json.dumps(out, indent=2, sort_keys=True) + "\n").encode())
    return out


def final_result(settings: Settings, run_id: str) -> dict | None:
    """A finished run's final test result on the test set ``final_test`` names: the stored CIFAR-10 evaluation
    (made now if missing and possible), or the record's last epoch. None if the run is not finished."""
    store = RunStore(settings.store_root)
    if store.status(run_id) != "finished":
        return None
    if final_test(settings) == "sample":
        record = store.read_record(run_id)
        return {"run_id": run_id, "test_set": _test_images(settings),
                "images": settings.test_subset or SAMPLE_TEST_IMAGES, "test_error": record["test_error"]}
    n = final_images(settings)
    found = _stored_final(store, run_id, n)
    if found is None:
        root = data_root_with_cifar(settings)
        if root is None or not (store.run_dir(run_id) / "weights.pt").is_file():
            return None  # (only where a stored evaluation was deleted by hand)
        found = evaluate_final(settings.store_root, run_id, root, n)
    return found


# -- training ------------------------------------------------------------------------------------------------------
# Channels-last (NHWC) activations: the same arithmetic in another memory layout (tests/test_cohorts.py),
# measured 1.34x faster for a WRN-16-1 training step and 1.17x for one with the WRN-16-2 teacher on 2 CPU cores (fp32,
# batch 128). engine.train keeps NCHW on CPUs by default; the demo asks for NHWC.
CHANNELS_LAST = True


def _train_job(config, store_root: str, concurrent: int, final: tuple[str, int] | None, progress: bool = False):
    """Train one run on one thread (in a worker process, or in this one), then evaluate its final weights on the
    CIFAR-10 test set (``final``: data root and image count; None: no data root). Returns (record, final result)."""
    from ..training.engine import resolve_device, run_to_end, train_steps
    from ..training.engine import train as train_run
    device = resolve_device(config.device)
    with _threads(RUN_THREADS) if device.type == "cpu" else contextlib.nullcontext():
        if device.type == "cpu":
            record = run_to_end(train_steps(config, Path(store_root), progress, False, None, device,
                                            channels_last=CHANNELS_LAST, concurrent=concurrent))
        else:
            record = train_run(config, results=store_root, progress=progress, log=None, channels_last=CHANNELS_LAST)
    store = RunStore(store_root)
    if (store.run_dir(record["run_id"]) / "metrics.jsonl").is_file():
        store.compress_metrics(record["run_id"])  # committed runs keep their metrics compressed
    result = None
    if final is not None:
        result = _stored_final(store, record["run_id"], final[1]) or \
            evaluate_final(store_root, record["run_id"], final[0], final[1])
    return record, result


def _worker_init() -> None:
    import torch
    torch.set_num_threads(RUN_THREADS)


def train(settings: Settings, log=logger.info) -> list[dict | None]:
    """Train (or load, or resume) the demo's runs seed by seed (``jobs``: student, AT, KD, AT+KD of one seed before
    the next seed), so an interrupted demo has whole seeds first, and evaluate each on the CIFAR-10 test set where a
    data root holds it. ``settings.concurrent`` runs train at once, each in its own process; every run (also one at a
    time) uses one CPU thread, so its numbers do not depend on ``concurrent``: two such runs side by side measured
    1.25x the throughput of one run on two threads, and a one-thread run does not stall when other processes load
    the CPU. Where ``settings.trains_missing()`` is false only the finished runs are returned (None for the others).
    Records in ``jobs`` order."""
    check(settings)
    todo = jobs(settings)
    store = RunStore(settings.store_root)
    ids = [run_id_for(cell, settings, seed) for seed, cell in todo]
    if not settings.trains_missing():
        records = [store.read_record(i) if store.status(i) == "finished" else None for i in ids]
        missing = sum(r is None for r in records)
        if missing:
            log(f"{missing} of {len(records)} runs not trained yet: not training them here (train: "
                f"{settings.train!r}); set train: auto to train them")
        return records
    root = data_root_with_cifar(settings)
    final = None if root is None else (str(root), final_images(settings))
    run_configs = configs(settings)
    missing = [n for n, i in enumerate(ids) if store.status(i) != "finished"]
    k = min(settings.concurrent, max(1, len(missing)))
    started, load = time.time(), [_loadavg()]
    records: list[dict | None] = [None] * len(todo)

    def done(index: int, record: dict, result: dict | None) -> None:
        seed, cell = todo[index]
        records[index] = record
        load.append(_loadavg())
        on = "" if result is None else f", {result['test_error']:.2f}% on {result['images']:,} CIFAR-10 test images"
        log(f"seed {seed} {cell.column:8s} {record['run_id']}: test error {record['test_error']:.2f}% on "
            f"{_test_images(settings)}{on} ({record.get('train_seconds', 0):.0f} s)")

    if k == 1:
        for index, config in enumerate(run_configs):
            done(index, *_train_job(config, str(settings.store_root), 1, final, settings.progress))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        for index in [i for i in range(len(run_configs)) if i not in missing]:  # finished: loaded here, in order
            done(index, *_train_job(run_configs[index], str(settings.store_root), k, final))
        with ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            # seed by seed, each seed's student last: the demo ends on a short run, not with one process idle
            # while the other trains a long one
            order = sorted(missing, key=lambda i: (todo[i][0], todo[i][1].column == "student"))
            futures = {pool.submit(_train_job, run_configs[i], str(settings.store_root), k, final): i for i in order}
            try:
                for future in as_completed(futures):
                    done(futures[future], *future.result())
            except BaseException:  # a failed run (or an interrupt): the runs not started yet are not started
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    if missing:
        _write_training(settings, started, len(missing), k, load)
    return records


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_name() -> str:
    """The CPU's model name and its count of logical CPUs (``/proc/cpuinfo``; the platform's name elsewhere)."""
    import platform
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = " ".join(value.split())
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def _write_training(settings: Settings, started: float, trained: int, concurrent: int, load: list) -> None:
    """``TRAINING_FILE``: when and where the last call that trained something ran, how long, and the 1-minute load
    average seen as each run finished (the demo's own ``concurrent`` runs count in it)."""
    import torch
    seen = [v for v in load if v is not None]
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "seconds": round(time.time() - started, 1), "runs_trained": trained, "concurrent": concurrent,
           "threads_per_run": RUN_THREADS, "cpu": cpu_name(), "torch": torch.__version__,
           "load_1min": {"before": load[0], "min": min(seen, default=None), "max": max(seen, default=None)}}
    settings.root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(settings.root / TRAINING_FILE, (json.dumps(out, indent=2) + "\n").encode())


def training_note(settings: Settings) -> str:
    """One sentence from ``TRAINING_FILE`` (empty without it)."""
    path = settings.root / TRAINING_FILE
    if not path.is_file():
        return ""
    t = json.loads(path.read_text())
    load = t.get("load_1min", {})
    span = "" if load.get("min") is None else \
        f"; 1-minute load average {load['before']:.2f} before, {load['min']:.2f} to {load['max']:.2f} as runs " \
        f"finished (the demo's own {t['concurrent']} run{'s' * (t['concurrent'] != 1)} included)"
    return (f"The last training call ({t['started']}) trained {t['runs_trained']} runs in {_duration(t['seconds'])}, "
            f"{t['concurrent']} at a time with {t['threads_per_run']} thread each, on {t['cpu']}, torch "
            f"{t['torch']}{span}.")


# -- numbers -------------------------------------------------------------------------------------------------------
def per_seed(settings: Settings) -> pd.DataFrame:
    """Final test error (%) of every run on the test set ``final_test`` names: one row per seed, one column per
    method (NaN where not trained at that seed, or not finished)."""
    rows = []
    for seed in settings.seeds:
        row = {"seed": seed}
        for cell in cells():
            found = final_result(settings, run_id_for(cell, settings, seed)) \
                if seed in seeds_of(settings, cell.column) else None
            row[cell.column] = math.nan if found is None else found["test_error"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["seed"] + [c for c, _ in COLUMNS])


def finished(settings: Settings) -> int:
    """How many of the demo's runs are finished in the store."""
    store = RunStore(settings.store_root)
    return sum(store.status(run_id_for(cell, settings, seed)) == "finished" for seed, cell in jobs(settings))


LEVEL = 0.95  # the confidence level of the intervals


def paired(errors: pd.DataFrame) -> pd.DataFrame:
    """Per method: median error over seeds, and its paired differences to the student of the same seed (method -
    student, in points; negative = better): per seed, median, min, max, mean, the 95% Student-t interval of the mean
    (n >= 2), in how many seeds it was lower / higher, the exact two-sided sign test, and the verdict from the
    interval (``stats.interval_verdict``; "cannot tell" with fewer than 2 seeds)."""
    rows = []
    for column, _ in COLUMNS:
        done = errors[column].dropna().tolist()
        row = {"method": column, "median_error": _median(done), "n": len(done), "diffs": [], "seeds": [],
               "median_diff": math.nan, "min_diff": math.nan, "max_diff": math.nan, "mean_diff": math.nan,
               "sd_diff": math.nan, "t": math.nan, "low": math.nan, "high": math.nan, "helped": None, "worse": None,
               "sign_p": math.nan, "sign_min_p": math.nan, "verdict": None}
        if column != "student":
            both = errors[["seed", "student", column]].dropna()
            diffs = [round(d, 10) for d in (both[column] - both["student"]).tolist()]  # (errors have 2 decimals)
            row.update(n=len(diffs), diffs=diffs, seeds=[int(s) for s in both["seed"]], verdict=stats.CANNOT_TELL)
            if diffs:
                sign = stats.sign_test(diffs)
                row.update(median_diff=_median(diffs), min_diff=min(diffs), max_diff=max(diffs),
                           mean_diff=statistics.fmean(diffs), helped=sign.below, worse=sign.above, sign_p=sign.p,
                           sign_min_p=sign.smallest_p)
            if len(diffs) >= 2:
                ci = stats.t_interval(diffs, LEVEL)
                row.update(sd_diff=ci.sd, t=ci.t, low=ci.low, high=ci.high,
                           verdict=stats.interval_verdict(ci.low, ci.high))
        rows.append(row)
    return pd.DataFrame(rows)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _p(p: float) -> str:
    return f"{p:.3g}"


def verdict(row: pd.Series) -> str:
    """Plain sentences on whether the method beat the student, following from the interval."""
    n, name = int(row["n"]), row["method"]
    if n == 0:
        return f"{name}: not measured yet."
    diffs = ", ".join(f"{d:+.2f}" for d in row["diffs"])
    lower = f"lower than the student's in {int(row['helped'])} of {n} seed{'s' * (n != 1)}"
    if n < 2:
        return (f"{name}: cannot tell at this scale: one seed ({diffs} points) gives no interval.")
    interval = f"{LEVEL:.0%} interval of the mean difference {row['low']:+.2f} .. {row['high']:+.2f} points"
    sign = f"sign test p = {_p(row['sign_p'])}"
    if row["verdict"] == stats.HELPED:
        head = f"{name} helped: its error was lower by {-row['mean_diff']:.2f} points on average, and the whole " \
               f"{interval} lies below 0"
    elif row["verdict"] == stats.HURT:
        head = f"{name} did not help: its error was higher by {row['mean_diff']:.2f} points on average, and the " \
               f"whole {interval} lies above 0"
    else:
        head = f"{name}: cannot tell at this scale: the {interval} includes 0 (mean {row['mean_diff']:+.2f})"
    return f"{head}; {lower} ({diffs}), {sign}."


def table_markdown(errors: pd.DataFrame, summary: pd.DataFrame, test_images: int | None = None) -> str:
    """Per-seed errors and their median; per method the paired differences, their median, mean and interval, the
    sign test and the verdict; the binomial standard error of one run's error on ``test_images`` images."""
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"  # noqa: E731
    names = [c for c, _ in COLUMNS]
    lines = ["| seed | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for _, r in errors.iterrows():
        lines.append(f"| {int(r['seed'])} | " + " | ".join(fmt(r[c]) for c in names) + " |")
    lines.append("| **median** | " + " | ".join(f"**{fmt(v)}**" for v in summary["median_error"]) + " |")
    lines += ["", "Paired differences to the student of the same seed (method - student, points; negative: the "
              "method's error was lower):", "",
              f"| method | seeds | differences by seed | median | mean | {LEVEL:.0%} t interval of the mean | "
              f"lower / higher | sign test p (two-sided) | verdict |", "|---|---:|---|---:|---:|---|---|---:|---|"]
    for _, r in summary.iloc[1:].iterrows():
        if not r["n"]:
            lines.append(f"| {r['method']} | 0 | - | - | - | - | - | - | not measured yet |")
            continue
        interval = "-" if math.isnan(r["low"]) else f"{r['low']:+.2f} .. {r['high']:+.2f}"
        lines.append(f"| {r['method']} | {int(r['n'])} | " + ", ".join(f"{d:+.2f}" for d in r["diffs"]) +
                     f" | {r['median_diff']:+.2f} | {r['mean_diff']:+.2f} | {interval} | {int(r['helped'])} / "
                     f"{int(r['worse'])} | {_p(r['sign_p'])} | {r['verdict']} |")
    lines += [""] + [f"- {verdict(r)}" for _, r in summary.iloc[1:].iterrows()]
    notes = [f"The interval is the Student-t {LEVEL:.0%} confidence interval of the mean paired difference, mean +- "
             f"t(0.975, n-1) * sd / sqrt(n) over the n seeds (sd with n - 1; t = " +
             ", ".join(sorted({f'{r["t"]:.3f} for n = {int(r["n"])}' for _, r in summary.iloc[1:].iterrows()
                               if not math.isnan(r["t"])})) +
             "); the verdict follows from it alone: *helped* if it lies wholly below 0, *did not help* if wholly "
             "above 0, *cannot tell at this scale* if it includes 0. The sign test is exact (binomial, ties "
             "dropped) and two-sided; with n seeds its smallest possible p is 2 * 0.5^n (0.0625 for 5, 0.25 for 3)."]
    student = summary.iloc[0]["median_error"]
    if test_images and not math.isnan(student):
        se = stats.binomial_se(student, test_images)
        notes.append(f"Test-set noise: one run's error of {student:.2f}% (the median student) measured on "
                     f"{test_images:,} test images has a binomial standard error of sqrt(p(1-p)/n) = {se:.2f} points"
                     + ("" if test_images == SAMPLE_TEST_IMAGES else
                        f" (on the sample's {SAMPLE_TEST_IMAGES:,} it would be "
                        f"{stats.binomial_se(student, SAMPLE_TEST_IMAGES):.2f})") +
                     "; the seed-to-seed spread of training adds to it, and the interval accounts for both.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def write_table(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """``tables/cpu-demo.csv`` (per seed) and ``tables/cpu-demo.md``; returns (per seed, paired summary, md path)."""
    errors = per_seed(settings)
    summary = paired(errors)
    out = settings.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    errors.to_csv(out / "cpu-demo.csv", index=False, float_format="%.2f")
    md = out / "cpu-demo.md"
    md.write_text(f"Final test error (%) by seed on {_final_test_words(settings)}.\n\n" +
                  table_markdown(errors, summary, test_set_images(settings)))
    return errors, summary, md


def test_set_images(settings: Settings) -> int:
    """How many images the final errors are measured on."""
    if final_test(settings) == "cifar10":
        return final_images(settings)
    return settings.test_subset or (SAMPLE_TEST_IMAGES if settings.dataset == "sample" else CIFAR_TEST_IMAGES)


# -- figures -------------------------------------------------------------------------------------------------------
def curves(settings: Settings) -> dict[str, list[list[dict]]]:
    """Per method, the per-epoch metrics of each of its seeds' runs that has any."""
    store = RunStore(settings.store_root)
    found = {}
    for cell in cells():
        runs = [store.read_metrics(run_id_for(cell, settings, seed)) for seed in seeds_of(settings, cell.column)]
        found[cell.column] = [rows for rows in runs if rows]
    return found


def curves_figure(settings: Settings) -> Path | None:
    """Test error vs epoch per method, on the images each epoch is evaluated on: the mean over seeds (line) and
    their range (band); None before any epoch."""
    from .report import plt, save_figure
    found = {name: runs for name, runs in curves(settings).items() if runs}
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (name, runs) in enumerate(found.items()):
        epochs = min(len(r) for r in runs)  # an unfinished seed shortens its method's curve
        values = [[r[e]["test_error"] for r in runs] for e in range(epochs)]
        x = [runs[0][e]["epoch"] for e in range(epochs)]
        ax.plot(x, [statistics.fmean(v) for v in values], color=f"C{i}", linewidth=2,
                label=f"{name} (mean of {len(runs)} seed{'s' * (len(runs) != 1)})")
        ax.fill_between(x, [min(v) for v in values], [max(v) for v in values], color=f"C{i}", alpha=0.18)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test error (%), {_test_images(settings)}")
    ax.set_title(f"{ROW}, low-data CPU variant: test error, mean and range over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, settings.root / "figures" / "cpu-demo_test_error.png")


def teacher_model(settings: Settings):
    """The borrowed teacher (eval mode, CPU)."""
    theirs = settings.teacher_settings()
    return RunStore(theirs.store_root).load_model(teacher_config(TEACHER, theirs).run_id())


def maps_figure(settings: Settings, count: int = 5) -> Path | None:
    """Figure 6 style: top-level attention maps (F_sum^2) of the student, the AT student (first seed) and the
    teacher on the same test images of the embedded sample; None until the student and AT runs are finished."""
    from ..data import normalize
    from .report import example_images, figure_attention_comparison, load_trained
    seed = settings.seeds[MAP_SEED_INDEX]
    store = RunStore(settings.store_root)
    by_column = {c.column: c for c in cells()}
    ids = {name: run_id_for(by_column[column], settings, seed) for name, column in
           (("student", "student"), ("AT student", "AT"))}
    if any(store.status(i) != "finished" for i in ids.values()):
        return None
    models = {f"{name} (seed {seed})": load_trained(run_id, settings) for name, run_id in ids.items()}
    models["teacher"] = teacher_model(settings)
    images = example_images(count)
    return figure_attention_comparison(models, images.images, normalize(images.images),
                                       settings.root / "figures" / "cpu-demo_attention_maps.png")


def _this_call(seconds: float | None, trained_now: int | None, of: int) -> str:
    """What the notebook call that wrote the report did. Its duration only when it trained something, so that a
    report rebuilt from stored runs is the same file every time."""
    if trained_now == 0:
        return f" This notebook trained none of the {of} runs (all were stored)."
    if seconds is None:
        return ""
    trained = f" and trained {trained_now} of the {of} runs" if trained_now is not None else ""
    return f" This notebook ran in {_duration(seconds)}{trained}."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"




# -- the report ----------------------------------------------------------------------------------------------------
def write_report(settings: Settings, table_md: Path, figures: dict[str, Path | None],
                 seconds: float | None = None, trained_now: int | None = None) -> Path:
    """``REPORT.md``: what this is and which test set (first line), the tables with their statistics and verdicts,
    how long training took and on what, where the runs were trained, figures."""
    from .report import provenance_markdown
    root = settings.root
    lines = [f"**{describe(settings)}**", "", f"# atlib CPU demo: attention transfer with little data "
             f"(profile `{settings.profile}`)", ""]
    lines += ["Each seed trains its runs from the same initialisation seed and the same order of batches, so "
              "each method is compared with the student of its own seed (a paired difference).", ""]
    lines += [table_md.read_text().strip(), "", f"Data: [cpu-demo.csv]({table_md.with_suffix('.csv').relative_to(root)})",
              ""]
    rows = _provenance(settings)
    trained = [r for r in rows if r["seconds"] is not None]
    if trained:
        final = sum(_final_seconds(settings, r["run_id"]) for r in trained)
        lines += [f"Training these {len(trained)} runs took {sum(r['seconds'] for r in trained) / 60:.1f} minutes "
                  f"of run time in all (their records' wall time, each epoch's evaluation included"
                  + (f"; the final evaluations on the CIFAR-10 test set {final / 60:.1f} more" if final else "")
                  + "; runs that trained side by side overlap)." + _this_call(seconds, trained_now, len(trained))
                  + (" " + training_note(settings) if training_note(settings) else ""), ""]
    lines += ["## Where each run was trained", "", provenance_markdown(rows), ""]
    lines += ["## Figures", ""]
    for caption, png in figures.items():
        if png is None:
            lines += [f"### {caption}", "", "*Not built yet: its runs are not trained.*", ""]
        else:
            lines += [f"### {caption}", "", f"![{caption}]({Path(png).relative_to(root)})", ""]
    path = root / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def _provenance(settings: Settings) -> list[dict]:
    """``report.provenance_rows`` of the demo's runs (each column at its own seeds), seed by seed."""
    from .report import provenance_rows
    rows = []
    for seed, cell in jobs(settings):
        one = Settings(**{**settings.__dict__, "seeds": [seed]})
        rows += provenance_rows([cell], one)
    return rows


def _final_seconds(settings: Settings, run_id: str) -> float:
    found = _stored_final(RunStore(settings.store_root), run_id, final_images(settings))
    return found.get("seconds", 0.0) if found and final_test(settings) == "cifar10" else 0.0


def teacher_record(settings: Settings) -> dict:
    """The borrowed teacher's record (its run id, test error on the full CIFAR-10 test set, provenance)."""
    theirs = settings.teacher_settings()
    return RunStore(theirs.store_root).read_record(teacher_config(TEACHER, theirs).run_id())


def teacher_maps_figure(settings: Settings, count: int = 4) -> Path:
    """Figure 4 style: the teacher's attention maps (F_sum, F_sum^2, F_sum^4, F_max^2) at each of its groups."""
    from .report import example_images, figure_attention_functions
    return figure_attention_functions(teacher_model(settings), example_images(count),
                                      settings.root / "figures" / "cpu-demo_teacher_attention.png", groups=(0, 1, 2))
