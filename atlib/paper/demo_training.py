"""Training the CPU demo's runs: seed by seed, ``settings.concurrent`` at a time, each in its own process on one
CPU thread, each then evaluated on the final test set; and the note on the machine and its load that it leaves."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from ..training.provenance import cpu_model
from ..training.store import RunStore, atomic_write_bytes
from .demo_final_test import (RUN_THREADS, data_root_with_cifar, evaluate_final, final_images, stored_final,
                              torch_threads)
from .demo_runs import TRAINING_FILE, check, configs, jobs, test_images_words
from .settings import Settings
from .suite import run_id_for

logger = logging.getLogger(__name__)

def _train_job(configs, store_root: str, concurrent: int, final: tuple[str, int] | None, channels_last: bool | None,
               progress: bool = False):
    """Train the runs ``configs`` of one seed on one thread (in a worker process, or in this one), side by side on
    shared batches when there are several (``shared_batches``: each teacher pass made once; each run's numbers are
    those of training it alone), then evaluate each one's final weights on the CIFAR-10 test set (``final``: data
    root and image count; None: no data root). Returns [(record, final result)] in ``configs`` order."""
    from ..training.engine import resolve_device
    from ..training.shared_batches import train_shared, train_shared_steps
    from ..training.loop import run_to_end
    device = resolve_device(configs[0].device)
    with torch_threads(RUN_THREADS) if device.type == "cpu" else contextlib.nullcontext():
        if device.type == "cpu":
            records = run_to_end(train_shared_steps(configs, Path(store_root), progress, False, None, device,
                                                    channels_last=channels_last, concurrent=concurrent))
        else:
            records = train_shared(configs, results=store_root, progress=progress, channels_last=channels_last)
    store = RunStore(store_root)
    out = []
    for record in records:
        if (store.run_dir(record["run_id"]) / "metrics.jsonl").is_file():
            store.compress_metrics(record["run_id"])  # committed runs keep their metrics compressed
        result = None
        if final is not None:
            result = stored_final(store, record["run_id"], final[1]) or \
                evaluate_final(store_root, record["run_id"], final[0], final[1])
        out.append((record, result))
    return out


def job_groups(todo: list, indices: list[int]) -> list[list[int]]:
    """The runs ``indices`` (of ``todo``'s (seed, cell)) as jobs, seed by seed: the runs of a seed that learn from a
    teacher together (they share batches and teacher passes), then that seed's student alone, so the demo ends on a
    short job rather than with one process idle while the other trains a long one."""
    groups = []
    for seed in sorted({todo[i][0] for i in indices}):
        of_seed = [i for i in indices if todo[i][0] == seed]
        taught = [i for i in of_seed if todo[i][1].teacher is not None]
        groups += ([taught] if taught else []) + [[i] for i in of_seed if i not in taught]
    return groups


def _worker_init() -> None:
    import torch
    torch.set_num_threads(RUN_THREADS)


def train(settings: Settings, log=logger.info) -> list[dict | None]:
    """Train (or load, or resume) the demo's runs seed by seed (``jobs``: student, AT, KD, AT+KD of one seed before
    the next seed), so an interrupted demo has whole seeds first, and evaluate each on the CIFAR-10 test set where a
    data root holds it. A seed's runs with the teacher train as one job on shared batches (``job_groups``), each
    teacher pass made once for the three. ``settings.concurrent`` jobs train at once, each in its own process; every
    job (also one at a time) uses one CPU thread, so its numbers do not depend on ``concurrent``: two such runs side
    by side measured 1.25x the throughput of one run on two threads, and a one-thread run does not stall when other
    processes load the CPU. Where ``settings.trains_missing()`` is false only the finished runs are returned (None for the others).
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
    groups = job_groups(todo, missing)
    k = min(settings.concurrent, max(1, len(groups)))
    started, load = time.time(), [_loadavg()]
    records: list[dict | None] = [None] * len(todo)

    def done(index: int, record: dict, result: dict | None) -> None:
        seed, cell = todo[index]
        records[index] = record
        load.append(_loadavg())
        on = "" if result is None else f", {result['test_error']:.2f}% on {result['images']:,} CIFAR-10 test images"
        log(f"seed {seed} {cell.column:8s} {record['run_id']}: test error {record['test_error']:.2f}% on "
            f"{test_images_words(settings)}{on} ({record.get('train_seconds', 0):.0f} s)")

    for index in [i for i in range(len(run_configs)) if i not in missing]:  # finished: loaded here, in order
        done(index, *_train_job([run_configs[index]], str(settings.store_root), k, final, settings.channels_last)[0])
    if k == 1:
        for group in groups:
            for index, result in zip(group, _train_job([run_configs[i] for i in group], str(settings.store_root), 1,
                                                       final, settings.channels_last, settings.progress)):
                done(index, *result)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = {pool.submit(_train_job, [run_configs[i] for i in group], str(settings.store_root), k, final,
                                   settings.channels_last): group for group in groups}
            try:
                for future in as_completed(futures):
                    for index, result in zip(futures[future], future.result()):
                        done(index, *result)
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
    """The CPU's model name with its AVX-512 / AMX support (``provenance.cpu_model``: machines of one name differ by
    up to 2x here) and its count of logical CPUs."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


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
    return (f"The last training call ({t['started']}) trained {t['runs_trained']} runs in "
            f"{duration_words(t['seconds'])}, {t['concurrent']} at a time with {t['threads_per_run']} thread each, on {t['cpu']}, torch "
            f"{t['torch']}{span}.")


def duration_words(seconds: float) -> str:
    """``"42 s"`` under 90 seconds, else ``"2.5 minutes"``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"
