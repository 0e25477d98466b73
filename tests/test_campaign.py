"""The campaign: value order, grouping, deadline stops at epoch boundaries, pack / import between machines, and a
resumed campaign ending exactly where an uninterrupted one does."""

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from atlib import cli
from atlib.paper import campaign, packs
from atlib.paper.grids import table1
from atlib.paper.settings import Settings, settings_from_profile
from atlib.paper.suite import config_for, teacher_config
from atlib.training import deadline, engine
from atlib.training.store import RunStore

TINY = dict(profile="tiny", dataset="sample", epochs=3, train_subset=96, test_subset=64, device="cpu",
            progress=False)


def tiny(results: Path, **kw) -> Settings:
    return Settings(**{**TINY, "results_dir": str(results), **kw})


class FakeClock:
    """Advances 100 'seconds' per reading: a campaign's stops then depend on how often the clock is read (once per
    group started, once after each epoch but a run's last), not on how fast this machine is (a tiny epoch takes a
    few seconds, under 20 s on a loaded machine: always well under 100)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 100.0
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    monkeypatch.setattr(deadline, "clock", FakeClock())


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def comparable(rows: list[dict]) -> list[dict]:
    """Metrics rows without what depends on the machine's speed."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "at")} for r in rows]


# -- order and groups ------------------------------------------------------------------------------------------------
def test_value_order_of_the_one_seed_suite(tmp_path):
    settings = settings_from_profile("one-seed", results_dir=str(tmp_path), device="cpu")
    jobs = campaign.jobs(settings)
    assert len(jobs) == len({j.run_id for j in jobs}) == 38
    stages = [s.name for s in campaign.STAGES]
    order = [stages.index(j.stage) for j in jobs]
    assert order == sorted(order)  # stage by stage
    first = [j.config for j in jobs if j.stage == stages[0]]
    assert first[0] == teacher_config("wrn-16-2", settings)  # the teacher before its students
    row = {c.column: config_for(c, settings, 0) for c in table1() if c.row == "WRN-16-1 / WRN-16-2"}
    assert first[1:6] == [row[c] for c in ("student", "AT", "F-ActT", "KD", "AT+KD")]  # Table 1's row first
    groups = campaign.groups(settings)  # nothing trained: the teacher, then AT, then the student, one by one
    assert [g.jobs[0].config for g in groups[:3]] == [first[0], row["AT"], row["student"]]
    assert all(g.kind == "single" for g in groups)  # a CPU trains one run at a time
    assert [g.jobs[0].stage for g in groups][-1] == stages[-1]


def test_paper_profile_completes_seed_0_first(tmp_path):
    settings = settings_from_profile("paper", results_dir=str(tmp_path), device="cpu")
    seeds = [j.seed for j in campaign.jobs(settings)]
    assert seeds == sorted(seeds) and set(seeds) == {0, 1, 2, 3, 4}
    one = settings_from_profile("one-seed", results_dir=str(tmp_path), device="cpu")
    assert [j.run_id for j in campaign.jobs(settings) if j.seed == 0] == [j.run_id for j in campaign.jobs(one)]


def test_gpu_grouping_makes_one_cohort_of_the_wrn_16_1_students(tmp_path):
    settings = settings_from_profile("one-seed", results_dir=str(tmp_path), device="cpu", cohort=16)
    groups = campaign.groups(settings)
    kinds = [(g.kind, len(g.jobs)) for g in groups[:5]]
    assert kinds == [("single", 1)] * 4 + [("cohort", 10)]  # teacher, AT, student, F-ActT, then the cohort
    cohort = groups[4].jobs
    assert {j.config.student for j in cohort} == {"wrn-16-1"} and "fact" not in {j.config.method for j in cohort}


