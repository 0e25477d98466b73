"""A training objective is a weighted set of named loss terms.

A method of the paper is data, e.g. AT+KD is ``{"kd": {"T": 4, "alpha": 0.9}, "at": {"beta": 1000}}``:

    objective = build_objective({"ce": {}, "at": {"beta": 1000, "p": 2}}, student, teacher)
    out = objective(student, teacher, x, labels)
    out.total.backward()          # = sum of out.terms (each already weighted)
    out.terms                     # {"ce": ..., "at": ...}
    out.details                   # {"at/g1": ..., "at/g2": ..., "at/g3": ...} per-group AT values (1-based names)

Every term accepts an optional ``weight`` (default 1) and ``start_epoch`` (default 0: the term is inactive before
that 0-based epoch; the ImageNet protocol adds AT at epoch 60 of 100). Term names: see ``TERMS``.
Terms share one student forward and, when needed, one input-gradient computation per batch (``BatchContext``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from . import losses
from .methods import AT_DEFAULTS, AT_FORM, FACT_DEFAULTS, GRADIENT_BETA, KD_DEFAULTS


def batch_independent(model: nn.Module) -> bool:
    """True if no layer of ``model`` mixes the samples of a batch in its current mode (BatchNorm normalises with
    the batch's statistics in train mode, or always without running statistics)."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
                   for m in model.modules())


# Devices where the symmetry norm's two input gradients come from one double-width pass (see BatchContext). On this
# project's CPU one pass measured 10-20% slower than two (the work is the same; the cost is the bigger activations);
# on a GPU one wider pass fills more of the device. Not yet measured on a GPU: benchmarks/throughput.py has cases
# with and without ("mirror_one_pass").
ONE_PASS_MIRROR_DEVICES = ("cuda",)


class BatchContext:
    """Lazily computed, shared quantities of one training batch.

    ``flipped_input_grad``: a term will also need the student's input gradient on the mirrored batch (symmetry
    norm). For a batch-independent student on a device of ``ONE_PASS_MIRROR_DEVICES`` both input gradients come
    from one double-width pass over ``cat([x, flip(x)])`` (each sample's gradient is its own, so the values are
    those of two passes); otherwise the mirrored pass runs separately when asked for."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, x: torch.Tensor, labels: torch.Tensor,
                 student_input_grad: bool, flipped_input_grad: bool = False):
        self.student, self.teacher, self.x, self.labels = student, teacher, x, labels
        self._cache: dict[str, Any] = {}
        if student_input_grad and flipped_input_grad and x.device.type in ONE_PASS_MIRROR_DEVICES \
                and batch_independent(student):
            b = x.shape[0]
            both = torch.cat([x, torch.flip(x, dims=[-1])])
            grad, logits, groups = losses.input_gradient(student, both, torch.cat([labels, labels]),
                                                         create_graph=True)
            self._cache["student"] = (logits[:b], [g[:b] for g in groups])
            self._cache["student_input_grad"] = grad[:b]
            self._cache["student_flipped_input_grad"] = grad[b:]
        elif student_input_grad:
            grad, logits, groups = losses.input_gradient(student, x, labels, create_graph=True)
            self._cache["student"] = (logits, groups)
            self._cache["student_input_grad"] = grad
        else:
            self._cache["student"] = student(x)

    @classmethod
    def from_values(cls, teacher: nn.Module | None, x: torch.Tensor, labels: torch.Tensor,
                    values: dict[str, Any]) -> "BatchContext":
        """A context whose student quantities were computed elsewhere: ``values["student"]`` = ``(logits, groups)``,
        and ``"student_input_grad"`` / ``"student_flipped_input_grad"`` where the terms need them. The teacher's
        are computed from ``teacher`` on ``x`` when a term asks, as usual."""
        ctx = cls.__new__(cls)
        ctx.student, ctx.teacher, ctx.x, ctx.labels, ctx._cache = None, teacher, x, labels, dict(values)
        return ctx

    @property
    def student_flipped_input_grad(self) -> torch.Tensor:
        """J(flip(x)): the student's input gradient on the mirrored batch (double backpropagation kept)."""
        if "student_flipped_input_grad" not in self._cache:
            if self.student is None:
                raise ValueError("this batch's student quantities were computed elsewhere (BatchContext.from_values) "
                                 "without the input gradient on the mirrored batch")
            grad, _, _ = losses.input_gradient(self.student, torch.flip(self.x, dims=[-1]), self.labels,
                                               create_graph=True)
            self._cache["student_flipped_input_grad"] = grad
        return self._cache["student_flipped_input_grad"]

    @property
    def student_out(self):
        return self._cache["student"]

    @property
    def student_input_grad(self) -> torch.Tensor:
        return self._cache["student_input_grad"]

    @property
    def teacher_out(self):
        if "teacher" not in self._cache:
            with torch.no_grad():
                self._cache["teacher"] = self.teacher(self.x)
        return self._cache["teacher"]

    @property
    def teacher_input_grad(self) -> torch.Tensor:
        if "teacher_input_grad" not in self._cache:
            grad, _, _ = losses.input_gradient(self.teacher, self.x, self.labels, create_graph=False)
            self._cache["teacher_input_grad"] = grad.detach()
        return self._cache["teacher_input_grad"]


