"""The losses of a WRN cohort (``grouped_wrn``): K students' objectives on the grouped network's outputs, with the
loss functions of ``atlib.losses`` (each paper term is written there once; here they run over the member axis).

- ``cohort_losses``: the per-student loop, a reference (``ObjectiveOutput.terms`` per student).
- ``cohort_loss_vectors``: the same computed together, students sharing a term and its options in one batch of ops;
  what the cohort step uses.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .. import losses
from ..attention import attention_map, normalize_map
from ..methods import AT_DEFAULTS, AT_FORM, KD_DEFAULTS
from ..objective import validate_spec
from .grouped_wrn import split_groups

COHORT_TERMS = ("ce", "kd", "at")


def validate_cohort_specs(specs: Sequence[Mapping[str, Mapping[str, Any]]], k: int | None = None) -> None:
    """ValueError for a spec list of the wrong length, terms a cohort cannot compute, or bad options."""
    specs = list(specs)
    if k is not None and len(specs) != k:
        raise ValueError(f"a cohort of {k} students needs {k} objective specs, got {len(specs)}")
    for i, spec in enumerate(specs):
        if isinstance(spec, Mapping):
            bad = [name for name in spec if name not in COHORT_TERMS]
            if bad:
                raise ValueError(f"student {i}: loss term(s) {bad} are unsupported in a cohort; cohorts support "
                                 f"{list(COHORT_TERMS)} (gradient-based and F-ActT terms need a per-student model)")
        validate_spec(spec)


def _options(spec_options: Mapping[str, Any] | None) -> tuple[float, int, dict[str, Any]]:
    options = dict(spec_options or {})
    weight = float(options.pop("weight", 1.0))
    start = int(options.pop("start_epoch", 0))
    return weight, start, options


def _kd_options(options: Mapping[str, Any]) -> tuple[float, float]:
    """A KD term's ``(T, alpha)``, the methods' defaults where the spec leaves them out."""
    return options.get("T", KD_DEFAULTS["T"]), options.get("alpha", KD_DEFAULTS["alpha"])


def _at_options(options: Mapping[str, Any]) -> tuple[float, float, str, str]:
    """An AT term's ``(beta, p, kind, form)``, the methods' defaults where the spec leaves them out."""
    return (options.get("beta", AT_DEFAULTS["beta"]), options.get("p", AT_DEFAULTS["p"]),
            options.get("kind", AT_DEFAULTS["kind"]), options.get("form", AT_FORM))


def _checked_inputs(logits, labels, teacher_outputs, specs):
    """``cohort_losses``' arguments checked: ``(k, specs, labels as K (B,) tensors, teacher outputs or None)``."""
    if logits.dim() != 3:
        raise ValueError(f"cohort logits must be (B, K, classes), got {tuple(logits.shape)}")
    k = logits.shape[1]
    specs = list(specs)
    validate_cohort_specs(specs, k)
    if isinstance(labels, torch.Tensor):
        if labels.dim() != 2 or labels.shape[1] != k:
            raise ValueError(f"cohort labels must be (B, {k}) or a list of {k} (B,) tensors, got {tuple(labels.shape)}")
        labels = list(labels.unbind(1))
    labels = list(labels)
    if len(labels) != k:
        raise ValueError(f"expected labels for {k} students, got {len(labels)}")
    if teacher_outputs is not None:
        teacher_outputs = list(teacher_outputs)
        if len(teacher_outputs) != k:
            raise ValueError(f"expected teacher outputs for {k} students, got {len(teacher_outputs)}")
    return k, specs, labels, teacher_outputs