def test_a_cohort_whose_members_stand_at_different_epochs_is_split(tmp_path, monkeypatch):
    settings = settings_from_profile("one-seed", results_dir=str(tmp_path), device="cpu", cohort=16)
    cohort = campaign.groups(settings)[4].jobs
    ahead = {cohort[0].run_id, cohort[1].run_id}
    monkeypatch.setattr(campaign, "progress_of", lambda store, run_id: ("in progress", 5) if run_id in ahead
                        else ("not started", 0))
    parts = [(g.kind, len(g.jobs)) for g in campaign.groups(settings)[4:7]]
    assert parts == [("single", 1), ("single", 1), ("cohort", 8)]


# -- deadline, pack, import, resume ----------------------------------------------------------------------------------
def test_stopped_packed_imported_resumed_equals_uninterrupted(tmp_path, fake_clock):
    device_machine, checkout = tiny(tmp_path / "gpu"), tiny(tmp_path / "clone")
    outcome = campaign.run(device_machine, 750, log=lambda _m: None)  # teacher, AT, then 1 epoch of the student
    assert outcome.stopped.startswith("deadline") and outcome.finished and len(outcome.in_progress) == 1
    stopped_id, done, epochs = outcome.in_progress[0]
    assert 0 < done < epochs
    parts = packs.pack(device_machine, tmp_path / "out", part_bytes=2**20)  # small parts: several of them
    assert len(parts) > 1
    profile, imported = packs.import_pack(parts[::-1], tmp_path / "clone")  # any order
    assert profile == "tiny" and set(imported.added) == {r for r, _ in outcome.finished} | {stopped_id}
    store = RunStore(checkout.root)
    assert campaign.progress_of(store, stopped_id) == ("in progress", done)

    resumed = campaign.run(checkout, 300, log=lambda _m: None)  # the next window: the student's last 2 epochs
    assert stopped_id in [r for r, _ in resumed.finished]
    assert not (store.run_dir(stopped_id) / "checkpoint.pt").exists()  # finished runs drop their checkpoints
    for run_id, _ in resumed.finished:
        assert not (store.run_dir(run_id) / "checkpoint.pt").exists()

    straight = RunStore(tmp_path / "straight" / "tiny")  # the same runs, never interrupted
    for job in campaign.jobs(checkout):
        if job.run_id == stopped_id:
            break
        engine.train(job.config, results=straight.root, progress=False, log=None)
    record = engine.train(next(j for j in campaign.jobs(checkout) if j.run_id == stopped_id).config,
                          results=straight.root, progress=False, log=None)
    assert record["run_id"] == stopped_id
    assert comparable(store.read_metrics(stopped_id)) == comparable(straight.read_metrics(stopped_id))
    a, b = store.load_weights(stopped_id), straight.load_weights(stopped_id)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # trains five tiny runs (about 45 s of CPU)
def test_pack_keeps_weights_only_where_needed(tmp_path, fake_clock):
    settings = tiny(tmp_path)
    campaign.run(settings, 1450, log=lambda _m: None)  # teacher, AT, student, F-ActT; KD in progress
    parts = packs.pack(settings, tmp_path / "out")
    manifest, contents = packs.read_pack(parts)
    kept = packs.kept_weights(settings)
    for run_id, info in manifest["runs"].items():
        names = {n.split("/")[-1] for n in contents if n.startswith(f"runs/{run_id}/")}
        if info["status"] == "finished":
            assert {"config.json", "metrics.jsonl.gz", "record.json"} <= names and "checkpoint.pt" not in names
            assert ("weights.pt" in names) == (run_id in kept)
        else:
            assert names == {"config.json", "metrics.jsonl", "checkpoint.pt"}
    statuses = {run_id: info["status"] for run_id, info in manifest["runs"].items()}
    assert list(statuses.values()).count("finished") == 4 and list(statuses.values()).count("in progress") == 1
    assert any(s == "finished" and r not in kept for r, s in statuses.items())  # F-ActT: no weights
    teacher = teacher_config("wrn-16-2", settings).run_id()
    assert statuses[teacher] == "finished" and f"runs/{teacher}/weights.pt" in contents


