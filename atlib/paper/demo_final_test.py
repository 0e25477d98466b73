"""The demo's final test set. Each epoch is evaluated on the training data's own test split (the sample's 1,000
images: one run's error near 47% carries a binomial standard error of ~1.6 points there, as large as the effect).
Each run's final weights are also evaluated on the whole CIFAR-10 test set (~0.5 points) wherever a data root holds
it; the tables use that."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from ..training.store import RunStore, atomic_write_bytes
from .demo_runs import CIFAR_TEST_IMAGES, FINAL_TEST_FILE, SAMPLE_TEST_IMAGES, jobs, test_images_words
from .settings import Settings
from .suite import run_id_for


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
    return "cifar10" if done and all(stored_final(store, i, n) is not None for i in done) else "sample"


def stored_final(store: RunStore, run_id: str, images: int) -> dict | None:
    """The run's stored final evaluation (``FINAL_TEST_FILE``) if it was made on ``images`` images, else None."""
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


RUN_THREADS = 1  # every demo run, and every final evaluation, on one CPU thread (see ``demo_training.train``)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch on ``n`` CPU threads inside the block; the previous count restored after it."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_images(model, data, batch_size: int = 1000) -> dict:
    """Test loss and top-1 error (%) of an eval-mode ``model`` on ``data`` (an ``ImageSet``), on the CPU with
    channels-last activations, in batches of ``batch_size`` (the run's ``eval_batch_size``), as the engine evaluates
    each epoch."""
    import torch
    from torch import nn
    from ..data import eval_batches
    model = model.eval().to(memory_format=torch.channels_last)
    loss, wrong = 0.0, 0
    with torch.no_grad():
        for x, y in eval_batches(data, batch_size, "cpu", torch.channels_last):
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
    with torch_threads(RUN_THREADS):
        model = store.load_model(run_id)
        out = {"run_id": run_id, "test_set": "CIFAR-10 test set" + ("" if images == CIFAR_TEST_IMAGES else
                                                                      f", first {images:,} images"),
               **evaluate_images(model, data, store.read_config(run_id).get("eval_batch_size", 1000))}
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
        return {"run_id": run_id, "test_set": test_images_words(settings),
                "images": settings.test_subset or SAMPLE_TEST_IMAGES, "test_error": record["test_error"]}
    n = final_images(settings)
    found = stored_final(store, run_id, n)
    if found is None:
        root = data_root_with_cifar(settings)
        if root is None or not (store.run_dir(run_id) / "weights.pt").is_file():
            return None  # (only where a stored evaluation was deleted by hand)
        found = evaluate_final(settings.store_root, run_id, root, n)
    return found


def test_set_images(settings: Settings) -> int:
    """How many images the final errors are measured on."""
    if final_test(settings) == "cifar10":
        return final_images(settings)
    return settings.test_subset or (SAMPLE_TEST_IMAGES if settings.dataset == "sample" else CIFAR_TEST_IMAGES)


def final_test_words(settings: Settings) -> str:
    """The test set the final errors come from, in words (and the one the per-epoch curves use)."""
    if final_test(settings) == "cifar10":
        n = final_images(settings)
        curves = f"the per-epoch curves: {test_images_words(settings)}"
        return f"the whole CIFAR-10 test set ({n:,} images; {curves})" if n == CIFAR_TEST_IMAGES else \
            f"the first {n:,} CIFAR-10 test images ({curves})"
    return (f"{test_images_words(settings)} only (no CIFAR-10 data root found: set ATLIB_DATA or data_root for the "
            f"whole {CIFAR_TEST_IMAGES:,}-image test set)")