def cohort_losses(logits: torch.Tensor, groups: Sequence[torch.Tensor], labels, teacher_outputs, specs,
                  epoch: int = 0) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """K students' objectives on a cohort's outputs.

    ``logits`` (B, K, classes) and ``groups`` [(B, K*C_g, H, W)] from ``CohortWRN.forward``; ``labels`` (B, K) or a
    list of K (B,); ``teacher_outputs`` a list of K ``(logits, groups)`` (teacher k run on student k's batch; an
    entry may be None when that student's spec needs no teacher) or None; ``specs`` K objective specs as for
    ``build_objective`` restricted to "ce", "kd" and "at" (options ``weight``, ``start_epoch`` and each loss's own).
    Terms with ``start_epoch > epoch`` are skipped, as in ``Objective``.

    Returns ``(total, per_student)``: ``per_student[k]`` maps term names to weighted values (like
    ``ObjectiveOutput.terms``) and ``total`` is the sum over students of their term sums.
    """
    k, specs, labels, teacher_outputs = _checked_inputs(logits, labels, teacher_outputs, specs)
    student_groups = [split_groups(g, k) for g in groups]  # [group][student]
    per_student: list[dict[str, torch.Tensor]] = []
    totals = []
    for i, spec in enumerate(specs):
        s_logits, s_groups, y = logits[:, i], [g[i] for g in student_groups], labels[i]
        terms: dict[str, torch.Tensor] = {}
        for name, spec_options in spec.items():
            weight, start, options = _options(spec_options)
            if epoch < start:
                continue
            teacher = None
            if name in ("kd", "at"):
                teacher = None if teacher_outputs is None else teacher_outputs[i]
                if teacher is None:
                    raise ValueError(f"student {i}: term {name!r} needs a teacher output")
            if name == "ce":
                value = losses.cross_entropy(s_logits, y)
            elif name == "kd":
                value = losses.kd_loss(s_logits, teacher[0], y, *_kd_options(options))
            else:  # "at"
                sel = options.get("groups")
                beta, p, kind, form = _at_options(options)
                pairs = losses.at_pair_losses(s_groups, teacher[1], beta, p, kind,
                                              None if sel is None else [int(g) for g in sel], form)
                value = sum(pairs.values())
            terms[name] = weight * value
        per_student.append(terms)
        if terms:
            totals.append(sum(terms.values()))
    if not totals:
        raise ValueError(f"no loss term is active at epoch {epoch} for any student")
    return sum(totals), per_student


# ------------------------------------------------------------------------------------------------ vectorised losses

_INDEX_CACHE: dict[tuple, torch.Tensor] = {}