def test_second_call_with_nothing_left_exits_at_once(tmp_path, monkeypatch, capsys):
    mini = [campaign.Stage("mini", ("wrn-16-2",),
                           lambda: [c for c in table1() if c.row == "WRN-16-1 / WRN-16-2" and c.column == "AT"])]
    monkeypatch.setattr(campaign, "STAGES", mini)
    settings = tiny(tmp_path, epochs=1)
    profile = tmp_path / "tiny.yaml"
    profile.write_text(json.dumps({**TINY, "epochs": 1, "results_dir": str(tmp_path)}))
    assert cli.main(["campaign", "--profile", str(profile), "--deadline", "600"]) == 0
    assert campaign.groups(settings) == []
    capsys.readouterr()
    monkeypatch.setattr(engine, "train", lambda *a, **k: pytest.fail("nothing should train"))
    assert cli.main(["campaign", "--profile", str(profile), "--deadline", "600"]) == 0
    assert "nothing left to train" in capsys.readouterr().out


def test_campaign_out_packs_what_the_call_changed(tmp_path, monkeypatch):
    mini = [campaign.Stage("mini", ("wrn-16-2",),
                           lambda: [c for c in table1() if c.row == "WRN-16-1 / WRN-16-2" and c.column == "AT"])]
    monkeypatch.setattr(campaign, "STAGES", mini)
    settings = tiny(tmp_path, epochs=1)
    teacher = teacher_config("wrn-16-2", settings)
    engine.train(teacher, results=settings.store_root, progress=False, log=None)  # trained in an earlier window
    profile = tmp_path / "tiny.yaml"
    profile.write_text(json.dumps({**TINY, "epochs": 1, "results_dir": str(tmp_path)}))
    assert cli.main(["campaign", "--profile", str(profile), "--deadline", "600", "--out", str(tmp_path / "o")]) == 0
    manifest, contents = packs.read_pack([tmp_path / "o"])
    at = next(j.run_id for j in campaign.jobs(settings) if j.config.method == "at")
    assert set(manifest["runs"]) == {at} and manifest["runs"][at]["status"] == "finished"


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def filled_once(tmp_path_factory):
    """What ``filled`` copies: trained once per module (a dozen tests start from it)."""
    root = tmp_path_factory.mktemp("filled")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deadline, "clock", FakeClock())
        settings = tiny(root / "results")
        campaign.run(settings, 550, log=lambda _m: None)
        parts = packs.pack(settings, root / "pack")
    return root, parts