class Term(nn.Module):
    """One named loss term. ``forward(ctx)`` returns a scalar, or ``(scalar, {detail_name: scalar})``."""

    needs_teacher = False
    needs_teacher_outputs = False  # the teacher's forward without gradients (``BatchContext.teacher_out``)
    needs_student_input_grad = False
    needs_flipped_input_grad = False


class CrossEntropyTerm(Term):
    """The task loss L_task."""

    def forward(self, ctx: BatchContext):
        return losses.cross_entropy(ctx.student_out[0], ctx.labels)


class KnowledgeDistillationTerm(Term):
    """``losses.kd_loss`` (includes its own (1 - alpha) cross-entropy: do not add "ce" beside it)."""

    needs_teacher = True
    needs_teacher_outputs = True

    def __init__(self, T: float = KD_DEFAULTS["T"], alpha: float = KD_DEFAULTS["alpha"]):
        super().__init__()
        losses.kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), T, alpha)  # validate
        self.T, self.alpha = T, alpha

    def forward(self, ctx: BatchContext):
        return losses.kd_loss(ctx.student_out[0], ctx.teacher_out[0], ctx.labels, self.T, self.alpha)


class AttentionTransferTerm(Term):
    """``losses.at_loss`` on the group outputs; details hold each pair's value as ``g1``, ``g2``, ..."""

    needs_teacher = True
    needs_teacher_outputs = True

    def __init__(self, beta: float = AT_DEFAULTS["beta"], p: float = AT_DEFAULTS["p"], kind: str = AT_DEFAULTS["kind"],
                 groups=None, form: str = AT_FORM):
        super().__init__()
        losses.at_pair_losses([torch.ones(1, 1, 1, 1)], [torch.ones(1, 1, 1, 1)], beta, p, kind, None, form)
        self.beta, self.p, self.kind, self.form = beta, p, kind, form
        self.groups = None if groups is None else [int(g) for g in groups]

    def forward(self, ctx: BatchContext):
        pairs = losses.at_pair_losses(ctx.student_out[1], ctx.teacher_out[1], self.beta, self.p, self.kind,
                                      self.groups, self.form)
        return sum(pairs.values()), {f"g{g + 1}": v for g, v in pairs.items()}


class ActivationTransferTerm(Term):
    """F-ActT (``losses.ActivationTransfer``); its adapters are trainable parameters of the objective."""

    needs_teacher = True
    needs_teacher_outputs = True

    def __init__(self, student_channels, teacher_channels, beta: float = FACT_DEFAULTS["beta"], groups=None):
        super().__init__()
        self.transfer = losses.ActivationTransfer(student_channels, teacher_channels, beta, groups)

    def forward(self, ctx: BatchContext):
        pairs = self.transfer.pair_losses(ctx.student_out[1], ctx.teacher_out[1])
        return sum(pairs.values()), {f"g{g + 1}": v for g, v in pairs.items()}


class InputGradientTerm(Term):
    """Base of the terms built on the student's input gradient (double backpropagation), weighted by beta."""

    needs_student_input_grad = True

    def __init__(self, beta: float = GRADIENT_BETA):
        super().__init__()
        losses.check_weight("beta", beta)
        self.beta = beta


class GradientAttentionTransferTerm(InputGradientTerm):
    """Gradient-based AT: ``losses.gradient_at_loss`` between student and teacher input gradients."""

    needs_teacher = True

    def forward(self, ctx: BatchContext):
        return losses.gradient_at_loss(ctx.student_input_grad, ctx.teacher_input_grad, self.beta)


class SymmetryNormTerm(InputGradientTerm):
    """Symmetry norm: ``losses.symmetry_loss`` between the student's input gradients on the batch and on its
    mirror image (``BatchContext.student_flipped_input_grad``)."""

    needs_flipped_input_grad = True

    def forward(self, ctx: BatchContext):
        return losses.symmetry_loss(ctx.student_input_grad, ctx.student_flipped_input_grad, self.beta)


class MinL2Term(InputGradientTerm):
    """min-l2: ``losses.min_l2_loss`` of the student's input gradient."""

    def forward(self, ctx: BatchContext):
        return losses.min_l2_loss(ctx.student_input_grad, self.beta)


TERMS: dict[str, type[Term]] = {
    "ce": CrossEntropyTerm,
    "kd": KnowledgeDistillationTerm,
    "at": AttentionTransferTerm,
    "fact": ActivationTransferTerm,
    "grad_at": GradientAttentionTransferTerm,
    "symmetry": SymmetryNormTerm,
    "min_l2": MinL2Term,
}