def _constant(values: Sequence, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached constant tensor: made once (eagerly), so a CUDA-graph capture never copies from the host."""
    key = (str(device), dtype, tuple(values))
    t = _INDEX_CACHE.get(key)
    if t is None:
        t = _INDEX_CACHE[key] = torch.tensor(list(values), dtype=dtype, device=device)
    return t


def _index(idx: Sequence[int], device: torch.device) -> torch.Tensor:
    return _constant(idx, torch.long, device)


def take(t: torch.Tensor, idx: Sequence[int], dim: int = 1) -> torch.Tensor:
    """``t`` restricted to entries ``idx`` along ``dim`` (a view when ``idx`` is a contiguous run)."""
    idx = list(idx)
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return t.narrow(dim, idx[0], len(idx))
    return t.index_select(dim, _index(idx, t.device))


def _scatter(values: torch.Tensor, idx: Sequence[int], k: int) -> torch.Tensor:
    if list(idx) == list(range(k)):
        return values
    return values.new_zeros(k).index_add(0, _index(idx, values.device), values)


def _maps(t: torch.Tensor, p: float, kind: str) -> torch.Tensor:
    """(B, k, C, H, W) -> (B, k, H, W) attention maps in float32 (``attention_map`` over the members)."""
    b, k = t.shape[:2]
    return attention_map(losses.full_precision(t).reshape(b * k, *t.shape[2:]), p=p, kind=kind).view(
        b, k, *t.shape[-2:])


def _at_vectors(groups, k_total: int, idx, teacher_groups, tcols, beta, p, kind, sel, form) -> dict[int, torch.Tensor]:
    """Per selected group g: (len(idx),) AT values of students ``idx`` (``losses.at_distance`` per student)."""
    chosen = losses.select_pairs(list(groups), list(teacher_groups), sel)
    losses.check_at_options(beta, p, kind, form)
    out = {}
    for g in chosen:
        sg = groups[g]
        b = sg.shape[0]
        ms = _maps(take(sg.view(b, k_total, sg.shape[1] // k_total, *sg.shape[2:]), idx), p, kind)
        tg = teacher_groups[g].detach()
        mt = _maps(tg if tg.shape[1] == 1 and set(tcols) == {0} else take(tg, tcols), p, kind)
        ms, mt = losses.match_map_sizes(ms, mt)  # a shared teacher's (B, 1, ...) maps broadcast over the students
        out[g] = losses.at_distance(normalize_map(ms), normalize_map(mt), beta, form)
    return out


def _buckets(specs, epoch: int, teacher_cols) -> tuple[dict, list[list[str]]]:
    """The students' active terms grouped by term and options: ``{key: (name, options, students, weights)}``, and
    each student's active term names."""
    buckets: dict[tuple, tuple[str, dict, list[int], list[float]]] = {}
    active: list[list[str]] = [[] for _ in specs]
    for i, spec in enumerate(specs):
        for name, spec_options in spec.items():
            weight, start, options = _options(spec_options)
            if epoch < start:
                continue
            if name in ("kd", "at") and (teacher_cols is None or teacher_cols[i] is None):
                raise ValueError(f"student {i}: term {name!r} needs a teacher output")
            bucket = buckets.setdefault((name, repr(sorted(options.items()))), (name, options, [], []))
            bucket[2].append(i)
            bucket[3].append(weight)
            active[i].append(name)
    if not buckets:
        raise ValueError(f"no loss term is active at epoch {epoch} for any student")
    return buckets, active


def cohort_loss_vectors(logits: torch.Tensor, groups: Sequence[torch.Tensor], labels: torch.Tensor,
                        teacher_logits: torch.Tensor | None, teacher_groups: Sequence[torch.Tensor] | None,
                        teacher_cols: Sequence[int | None] | None, specs, epoch: int = 0):
    """The K students' objectives computed together (students sharing a term and its options in one batch of ops).

    ``logits`` (B, K, N) and ``groups`` [(B, K*C_g, H, W)] from ``CohortWRN.forward``; ``labels`` (K, B);
    teacher outputs with a student axis: ``teacher_logits`` (B, Kt, N), ``teacher_groups`` [(B, Kt, C_t, H, W)];
    ``teacher_cols[i]`` is student i's column in them (None: no teacher). Kt = 1 with every column 0 is one teacher
    pass shared by all students (they saw the same batch).

    Returns ``(total, terms, details, active)``: ``terms`` and ``details`` map names ("ce", "at", "at/g1", ...) to
    (K,) vectors of weighted values (0 for students without that term), ``active[i]`` lists student i's active
    term names, then its detail names. Equals ``cohort_losses`` (the per-student loop) to float rounding.
    """
    if logits.dim() != 3:
        raise ValueError(f"cohort logits must be (B, K, classes), got {tuple(logits.shape)}")
    b, k = logits.shape[:2]
    specs = list(specs)
    validate_cohort_specs(specs, k)
    if labels.dim() != 2 or labels.shape[0] != k:
        raise ValueError(f"cohort labels must be (K={k}, B), got {tuple(labels.shape)}")
    buckets, active = _buckets(specs, epoch, None if teacher_logits is None else teacher_cols)
    terms: dict[str, torch.Tensor] = {}
    details: dict[str, torch.Tensor] = {}

    def add(store: dict, name: str, values: torch.Tensor, idx, weights) -> torch.Tensor:
        w = weights[0] if len(set(weights)) == 1 else _constant(weights, values.dtype, values.device)
        weighted = values * w
        full = _scatter(weighted, idx, k)
        store[name] = store[name] + full if name in store else full
        return weighted

    total = None
    for name, options, idx, weights in buckets.values():
        lg = take(logits, idx)
        y = take(labels, idx, dim=0)
        if name == "ce":
            value = add(terms, name, losses.cross_entropy(lg, y.t()), idx, weights)
        elif name == "kd":
            tcols = [teacher_cols[i] for i in idx]
            tl = teacher_logits if teacher_logits.shape[1] == 1 and set(tcols) == {0} else take(teacher_logits, tcols)
            value = add(terms, name, losses.kd_loss(lg, tl, y.t(), *_kd_options(options)), idx, weights)
        else:  # "at"
            sel = options.get("groups")
            beta, p, kind, form = _at_options(options)
            pairs = _at_vectors(groups, k, idx, teacher_groups, [teacher_cols[i] for i in idx], beta, p, kind,
                                None if sel is None else [int(g) for g in sel], form)
            value = add(terms, name, sum(pairs.values()), idx, weights)
            for g, v in pairs.items():
                add(details, f"at/g{g + 1}", v, idx, weights)
                for i in idx:
                    active[i].append(f"at/g{g + 1}")
        total = value.sum() if total is None else total + value.sum()
    return total, terms, details, active