@pytest.fixture
def filled(filled_once, tmp_path, fake_clock):
    """A results directory with a finished teacher and an AT run in progress, and a good pack of it (a copy of
    ``filled_once``'s, for this test alone)."""
    root, parts = filled_once
    for name in ("results", "pack"):
        shutil.copytree(root / name, tmp_path / name)
    return tiny(tmp_path / "results"), [tmp_path / part.relative_to(root) for part in parts]


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _manifest(files: dict[str, bytes]) -> tuple[tarfile.TarInfo, bytes]:
    return _file(packs.MANIFEST, json.dumps({
        "format": packs.PACK_FORMAT, "version": packs.PACK_VERSION, "profile": "tiny", "runs": {},
        "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}).encode())


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


BAD_PACKS = {
    "corrupt": (lambda good: b"\x00garbage" * 1000, "not an atlib campaign pack"),
    "truncated": (lambda good: good[:len(good) // 3], "not"),
    "foreign": (lambda good: _tar([_file("README", b"hello")]), "not an atlib campaign pack"),
    "foreign manifest": (lambda good: _tar([_file(packs.MANIFEST, b'{"format": "other"}')]), "foreign"),
    "absolute path": (lambda good: _tar([_manifest({"/etc/x": b"1"}), _file("/etc/x", b"1")]), "outside"),
    "dot-dot": (lambda good: _tar([_manifest({"runs/../../x": b"1"}), _file("runs/../../x", b"1")]), "outside"),
    "symlink": (lambda good: _tar([_manifest({}), _link("runs/a-1/config.json", "/etc/passwd")]), "link"),
    "hard link": (lambda good: _tar([_manifest({}), _link("runs/a-1/config.json", "x", tarfile.LNKTYPE)]), "link"),
    "not a run file": (lambda good: _tar([_manifest({"tables/t.csv": b"1"}), _file("tables/t.csv", b"1")]),
                       "not a run file"),
    "checksum": (lambda good: good.replace(b'"train_loss"', b'"train_lose"', 1), "checksum"),
}


@pytest.mark.parametrize("case", sorted(BAD_PACKS))
def test_bad_packs_exit_2_with_one_line_and_change_nothing(case, filled, tmp_path, capsys):
    settings, parts = filled
    good = b"".join(p.read_bytes() for p in parts)
    make, needle = BAD_PACKS[case]
    bad = tmp_path / "bad" / "tiny-pack.tar.1-of-1"
    bad.parent.mkdir()
    bad.write_bytes(make(good))
    before = snapshot(Path(settings.results_dir))
    assert cli.main(["campaign", "import", str(bad), "--results", settings.results_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert snapshot(Path(settings.results_dir)) == before


def test_incomplete_pack_and_wrong_profile_exit_2(filled, tmp_path, capsys):
    settings, parts = filled
    many = packs.pack(settings, tmp_path / "many", part_bytes=2**20)
    before = snapshot(Path(settings.results_dir))
    assert cli.main(["campaign", "import", *map(str, many[1:]), "--results", settings.results_dir]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert cli.main(["campaign", "import", str(parts[0]), "--profile", "one-seed",
                     "--results", settings.results_dir]) == 2
    assert "not 'one-seed'" in capsys.readouterr().err
    assert snapshot(Path(settings.results_dir)) == before


@pytest.mark.parametrize("args, needle", [
    (["campaign", "--profile", "no-such-profile", "--deadline", "10"], "no-such-profile"),
    (["campaign", "--deadline", "0"], "--deadline"),
    (["campaign", "--deadline", "-5"], "--deadline"),
    (["campaign"], "--deadline"),
    (["campaign", "import"], "needs the pack"),
    (["campaign", "pack"], "--out"),
])
def test_bad_campaign_arguments_exit_2(args, needle, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_import_only_moves_runs_forward(filled, tmp_path, fake_clock):
    settings, old_parts = filled  # the teacher finished, AT in progress
    store = RunStore(settings.root)
    at = campaign.status(settings).in_progress[0][0]
    ahead = tiny(tmp_path / "ahead")
    packs.import_pack(old_parts, tmp_path / "ahead")
    campaign.run(ahead, 600, log=lambda _m: None)  # finishes AT (and the student)
    new_parts = packs.pack(ahead, tmp_path / "new")
    _, imported = packs.import_pack(new_parts, settings.results_dir)
    assert at in imported.added and any("finished here already" in k for k in imported.kept)
    assert campaign.progress_of(store, at) == campaign.progress_of(RunStore(ahead.root), at)
    before = snapshot(Path(settings.results_dir))
    _, again = packs.import_pack(old_parts, settings.results_dir)  # an older pack moves nothing back
    assert again.added == [] and snapshot(Path(settings.results_dir)) == before


def test_one_slow_epoch_does_not_stop_a_run_that_has_time_for_more():
    """The next epoch is estimated from the median of the last three: one epoch slowed by other work is ignored,
    two in a row are not."""
    assert deadline.next_epoch_seconds([5.0]) == 5.0
    assert deadline.next_epoch_seconds([10.0, 10.0, 10.0, 100.0]) == 10.0
    assert deadline.next_epoch_seconds([10.0, 10.0, 100.0, 100.0]) == 100.0
