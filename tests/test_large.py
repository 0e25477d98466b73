"""Tables 4 and 5 machinery on tiny image folders (CPU): fine-tuning with frozen parts, CUB, ImageNet's delayed
AT, pretrained weights, bad input, and torchrun with 2 gloo processes against one process."""

import os
import subprocess
import sys

import pytest
import torch
import torchvision

from atlib.methods import method_terms
from atlib.models import build_model
from atlib.models.pretrained import TORCHVISION_FILES, WeightsError, load_pretrained
from atlib.paper.grids import LARGE_TABLES, table4, table5
from atlib.paper.settings import Settings
from atlib.paper.suite import config_for
from atlib.paths import REPO_ROOT as REPO
from atlib.training import engine
from atlib.training.config import RunConfig
from atlib.training.store import RunStore


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Stand-ins for torchvision's ImageNet files: torchvision ResNets (random, seeded, residual branches starting at
    zero) saved under their names, with BN running statistics gathered on random images so that frozen BN layers
    normalise as trained ones do."""
    d = tmp_path_factory.mktemp("weights")
    for arch, fn in (("resnet-18", torchvision.models.resnet18), ("resnet-34", torchvision.models.resnet34)):
        torch.manual_seed(1)
        model = fn(weights=None, zero_init_residual=True)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, 3, 64, 64))
        torch.save(model.state_dict(), d / TORCHVISION_FILES[arch])
    return d


def finetune(student, tiny_folder, weights_dir, **kw):
    base = dict(student=student, dataset="folder", data_root=str(tiny_folder), image_size=64, epochs=1,
                batch_size=6, eval_batch_size=9, lr=0.001, lr_decay=0.1, weight_decay=1e-4, init="standard",
                pretrained="imagenet", weights_dir=str(weights_dir), freeze_bn=True, freeze_groups=1, device="cpu")
    base.update(kw)
    return RunConfig(**base)


def test_pretrained_weights_load_with_a_new_head(weights_dir):
    model = build_model("resnet-18", num_classes=3)
    load_pretrained(model, "resnet-18", "imagenet", weights_dir)
    reference = torch.load(weights_dir / TORCHVISION_FILES["resnet-18"], weights_only=True)
    assert torch.equal(model.net.layer3[0].conv1.weight, reference["layer3.0.conv1.weight"])
    assert model.net.fc.weight.shape == (3, 512)
    with pytest.raises(WeightsError, match="does not exist"):
        load_pretrained(model, "resnet-18", str(weights_dir / "missing.pth"))
    with pytest.raises(WeightsError, match="do not fit resnet-18"):
        load_pretrained(model, "resnet-18", str(weights_dir / TORCHVISION_FILES["resnet-34"]))


def test_finetune_protocol_freezes_bn_stem_and_first_group(tiny_folder, weights_dir, tmp_path):
    cfg = finetune("resnet-18", tiny_folder, weights_dir)
    before = build_model("resnet-18", num_classes=3)
    load_pretrained(before, "resnet-18", "imagenet", weights_dir)
    before = {k: v.clone() for k, v in before.state_dict().items()}
    record = engine.train(cfg, results=tmp_path, progress=False, log=None)
    after = RunStore(tmp_path).load_weights(record["run_id"])
    frozen = [k for k in before if k.startswith(("net.conv1", "net.bn1", "net.layer1")) or ".bn" in k
              or "downsample.1" in k]
    assert any("running_mean" in k for k in frozen) and any("layer1" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen if not k.endswith("num_batches_tracked"))
    trained = ["net.layer2.0.conv1.weight", "net.layer4.1.conv2.weight"]
    assert all(not torch.equal(before[k], after[k]) for k in trained)
    assert after["net.fc.weight"].shape == (3, 512)


@pytest.mark.slow  # fine-tunes ResNet-18 runs (about 45 s)
def test_finetune_with_at_on_last_two_groups_and_kd(tiny_folder, weights_dir, tmp_path):
    teacher = engine.train(finetune("resnet-34", tiny_folder, weights_dir), results=tmp_path, progress=False,
                           log=None)
    for method, options in (("at", {"groups": [2, 3]}), ("kd", {})):
        cfg = finetune("resnet-18", tiny_folder, weights_dir, method=method, terms=method_terms(method, **options),
                       teacher=teacher["run_id"])
        record = engine.train(cfg, results=tmp_path, progress=False, log=None)
        (row,) = RunStore(tmp_path).read_metrics(record["run_id"])
        if method == "at":
            assert set(row["details"]) == {"at/g3", "at/g4"}
        assert 0 <= row["test_error"] <= 100


def test_cub_and_imagenet_protocols(tiny_cub, tiny_folder, tmp_path):
    cub = RunConfig(student="resnet-18", dataset="cub", data_root=str(tiny_cub), image_size=64, epochs=1,
                    batch_size=4, eval_batch_size=8, device="cpu", init="standard")
    record = engine.train(cub, results=tmp_path, progress=False, log=None)
    assert record["epochs"] == 1 and "test_error_top5" not in record  # 3 classes: no top-5
    teacher = engine.train(RunConfig(student="resnet-18", dataset="imagenet", data_root=str(tiny_folder),
                                     image_size=64, epochs=1, batch_size=6, device="cpu", init="standard"),
                           results=tmp_path, progress=False, log=None)
    delayed = RunConfig(student="resnet-18", method="at", terms=method_terms("at", groups=[2, 3], start_epoch=1),
                        teacher=teacher["run_id"], dataset="imagenet", data_root=str(tiny_folder), image_size=64,
                        epochs=2, batch_size=6, device="cpu", init="standard", seed=1)
    record = engine.train(delayed, results=tmp_path, progress=False, log=None)
    first, second = RunStore(tmp_path).read_metrics(record["run_id"])
    assert set(first["terms"]) == {"ce"} and set(second["terms"]) == {"ce", "at"}


def test_table5_grid_adds_at_at_sixty_percent():
    s = Settings(imagenet_root="/x", epochs=None)
    cells = {(c.row, c.column): c for c in table5()}
    paper_at = config_for(cells[("ResNet-18 + AT (last 2 groups from epoch 60)", "top-1")], s, 0)
    assert paper_at.epochs == 100 and paper_at.lr_milestones == [30, 60, 90] and paper_at.batch_size == 256
    assert paper_at.terms["at"]["start_epoch"] == 60 and paper_at.terms["at"]["groups"] == [2, 3]
    code_at = config_for(cells[("ResNet-18 + AT (all groups from epoch 0, as the released code)",
                                "top-1")], s, 0)
    assert "start_epoch" not in code_at.terms["at"] and "groups" not in code_at.terms["at"]
    t4 = {(c.row, c.column): config_for(c, Settings(cub_root="/c"), 0)
          for c in table4()}
    assert t4[("AT", "CUB")].freeze_bn and t4[("AT", "CUB")].freeze_groups == 1
    assert t4[("AT", "CUB")].pretrained == "imagenet" and t4[("AT", "CUB")].dataset == "cub"
    assert t4[("teacher ResNet-34", "Scenes")].dataset == "folder"


def atlib_cli(*args, torchrun=0, results):
    prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun), "--master_port",
              "29611"] if torchrun else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*prefix, "-m", "atlib", "train", *args, "--results", str(results), "--quiet",
                           "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


def test_bad_inputs_of_image_folder_runs(tiny_folder, weights_dir, tmp_path):
    common = ["--student", "resnet-18", "--dataset", "folder", "--image-size", "64", "--epochs", "1",
              "--batch-size", "6"]
    cases = [
        (["--data-root", str(tmp_path / "nowhere")], "nowhere"),
        ([], "needs a data root"),
        (["--data-root", str(tiny_folder), "--pretrained", str(tmp_path / "none.pth")], "none.pth"),
    ]
    for extra, needle in cases:
        proc = atlib_cli(*common, *extra, results=tmp_path)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # a teacher whose head has 1000 classes cannot teach 3-class data
    proc = atlib_cli(*common, "--data-root", str(tiny_folder), "--method", "kd", "--teacher",
                     str(weights_dir / TORCHVISION_FILES["resnet-34"]), "--teacher-arch", "resnet-34",
                     results=tmp_path)
    assert proc.returncode == 2 and "1000 classes" in proc.stderr and "has 3" in proc.stderr, proc.stderr


@pytest.mark.slow  # torchrun: two processes plus one (about 20 s, more on a busy machine)
def test_torchrun_two_processes_match_one(tiny_folder, weights_dir, tmp_path):
    teacher = str(weights_dir / TORCHVISION_FILES["resnet-34"])
    args = ["--student", "resnet-18", "--dataset", "folder", "--data-root", str(tiny_folder), "--image-size", "64",
            "--epochs", "1", "--batch-size", "6", "--eval-batch-size", "4", "--lr", "0.001",
            "--pretrained", "imagenet", "--weights-dir", str(weights_dir), "--freeze-bn", "--freeze-groups", "1",
            "--method", "at", "--groups", "3,4", "--teacher", teacher, "--teacher-arch", "resnet-34"]
    # the 1000-class ImageNet teacher cannot teach 3 classes: make a 3-class teacher from it
    state = torch.load(teacher, weights_only=True)
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:3].clone(), state["fc.bias"][:3].clone()
    torch.save(state, tmp_path / "teacher3.pth")
    args[args.index(teacher)] = str(tmp_path / "teacher3.pth")
    one = atlib_cli(*args, results=tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = atlib_cli(*args, torchrun=2, results=tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    s1, s2 = RunStore(tmp_path / "one"), RunStore(tmp_path / "two")
    (run_id,) = [r["run_id"] for r in s1.list_runs()]
    assert [r["run_id"] for r in s2.list_runs()] == [run_id]  # only rank 0 wrote, to the same run
    (m1,), (m2,) = s1.read_metrics(run_id), s2.read_metrics(run_id)
    assert m2["environment"]["processes"] == 2 and m1["environment"]["processes"] == 1
    # the AT term is the same mean at any process count (not multiplied by it)
    assert m2["terms"]["at"] == pytest.approx(m1["terms"]["at"], rel=1e-4)
    assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-4)
    assert m2["test_error"] == m1["test_error"]
    w1, w2 = s1.load_weights(run_id), s2.load_weights(run_id)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_table4_and_table5_notebooks_on_tiny_folders(tiny_cub, tiny_folder, weights_dir, tmp_path):
    """Notebooks 07 and 08 through papermill (protocols as in the paper except epochs, batch and image size),
    then the report's Table 4/5 tables and Figure 7a / Figure 6 images."""
    import pandas as pd

    from atlib.paper import report
    from atlib.paper.pipeline import run_sequence
    from tiny_images import make_image_folder

    imagenet = make_image_folder(tmp_path / "imagenet", classes=tuple("abcdefg"), per_class_train=4,
                                 per_class_val=2)  # more than 5 classes: top-5 error is defined
    overrides = {"epochs": 2, "batch_size": 6, "image_size": 64, "cub_root": str(tiny_cub),
                 "scenes_root": str(tiny_folder), "imagenet_root": str(imagenet), "weights_dir": str(weights_dir),
                 "results_dir": str(tmp_path)}
    run_sequence("smoke", overrides=overrides, only=["07", "08"], progress=False, log=lambda _m: None)
    root = tmp_path / "smoke"
    for table, grid in LARGE_TABLES.items():
        summary = pd.read_csv(root / "tables" / f"{table}.csv")
        assert list(zip(summary["row"], summary["column"])) == [(c.row, c.column) for c in grid()]
        assert summary["ours_median"].between(0, 100).all(), table
    settings = Settings(**{**overrides, "profile": "smoke", "dataset": "sample"})
    figures = report.large_image_figures(settings)
    assert set(figures) == {"Figure 7a: ImageNet top-5 error vs epoch", "Figure 6 style: top-level attention on CUB",
                            "Figure 6 style: top-level attention on Scenes"}
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 1000 for p in figures.values())
