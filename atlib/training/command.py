"""The ``atlib train`` flags: the ``RunConfig`` they build, and back, the command line that trains a given
``RunConfig`` (the report and the missing-teacher errors print it, so every missing run says how to train it).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..data.cifar import ENV_VAR
from ..methods import AT_DEFAULTS, AT_FORM, KD_DEFAULTS, METHODS, OPTION_TERMS, method_terms
from ..models import external
from ..paths import DEFAULT_DATA
from .config import PAPER_EPOCHS, PAPER_MILESTONES, ConfigError, RunConfig

# RunConfig's defaults: the flags' defaults and help texts are read from them, never restated
DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}


def _groups(text: str) -> list[int]:
    """'1,3' (1-based, as the paper counts groups) -> [0, 2]."""
    try:
        groups = [int(g) - 1 for g in text.split(",") if g.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"groups must be comma-separated integers like 1,2,3, got {text!r}")
    if not groups or min(groups) < 0:
        raise argparse.ArgumentTypeError(f"groups are numbered from 1, got {text!r}")
    return groups


def _number(text: str) -> int | float:
    """'2' -> 2, '2.5' -> 2.5: an integral exponent stays an int, as in the experiment grids (same run id)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return int(value) if value.is_integer() else value


def _nodes(text: str) -> list[str]:
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    if not nodes:
        raise argparse.ArgumentTypeError(f"nodes must be comma-separated node names like layer2,layer3, got {text!r}")
    return nodes


def _tapped(arch: str | None, nodes: list[str] | None, flag: str) -> str | None:
    """``arch`` with ``nodes`` appended (torchvision models only)."""
    if nodes is None or arch is None:
        if nodes is not None:
            raise ConfigError(f"{flag} needs a torchvision architecture beside it")
        return arch
    if not arch.startswith(external.PREFIX):
        raise ConfigError(f"{flag} applies to torchvision:<model> architectures, not {arch!r}")
    return external.full_name(arch[len(external.PREFIX):].split("@")[0], nodes)


