"""AT between any two models: torchvision classifiers tapped at named nodes (``atlib.models.external``) train through
the unchanged engine, objectives and store (a torchvision ResNet-18 teacher, a MobileNetV3-small student, the
embedded sample); bad model or node names are one line; interrupted runs resume to the same numbers."""

import torch
import torchvision
import pytest

from atlib import cli
from atlib.losses import at_loss
from atlib.methods import method_terms
from atlib.models import build_model, canonical_name, external, tap
from atlib.objective import build_objective
from atlib.training import engine
from atlib.training.config import ConfigError, RunConfig
from atlib.training.store import RunStore
from interrupts import interrupted_on_call

TEACHER = "torchvision:resnet18"
STUDENT = "torchvision:mobilenet_v3_small"
TINY = dict(dataset="sample", train_subset=96, test_subset=50, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A torchvision ResNet-18 trained one epoch on 96 sample images (its numbers do not matter, its maps do)."""
    root = tmp_path_factory.mktemp("tv-teacher")
    record = engine.train(RunConfig(student=TEACHER, epochs=1, **TINY), results=root, progress=False, log=None)
    return root, record["run_id"]


def test_tapped_model_returns_logits_and_the_named_maps():
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=10).eval()
    tapped = tap(plain, ["layer1", "layer2.1.relu_1", "layer3"]).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, maps = tapped(x)
    assert torch.equal(logits, plain(x))  # the wrapped model computes what it computed before
    assert [tuple(m.shape) for m in maps] == [(2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]
    assert tapped.group_channels == [64, 128, 256]
    # a module name stands for its last node: layer2 and layer2.1.relu_1 are the same output
    assert torch.equal(tap(plain, ["layer2"]).eval()(x)[1][0], maps[1])


def test_names_spell_out_their_nodes():
    assert canonical_name(TEACHER) == "torchvision:resnet18@layer1,layer2,layer3"
    assert canonical_name("wrn-16-1") == "wrn-16-1"
    config = RunConfig(student=STUDENT, method="at", terms=method_terms("at"), teacher="t", teacher_arch=TEACHER)
    assert config.student == "torchvision:mobilenet_v3_small@features.1,features.3,features.8"
    assert config.teacher_arch == canonical_name(TEACHER)
    model = build_model("torchvision:mobilenet_v3_small@features.2,features.4", num_classes=7)
    assert model.nodes == ["features.2", "features.4"] and model(torch.randn(2, 3, 32, 32))[0].shape == (2, 7)


def test_at_between_a_resnet_and_a_mobilenet_has_gradients_for_the_student():
    torch.manual_seed(0)
    t, s = build_model(TEACHER).eval(), build_model(STUDENT)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        _, t_maps = t(x)
    _, s_maps = s(x)
    assert [m.shape[1] for m in s_maps] != [m.shape[1] for m in t_maps]  # channel counts differ: AT sums them out
    loss = at_loss(s_maps, t_maps)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    grads = [p.grad for n, p in s.named_parameters() if n.startswith("body.features.1.")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    # F-ActT adds 1x1 adapters from the student's to the teacher's channel counts
    fact = build_objective({"fact": {}}, s, t)
    assert [a.in_channels for a in fact.terms["fact"].transfer.adapters] == s.group_channels


def test_mismatched_node_counts_are_one_line():
    with pytest.raises(ValueError, match="the student gives 2 and the teacher 3: tap as many nodes on each"):
        build_objective(method_terms("at"), build_model("torchvision:mobilenet_v3_small@features.1,features.3"),
                        build_model(TEACHER))


def test_a_plain_torchvision_state_dict_is_a_teacher(tmp_path):
    torch.manual_seed(1)
    plain = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(plain.state_dict(), path)
    config = RunConfig(student=STUDENT, method="at", terms=method_terms("at"), teacher=str(path),
                       teacher_arch=TEACHER)
    model, arch, _ = engine.load_teacher(config, RunStore(tmp_path / "results"))
    x = torch.randn(2, 3, 32, 32)
    assert arch == canonical_name(TEACHER) and torch.equal(model(x)[0], plain(x))


@pytest.mark.slow  # trains MobileNetV3 runs twice (about 55 s)
def test_at_run_trains_and_resumes_to_the_same_numbers(teacher, tmp_path):
    root, teacher_id = teacher
    config = RunConfig(student=STUDENT, method="at", terms=method_terms("at"), teacher=teacher_id, epochs=2,
                       teacher_store=str(root), **TINY)
    full = engine.train(config, results=tmp_path / "full", progress=False, log=None)
    assert full["run_id"].startswith("torchvision-mobilenet_v3_small-features.1-features.3-features.8_at_from-")
    assert all(torch.isfinite(torch.tensor(full["test_error"])) for _ in [0])
    metrics = RunStore(tmp_path / "full").read_metrics(full["run_id"])
    assert len(metrics) == 2 and set(metrics[0]["details"]) == {"at/g1", "at/g2", "at/g3"}
    with interrupted_on_call(engine, "train_epoch_steps", 2):
        engine.train(config, results=tmp_path / "cut", progress=False, log=None)
    store = RunStore(tmp_path / "cut")
    assert store.status(full["run_id"]) == "interrupted" and len(store.read_metrics(full["run_id"])) == 1
    resumed = engine.train(config, results=tmp_path / "cut", progress=False, log=None)
    assert resumed["test_error"] == full["test_error"]
    a, b = RunStore(tmp_path / "full").load_weights(full["run_id"]), store.load_weights(full["run_id"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_trains_the_pair_with_named_nodes(teacher, tmp_path, capsys):
    root, teacher_id = teacher
    argv = ["train", "--student", STUDENT, "--student-nodes", "features.2,features.4,features.9", "--method", "at",
            "--teacher", teacher_id, "--teacher-store", str(root), "--sample", "--epochs", "1", "--train-subset", "64",
            "--test-subset", "50", "--batch-size", "32", "--device", "cpu", "--results", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    run_id = capsys.readouterr().out.split()[0]
    saved = RunStore(tmp_path).read_config(run_id)
    assert saved["student"] == "torchvision:mobilenet_v3_small@features.2,features.4,features.9"
    assert saved["teacher"] == teacher_id and saved["teacher_arch"] == canonical_name(TEACHER)


@pytest.mark.parametrize("args, needle", [
    (["--student", "torchvision:mobilenet_v9"], "unknown torchvision model 'mobilenet_v9'; valid models: alexnet,"),
    (["--student", STUDENT, "--student-nodes", "features.99"], "unknown node(s) ['features.99'] of MobileNetV3; "
                                                               "valid nodes: x, features, features.0,"),
    (["--student", "torchvision:vgg11"], "torchvision model 'vgg11' has no default nodes: name them"),
    (["--student", "wrn-16-1", "--student-nodes", "layer1"], "--student-nodes applies to torchvision:<model>"),
    (["--student", "torchvision:resnet18@"], "expected torchvision:<model>[@<node>,<node>,...]"),
])
def test_bad_model_or_node_names_exit_2_with_one_line(args, needle, tmp_path, capsys):
    assert cli.main(["train", *args, "--sample", "--epochs", "1", "--results", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet19'"):
        RunConfig(student="torchvision:resnet19")
    assert external.parse_name("wrn-16-1") is None
