"""The paper's grids as data: complete, consistent with the engine's run ids, and deduplicated."""

import pytest

from atlib.paper.grids import groups_ablation, table1, table2, table3
from atlib.paper.settings import Settings
from atlib.paper.suite import config_for, run_id_for, teacher_config
from atlib.training import engine
from atlib.training.store import RunStore

S = Settings(profile="t", dataset="sample", epochs=1, train_subset=64, test_subset=50, device="cpu")


def test_table1_has_every_paper_cell():
    cells = table1()
    rows = {c.row for c in cells}
    assert rows == {"NIN-thin / NIN-wide", "WRN-16-1 / WRN-16-2", "WRN-16-1 / WRN-40-1", "WRN-16-2 / WRN-40-2"}
    assert {c.column for c in cells} == {"student", "AT", "F-ActT", "KD", "AT+KD", "teacher"}
    assert len(cells) == 24
    paper = {(c.row, c.column): c.paper for c in cells}
    assert paper[("WRN-16-1 / WRN-16-2", "AT")] == 7.93 and paper[("WRN-16-2 / WRN-40-2", "teacher")] == 5.23
    assert paper[("NIN-thin / NIN-wide", "AT+KD")] == 8.33


def test_other_tables_match_the_paper():
    t2 = {c.row: c.paper for c in table2()}
    assert t2["F_sum (p=1)"] == 7.99 and t2["F_max^1"] == 8.08 and t2["F_sum^4"] == 8.09
    assert t2["F_max^2 (not in the paper)"] is None and t2["F_sum^3 (not in the paper)"] is None
    g = {c.row: c.paper for c in groups_ablation()}
    assert g == {"no attention transfer": 8.77, "group 1": 8.11, "group 2": 7.96, "group 3": 7.97, "groups 1-3": 7.93}
    t3 = {c.row: (c.paper, c.method) for c in table3()}
    assert t3["symmetry norm"] == (11.8, "symmetry") and t3["gradient-based AT"] == (12.1, "grad-at")
    assert all(c.protocol == "table3" and c.student == "nin-thin-nobn" for c in table3())


def test_identical_configurations_share_one_run():
    t1 = {(c.row, c.column): c for c in table1()}
    t2 = {c.row: c for c in table2()}
    groups = {c.row: c for c in groups_ablation()}
    at = run_id_for(t1[("WRN-16-1 / WRN-16-2", "AT")], S, 0)
    assert run_id_for(t2["F_sum^2"], S, 0) == at == run_id_for(groups["groups 1-3"], S, 0)
    assert run_id_for(t1[("WRN-16-1 / WRN-16-2", "student")], S, 0) == run_id_for(t1[("WRN-16-1 / WRN-40-1",
                                                                                          "student")], S, 0)
    # the WRN-16-2 student of the last row is the WRN-16-2 teacher of the second row
    assert run_id_for(t1[("WRN-16-2 / WRN-40-2", "student")], S, 0) == run_id_for(t1[("WRN-16-1 / WRN-16-2",
                                                                                          "teacher")], S, 0)
    assert run_id_for(t2["F_sum^4"], S, 0) != at and run_id_for(groups["group 2"], S, 0) != at
    assert run_id_for(t2["F_sum^4"], S, 0) != run_id_for(t2["F_sum^4"], S, 1)


def test_cell_configs_resolve_to_the_same_run_id_in_the_engine(tmp_path):
    settings = Settings(**{**S.__dict__, "results_dir": str(tmp_path)})
    cell = next(c for c in table1() if c.row == "WRN-16-1 / WRN-16-2" and c.column == "AT")
    engine.train(teacher_config("wrn-16-2", settings), results=settings.root, progress=False, log=None)
    _, run_id, _ = engine.prepare(config_for(cell, settings, 0), RunStore(settings.root))
    assert run_id == run_id_for(cell, settings, 0)


def test_protocols_and_methods_of_cells():
    t3 = {c.row: config_for(c, S, 0) for c in table3()}
    assert all(c.augment == "flip" and c.weight_decay == 0.0 for c in t3.values())
    assert set(t3["gradient-based AT"].terms) == {"ce", "grad_at"}
    assert t3["activation-based AT"].teacher_arch == "nin-wide-norelu"
    t2 = {c.row: config_for(c, S, 0) for c in table2()}
    assert t2["F_max^1"].terms["at"] == {"beta": 1000.0, "p": 1, "kind": "max"}
    g = {c.row: config_for(c, S, 0) for c in groups_ablation()}
    assert g["group 1"].terms["at"]["groups"] == [0]


def test_settings_protocol_note():
    assert Settings(dataset="cifar10").protocol_note() == ""
    assert "200 epochs instead" in Settings(dataset="cifar10", epochs=200).protocol_note()
    note = Settings(dataset="sample", epochs=2, train_subset=10).protocol_note()
    assert "sample" in note and "2 epochs" in note and "10 training images" in note
    with pytest.raises(ValueError, match="seed"):
        Settings(seeds=[])