@dataclass
class ObjectiveOutput:
    logits: torch.Tensor
    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    details: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Weighted sum of named terms; ``forward`` returns an ``ObjectiveOutput``."""

    def __init__(self, terms: Mapping[str, Term], weights: Mapping[str, float],
                 start_epochs: Mapping[str, int] | None = None):
        super().__init__()
        if not terms:
            raise ValueError("an objective needs at least one loss term")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)
        self.start_epochs = {name: 0 for name in terms} | dict(start_epochs or {})
        self.epoch = 0  # set by the engine; terms whose start_epoch is later are skipped

    @property
    def needs_teacher(self) -> bool:
        return any(t.needs_teacher for t in self.terms.values())

    @property
    def needs_teacher_outputs(self) -> bool:
        return any(t.needs_teacher_outputs for t in self.terms.values())

    @property
    def uses_teacher_outputs_now(self) -> bool:
        """Whether a term active at this epoch uses the teacher's forward without gradients."""
        return any(t.needs_teacher_outputs for t in self.active_terms().values())

    def active_terms(self) -> dict[str, Term]:
        return {name: t for name, t in self.terms.items() if self.epoch >= self.start_epochs[name]}

    def forward(self, student: nn.Module, teacher: nn.Module | None, x: torch.Tensor,
                labels: torch.Tensor) -> ObjectiveOutput:
        if self.needs_teacher and teacher is None:
            raise ValueError(f"terms {[n for n, t in self.terms.items() if t.needs_teacher]} need a teacher")
        active = self.active_terms()
        needs_grad = any(t.needs_student_input_grad for t in active.values())
        needs_flipped = any(t.needs_flipped_input_grad for t in active.values())
        ctx = BatchContext(student, teacher, x, labels, student_input_grad=needs_grad, flipped_input_grad=needs_flipped)
        return self.evaluate(ctx)

    def evaluate(self, ctx: BatchContext) -> ObjectiveOutput:
        """The active terms on a batch whose shared quantities ``ctx`` holds (``forward`` builds it from the models;
        ``training.grouped_nin`` fills it from K runs computed as one network)."""
        values, details = {}, {}
        for name, term in self.active_terms().items():
            result = term(ctx)
            value, extra = result if isinstance(result, tuple) else (result, {})
            values[name] = self.weights[name] * value
            details.update({f"{name}/{k}": self.weights[name] * v for k, v in extra.items()})
        return ObjectiveOutput(ctx.student_out[0], sum(values.values()), values, details)


def _make_term(name: str, options: Mapping[str, Any] | None, student_channels=None, teacher_channels=None):
    """``(term, weight)`` from one entry of a spec; ValueError naming any bad name, option or value."""
    if name not in TERMS:
        raise ValueError(f"unknown loss term {name!r}; expected one of {sorted(TERMS)}")
    options = dict(options or {})
    weight = options.pop("weight", 1.0)
    losses.check_weight(f"{name} weight", weight)
    start = options.pop("start_epoch", 0)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"{name} start_epoch must be an integer >= 0, got start_epoch={start!r}")
    cls = TERMS[name]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "student_channels", "teacher_channels"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for loss term {name!r}; expected some of {sorted(allowed)}")
    if cls is ActivationTransferTerm:
        options = {"student_channels": student_channels, "teacher_channels": teacher_channels, **options}
    return cls(**options), float(weight), start


def validate_spec(spec: Mapping[str, Mapping[str, Any]]) -> None:
    """Check a spec without models (F-ActT channel counts are checked when the objective is built)."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"a method must be a non-empty mapping of loss terms, got {spec!r}")
    for name, options in spec.items():
        _make_term(name, options, [1], [1])
    if all(int((options or {}).get("start_epoch", 0)) > 0 for options in spec.values()):
        raise ValueError("every loss term starts after epoch 0: the first epochs would have no loss")


def build_objective(spec: Mapping[str, Mapping[str, Any]], student: nn.Module | None = None,
                    teacher: nn.Module | None = None) -> Objective:
    """Objective from ``{term_name: {option: value, "weight": w}}``. F-ActT reads ``group_channels`` of the models."""
    validate_spec(spec)
    pairs_groups = [n for n in spec if TERMS[n] in (AttentionTransferTerm, ActivationTransferTerm)]
    s_groups, t_groups = getattr(student, "group_channels", None), getattr(teacher, "group_channels", None)
    if pairs_groups and s_groups is not None and t_groups is not None and len(s_groups) != len(t_groups):
        raise ValueError(f"terms {pairs_groups} pair the student's and the teacher's groups in order, but the student "
                         f"gives {len(s_groups)} and the teacher {len(t_groups)}: tap as many nodes on each")
    terms, weights, starts = {}, {}, {}
    for name, options in spec.items():
        if TERMS[name] is ActivationTransferTerm and (student is None or teacher is None):
            raise ValueError("the 'fact' term needs the student and teacher models (for their channel counts)")
        terms[name], weights[name], starts[name] = _make_term(name, options, getattr(student, "group_channels", None),
                                                              getattr(teacher, "group_channels", None))
    return Objective(terms, weights, starts)
