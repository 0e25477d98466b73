"""Tests for atlib.training.store (the on-disk results store)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from atlib.training import store as store_mod
from atlib.training.store import (CorruptCheckpointError, RunStore, StoreError, atomic_write_bytes, config_hash,
                                  make_run_id)

CFG = {"model": "wrn-16-1", "teacher": "wrn-16-2", "beta": 1000.0, "seed": 0, "epochs": [60, 120, 160]}


@pytest.fixture
def rs(tmp_path):
    return RunStore(tmp_path / "results")


def _files(d):
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------ hashing / ids


def test_config_hash_stable_and_order_independent():
    h = config_hash(CFG)
    assert len(h) == 8 and all(c in "0123456789abcdef" for c in h)
    reordered = dict(reversed(list(CFG.items())))
    assert config_hash(reordered) == h
    nested_a = {"a": {"x": 1, "y": 2}, "b": 3}
    nested_b = {"b": 3, "a": {"y": 2, "x": 1}}
    assert config_hash(nested_a) == config_hash(nested_b)
    # Known value: sha256 of the canonical JSON.
    import hashlib

    canon = json.dumps(CFG, sort_keys=True, separators=(",", ":"))
    assert h == hashlib.sha256(canon.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    "change",
    [
        {"model": "wrn-16-2"},
        {"beta": 1000.5},
        {"seed": 1},
        {"epochs": [60, 120, 161]},
        {"extra": None},
    ],
)
def test_config_hash_changes_with_any_value(change):
    assert config_hash({**CFG, **change}) != config_hash(CFG)


def test_config_hash_survives_round_trip(rs):
    cfg = {**CFG, "tup": (1, 2)}
    rs.write_config("r", cfg)
    assert config_hash(rs.read_config("r")) == config_hash(cfg)


def test_make_run_id_format():
    h = config_hash(CFG)
    assert make_run_id(CFG, "wrn-16-1_at_from-wrn-16-2-xxxx_s0") == f"wrn-16-1_at_from-wrn-16-2-xxxx_s0-{h}"
    assert make_run_id(CFG, "  a b//c..d!!e  ") == f"a-b-c..d-e-{h}"
    assert make_run_id(CFG, "--x--") == f"x-{h}"
    assert make_run_id(CFG, "ümlaut/β=1e3") == f"mlaut-1e3-{h}"


# ------------------------------------------------------------------ status / config


def test_status_transitions(rs):
    rid = make_run_id(CFG, "run")
    assert rs.status(rid) == "new"
    assert not rs.exists(rid)
    rs.run_dir(rid).mkdir(parents=True)
    assert rs.status(rid) == "new"  # directory but no config
    rs.write_config(rid, CFG)
    assert rs.exists(rid)
    assert rs.status(rid) == "interrupted"
    rs.append_metrics(rid, {"epoch": 1, "test_error": 0.5})
    assert rs.status(rid) == "interrupted"
    rs.write_record(rid, {"test_error": 0.1})
    assert rs.status(rid) == "finished"
    assert rs.read_record(rid) == {"test_error": 0.1}


def test_config_file_format_and_idempotent_write(rs):
    rs.write_config("r", CFG)
    path = rs.run_dir("r") / "config.json"
    text = path.read_text()
    assert text.endswith("\n")
    assert text == json.dumps(CFG, indent=2, sort_keys=True) + "\n"
    assert rs.read_config("r") == CFG
    mtime = path.stat().st_mtime_ns
    rs.write_config("r", dict(reversed(list(CFG.items()))))  # same config: no error
    assert path.stat().st_mtime_ns == mtime


def test_write_config_conflict_raises(rs):
    rs.write_config("r", CFG)
    with pytest.raises(StoreError, match=r"\br\b.*beta"):
        rs.write_config("r", {**CFG, "beta": 1.0})
    assert rs.read_config("r") == CFG  # not overwritten


def test_read_record_absent_is_none(rs):
    rs.write_config("r", CFG)
    assert rs.read_record("r") is None


def test_invalid_run_id_rejected(rs):
    for bad in ["", "..", "a/b"]:
        with pytest.raises(StoreError):
            rs.run_dir(bad)


# ------------------------------------------------------------------ metrics


def test_metrics_round_trip(rs):
    rows = [{"epoch": e, "train_loss": 1.0 / e, "test_error": 0.5 - e / 100} for e in range(1, 4)]
    for r in rows:
        rs.append_metrics("r", r)
    assert rs.read_metrics("r") == rows
    lines = (rs.run_dir("r") / "metrics.jsonl").read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 4  # newline-terminated, one line per row


def test_read_metrics_missing_is_empty(rs):
    assert rs.read_metrics("nothing") == []


def test_truncated_last_metrics_line_dropped(rs):
    rs.append_metrics("r", {"epoch": 1, "x": 1.0})
    rs.append_metrics("r", {"epoch": 2, "x": 2.0})
    path = rs.run_dir("r") / "metrics.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"epoch": 3, "x": 3.')  # killed mid-write
    assert rs.read_metrics("r") == [{"epoch": 1, "x": 1.0}, {"epoch": 2, "x": 2.0}]
    # A later append does not glue onto the partial line.
    rs.append_metrics("r", {"epoch": 3, "x": 3.5})
    assert [r["epoch"] for r in rs.read_metrics("r")] == [1, 2, 3]
    for line in path.read_text().splitlines():
        json.loads(line)


def test_corrupt_middle_metrics_line_raises(rs):
    rs.append_metrics("r", {"epoch": 1})
    path = rs.run_dir("r") / "metrics.jsonl"
    with open(path, "ab") as f:
        f.write(b"garbage\n")
    rs.append_metrics("r", {"epoch": 2})
    with pytest.raises(StoreError, match="metrics.jsonl line 2"):
        rs.read_metrics("r")


def test_truncate_metrics(rs):
    for e in range(1, 6):
        rs.append_metrics("r", {"epoch": e, "v": e * 10})
    rs.truncate_metrics("r", 3)
    assert [r["epoch"] for r in rs.read_metrics("r")] == [1, 2, 3]
    rs.truncate_metrics("r", 0)
    assert rs.read_metrics("r") == []
    assert not [p for p in _files(rs.run_dir("r")) if p.endswith(".tmp")]
    rs.truncate_metrics("absent", 3)  # no file: no-op, no crash


def test_nan_in_metrics_becomes_null(rs):
    rs.append_metrics("r", {"epoch": 1, "loss": float("nan"), "hi": float("inf"), "lo": -math.inf})
    rs.append_metrics("r", {"epoch": 2, "loss": torch.tensor(float("nan")), "t": torch.tensor(0.25)})
    path = rs.run_dir("r") / "metrics.jsonl"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    # Strict parse: reject the non-standard constants.
    def strict(s):
        raise ValueError(s)

    rows = [json.loads(line, parse_constant=strict) for line in text.splitlines()]
    assert rows[0] == {"epoch": 1, "loss": None, "hi": None, "lo": None}
    assert rows[1] == {"epoch": 2, "loss": None, "t": 0.25}
    assert rs.read_metrics("r") == rows


def test_unserialisable_value_raises(rs):
    with pytest.raises(StoreError, match="object"):
        rs.append_metrics("r", {"epoch": 1, "bad": object()})


def test_nan_in_record_written_as_null(rs):
    rs.write_config("r", CFG)
    rs.write_record("r", {"test_error": float("nan")})
    text = (rs.run_dir("r") / "record.json").read_text()
    assert "NaN" not in text and text.endswith("\n")
    assert rs.read_record("r") == {"test_error": None}


# ------------------------------------------------------------------ checkpoints


def _state():
    g = torch.Generator().manual_seed(123)
    torch.rand(5, generator=g)
    return {
        "epoch": 7,
        "model": {"conv.weight": torch.randn(2, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(5)},
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "rng": {"torch": g.get_state(), "python": (3, (1, 2, 3), None)},
        "meta": {"nested": {"deeper": [1, 2.5, "s"]}},
    }, g


def test_checkpoint_round_trip(rs):
    assert rs.load_checkpoint("r") is None
    state, g = _state()
    rs.save_checkpoint("r", state)
    loaded = rs.load_checkpoint("r")
    assert loaded["epoch"] == 7
    assert torch.equal(loaded["model"]["conv.weight"], state["model"]["conv.weight"])
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0]}]
    assert torch.equal(loaded["optimizer"]["state"][0]["momentum_buffer"], torch.ones(3))
    assert loaded["meta"] == {"nested": {"deeper": [1, 2.5, "s"]}}
    assert loaded["rng"]["python"] == (3, (1, 2, 3), None)
    # The restored generator state continues the same random stream.
    g2 = torch.Generator()
    g2.set_state(loaded["rng"]["torch"])
    assert torch.equal(torch.rand(4, generator=g2), torch.rand(4, generator=g))
    assert _files(rs.run_dir("r")) == ["checkpoint.pt"]  # no temp files left


def test_truncated_checkpoint_raises(rs):
    state, _ = _state()
    rs.save_checkpoint("r", state)
    path = rs.run_dir("r") / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError) as ei:
        rs.load_checkpoint("r")
    msg = str(ei.value)
    assert str(path) in msg and "--restart" in msg and "\n" not in msg
    assert isinstance(ei.value, StoreError)


def test_garbage_checkpoint_raises(rs):
    rs.run_dir("r").mkdir(parents=True)
    (rs.run_dir("r") / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="checkpoint.pt"):
        rs.load_checkpoint("r")


def test_failed_save_keeps_old_checkpoint_and_no_temp(rs, monkeypatch):
    rs.save_checkpoint("r", {"epoch": 1, "w": torch.arange(4)})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial-bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        rs.save_checkpoint("r", {"epoch": 2, "w": torch.arange(8)})
    monkeypatch.undo()
    assert _files(rs.run_dir("r")) == ["checkpoint.pt"]
    loaded = rs.load_checkpoint("r")
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], torch.arange(4))


def test_atomic_write_bytes(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert _files(p.parent) == ["f.bin"]


def test_delete_run_state_keeps_config(rs):
    rs.write_config("r", CFG)
    rs.append_metrics("r", {"epoch": 1})
    rs.save_checkpoint("r", {"epoch": 1})
    rs.save_weights("r", {"w": torch.zeros(1)})
    rs.write_record("r", {"test_error": 0.2})
    rs.delete_run_state("r")
    assert _files(rs.run_dir("r")) == ["config.json"]
    assert rs.status("r") == "interrupted"
    assert rs.load_checkpoint("r") is None and rs.read_metrics("r") == []


# ------------------------------------------------------------------ weights


def test_weights_round_trip(rs):
    sd = {"fc.weight": torch.randn(10, 4), "fc.bias": torch.zeros(10)}
    with pytest.raises(StoreError, match="weights.pt"):
        rs.load_weights("r")
    rs.save_weights("r", sd)
    loaded = rs.load_weights("r")
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    path = rs.run_dir("r") / "weights.pt"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptCheckpointError, match="weights.pt"):
        rs.load_weights("r")


# ------------------------------------------------------------------ listing / lookup


def _populate(rs):
    rs.write_config("b-run-22222222", {"k": 2})
    rs.append_metrics("b-run-22222222", {"epoch": 1})
    rs.append_metrics("b-run-22222222", {"epoch": 2})
    rs.write_config("a-run-11111111", {"k": 1})
    for e in (1, 2, 3):
        rs.append_metrics("a-run-11111111", {"epoch": e})
    rs.write_record("a-run-11111111", {"test_error": 0.0612})
    rs.run_dir("c-empty-33333333").mkdir(parents=True)


def test_list_runs(rs):
    assert rs.list_runs() == []
    _populate(rs)
    (rs.runs_root / "stray.txt").write_text("x")  # not a run
    assert rs.list_runs() == [
        {"run_id": "a-run-11111111", "status": "finished", "epochs": 3, "test_error": 0.0612},
        {"run_id": "b-run-22222222", "status": "interrupted", "epochs": 2, "test_error": None},
        {"run_id": "c-empty-33333333", "status": "new", "epochs": 0, "test_error": None},
    ]


def test_find_run(rs):
    _populate(rs)
    rs.write_config("a-run-1", {"k": 3})  # a prefix of another id
    assert rs.find_run("a-run-11111111") == "a-run-11111111"
    assert rs.find_run("a-run-1") == "a-run-1"  # exact wins over prefix
    assert rs.find_run("b") == "b-run-22222222"
    assert rs.find_run("a-run-111") == "a-run-11111111"
    with pytest.raises(StoreError, match="'a-run'.*ambiguous"):
        rs.find_run("a-run")
    with pytest.raises(StoreError, match="'zzz'"):
        rs.find_run("zzz")


def test_module_all_exports():
    for name in store_mod.__all__:
        assert hasattr(store_mod, name)
    assert os.path.basename(store_mod.__file__) == "store.py"


def test_compressed_metrics_read_back_the_same(tmp_path):
    rs = RunStore(tmp_path)
    rs.write_config("r", {"a": 1})
    for epoch in (1, 2, 3):
        rs.append_metrics("r", {"epoch": epoch, "loss": 1.0 / epoch, "config": {"student": "wrn-16-1"}})
    rows = rs.read_metrics("r")
    plain = (rs.run_dir("r") / "metrics.jsonl").stat().st_size
    rs.compress_metrics("r")
    assert not (rs.run_dir("r") / "metrics.jsonl").exists()
    assert (rs.run_dir("r") / "metrics.jsonl.gz").stat().st_size < plain
    assert rs.read_metrics("r") == rows
    (rs.run_dir("r") / "metrics.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(StoreError, match="metrics.jsonl.gz is corrupt"):
        rs.read_metrics("r")