def _epochs(text: str) -> list[int]:
    try:
        return [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"milestones must be comma-separated epochs like 30,60,90, got {text!r}")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say what to train (everything a ``RunConfig`` holds)."""
    add = parser.add_argument
    add("--student", required=True, help="architecture: wrn-16-1, wrn-40-2, nin-thin, nin-wide-nobn, ..., "
        "or any torchvision classifier as torchvision:<model> (e.g. torchvision:mobilenet_v3_small)")
    add("--student-nodes", type=_nodes, help="torchvision students: the nodes whose outputs AT compares, "
        "e.g. features.1,features.3,features.8 (default: the family's, where atlib knows one)")
    add("--method", default=DEFAULTS["method"],
        help=f"one of {', '.join(sorted(METHODS))} (default {DEFAULTS['method']})")
    add("--teacher", help="finished teacher run id (or unique prefix) in --results, or a weights file")
    add("--teacher-arch", help="teacher architecture, needed for a bare weights file")
    add("--teacher-nodes", type=_nodes, help="with a torchvision --teacher-arch: its nodes, e.g. "
        "layer1,layer2,layer3")
    add("--teacher-store", help="results store holding the --teacher run, e.g. results/one-seed "
        "(default: --results)")
    add("--epochs", type=int, default=DEFAULTS["epochs"], help=f"epochs to train (default {DEFAULTS['epochs']})")
    add("--seed", type=int, default=DEFAULTS["seed"], help=f"random seed (default {DEFAULTS['seed']})")
    add("--beta", type=float, help=f"weight of the method's transfer term (AT default {AT_DEFAULTS['beta']:g})")
    add("--p", type=_number, help=f"attention exponent p (AT default {AT_DEFAULTS['p']})")
    add("--kind", help=f"attention function: sum or max (AT default {AT_DEFAULTS['kind']})")
    add("--groups", type=_groups, help="transfer at these groups only, numbered from 1, e.g. 2 or 1,3")
    add("--at-form", dest="form", help=f"AT convention: code (authors' code) or paper (Eq. 2) (default {AT_FORM})")
    add("--start-epoch", type=int, help="epoch (from 0) at which the transfer term starts (default 0)")
    add("--T", type=float, help=f"KD temperature (default {KD_DEFAULTS['T']:g})")
    add("--alpha", type=float, help=f"KD weight of the soft term (default {KD_DEFAULTS['alpha']:g})")
    add("--lr", type=float, default=DEFAULTS["lr"], help=f"initial learning rate (default {DEFAULTS['lr']:g})")
    add("--lr-decay", type=float, default=DEFAULTS["lr_decay"],
        help=f"lr factor at each milestone (default {DEFAULTS['lr_decay']:g})")
    add("--milestones", type=_epochs, help="lr drop epochs, e.g. 30,60,90 (default: "
        f"{'/'.join(map(str, PAPER_MILESTONES))} of {PAPER_EPOCHS}, scaled to --epochs)")
    add("--batch-size", type=int, default=DEFAULTS["batch_size"],
        help=f"global batch size (split over torchrun processes; default {DEFAULTS['batch_size']})")
    add("--eval-batch-size", type=int, default=DEFAULTS["eval_batch_size"],
        help=f"evaluation batch size (default {DEFAULTS['eval_batch_size']})")
    add("--weight-decay", type=float, default=DEFAULTS["weight_decay"],
        help=f"weight decay (default {DEFAULTS['weight_decay']:g})")
    add("--augment", default=DEFAULTS["augment"],
        help=f"crop+flip (authors), flip (Table 3) or none (default {DEFAULTS['augment']})")
    add("--precision", default=DEFAULTS["precision"], help=f"fp32 or bf16 (default {DEFAULTS['precision']})")
    add("--train-subset", type=int, help="train on the first N training images only")
    add("--test-subset", type=int, help="evaluate on the first N test images only")
    add("--data-root", help=f"directory holding cifar-10-batches-py (default ${ENV_VAR}, else ./{DEFAULT_DATA})")
    add("--sample", action="store_true", help="use the embedded CIFAR-10 sample instead of the full set")
    add("--dataset", default=DEFAULTS["dataset"], help="cifar10, sample, or image folders: folder (train/ and val/), "
        f"cub, imagenet (default {DEFAULTS['dataset']})")
    add("--image-size", type=int, default=DEFAULTS["image_size"],
        help=f"image folders: crop size (default {DEFAULTS['image_size']})")
    add("--pretrained", help="resnet: 'imagenet' (torchvision's weights) or a weights file")
    add("--weights-dir", help="where to look for torchvision's ImageNet weight files first")
    add("--freeze-bn", action="store_true", help="freeze every BN layer (statistics and affine)")
    add("--freeze-groups", type=int, default=DEFAULTS["freeze_groups"],
        help=f"freeze the stem and the first N residual groups (default {DEFAULTS['freeze_groups']})")
    add("--workers", type=int, default=DEFAULTS["workers"],
        help=f"image folders: DataLoader worker processes (default {DEFAULTS['workers']})")
    add("--device", default=DEFAULTS["device"], help=f"auto, cpu, cuda, cuda:N or mps (default {DEFAULTS['device']})")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    terms = method_terms(args.method, beta=args.beta, p=args.p, kind=args.kind, groups=args.groups,
                         form=args.form, T=args.T, alpha=args.alpha, start_epoch=args.start_epoch)
    return RunConfig(
        student=_tapped(args.student, args.student_nodes, "--student-nodes"), method=args.method, terms=terms,
        teacher=args.teacher, teacher_arch=_tapped(args.teacher_arch, args.teacher_nodes, "--teacher-nodes"),
        epochs=args.epochs, seed=args.seed, lr=args.lr, lr_decay=args.lr_decay, lr_milestones=args.milestones,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, weight_decay=args.weight_decay,
        augment=args.augment, precision=args.precision, train_subset=args.train_subset, test_subset=args.test_subset,
        dataset="sample" if args.sample else args.dataset, data_root=args.data_root, device=args.device,
        image_size=args.image_size, pretrained=args.pretrained, weights_dir=args.weights_dir,
        freeze_bn=args.freeze_bn, freeze_groups=args.freeze_groups, workers=args.workers,
        teacher_store=args.teacher_store)


# RunConfig field -> the `atlib train` flag that sets it (fields without one cannot be written as a command)
FIELD_FLAGS = {"teacher": "--teacher", "teacher_arch": "--teacher-arch", "epochs": "--epochs", "seed": "--seed",
               "lr": "--lr", "lr_decay": "--lr-decay", "lr_milestones": "--milestones", "batch_size": "--batch-size",
               "eval_batch_size": "--eval-batch-size", "weight_decay": "--weight-decay", "augment": "--augment",
               "precision": "--precision", "train_subset": "--train-subset", "test_subset": "--test-subset",
               "dataset": "--dataset", "image_size": "--image-size", "pretrained": "--pretrained",
               "freeze_bn": "--freeze-bn", "freeze_groups": "--freeze-groups"}
# method option -> flag (see methods.method_terms)
OPTION_FLAGS = {"beta": "--beta", "p": "--p", "kind": "--kind", "groups": "--groups", "form": "--at-form",
                "T": "--T", "alpha": "--alpha", "start_epoch": "--start-epoch"}


def train_command(config: RunConfig, results: str | Path) -> str | None:
    """The ``python -m atlib train`` command line that trains exactly ``config`` into ``results`` (the same run
    id), or None where a field has no flag. Only what differs from the command's defaults is written."""
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    default = config_from_args(parser.parse_args(["--student", config.student, "--method", config.method]))
    if set(config.terms) != set(default.terms):
        return None
    words = ["python", "-m", "atlib", "train", "--student", config.student]
    if config.method != "student":
        words += ["--method", config.method]
    mine, theirs = config.identity(), default.identity()
    for name in sorted(mine):
        if name in ("student", "method", "terms") or mine[name] == theirs[name]:
            continue
        if name not in FIELD_FLAGS:
            return None
        value = mine[name]
        if isinstance(value, bool):
            if not value:  # the flags only switch on
                return None
            words.append(FIELD_FLAGS[name])
        elif isinstance(value, (list, tuple)):
            words += [FIELD_FLAGS[name], ",".join(map(str, value)) or "''"]  # '' : an empty list (no lr drops)
        else:
            words += [FIELD_FLAGS[name], str(value)]
    for option, flag in OPTION_FLAGS.items():
        term = next((t for t in OPTION_TERMS[option] if t in config.terms), None)
        if term is None:
            continue
        value, base = config.terms[term].get(option), default.terms.get(term, {}).get(option)
        if value is not None and value != base:
            words += [flag, ",".join(str(g + 1) for g in value) if option == "groups" else str(value)]
    if config.teacher_store is not None:
        words += ["--teacher-store", str(config.teacher_store)]
    return " ".join(words + ["--results", str(results)])
