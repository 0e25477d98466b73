"""scripts/window_plan.py: the packed CIFAR-10 files spread over as few device calls as the 64 MiB limit allows."""

import importlib.util

import pytest

from atlib.paths import REPO_ROOT as REPO

spec = importlib.util.spec_from_file_location("window_plan", REPO / "scripts" / "window_plan.py")
window_plan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(window_plan)


def files(tmp_path, sizes):
    out = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * size)
        out.append(path)
    return out


def test_every_file_in_one_call_and_no_call_over_the_room(tmp_path):
    sizes = [175, 175, 175, 175, 175, 175, 2, 1]  # six packed batches and two small files, in units of 0.1 MB
    calls = window_plan.plan(files(tmp_path, sizes), room=530)
    assert sorted(f.name for call in calls for f in call) == sorted(f"f{i}" for i in range(len(sizes)))
    assert all(sum(f.stat().st_size for f in call) <= 530 for call in calls)
    assert len(calls) == 2  # 3 batches fit beside the tree, as with a 13 MiB tree and 64 MiB calls
    assert len(window_plan.plan(files(tmp_path, sizes), room=300)) == 6  # a larger tree: one batch a call


def test_a_file_larger_than_the_room_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="does not fit"):
        window_plan.plan(files(tmp_path, [500]), room=400)


def test_travelling_bytes_counts_tracked_and_unignored_files():
    assert window_plan.travelling_bytes(REPO) > (REPO / "atlib" / "training" / "engine.py").stat().st_size
