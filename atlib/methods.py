"""The paper's methods as data: each is a weighted set of named loss terms (see ``atlib.objective``).

``method_terms("at", p=4)`` gives the objective spec of AT with F_sum^4. Options that a method does not use are an
error, so a typo never silently trains the wrong thing.
"""

from __future__ import annotations

import copy
from typing import Any

# The methods' hyperparameters, stated once: ``losses``, ``objective``, ``training.grouped_wrn`` and the CLI take their
# defaults from here (this module imports nothing of the package, so every layer may use it).
AT_DEFAULTS = {"beta": 1000.0, "p": 2, "kind": "sum"}
KD_DEFAULTS = {"T": 4.0, "alpha": 0.9}
FACT_DEFAULTS = {"beta": 1000.0}  # F-ActT: the paper decays beta but gives no schedule, so it stays constant
# The AT loss's form when none is given (``losses.AT_FORMS``): the authors' code. Not written into method specs.
AT_FORM = "code"

# The paper gives no beta for the gradient-based terms (Table 3); 1.0 is our choice, override with beta=...
GRADIENT_BETA = 1.0

METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "student": {"ce": {}},                                          # trained alone (baseline)
    "at": {"ce": {}, "at": dict(AT_DEFAULTS)},                      # activation-based attention transfer
    "fact": {"ce": {}, "fact": dict(FACT_DEFAULTS)},                # full-activation transfer (F-ActT)
    "kd": {"kd": dict(KD_DEFAULTS)},                                # knowledge distillation (includes CE)
    "at+kd": {"kd": dict(KD_DEFAULTS), "at": dict(AT_DEFAULTS)},    # both
    "grad-at": {"ce": {}, "grad_at": {"beta": GRADIENT_BETA}},      # gradient-based attention transfer
    "symmetry": {"ce": {}, "symmetry": {"beta": GRADIENT_BETA}},    # symmetry norm of the input gradient
    "min-l2": {"ce": {}, "min_l2": {"beta": GRADIENT_BETA}},        # min-l2 (Drucker & LeCun)
}

# Which term each option of ``method_terms`` adjusts ("beta" goes to the method's transfer term).
OPTION_TERMS = {"p": ("at",), "kind": ("at",), "groups": ("at", "fact"), "form": ("at",), "T": ("kd",),
                "alpha": ("kd",), "beta": ("at", "fact", "grad_at", "symmetry", "min_l2"),
                "start_epoch": ("at", "fact", "grad_at", "symmetry", "min_l2")}


def method_terms(method: str, **options: Any) -> dict[str, dict[str, Any]]:
    """Objective spec of ``method`` with ``options`` applied (None values are ignored)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    terms = copy.deepcopy(METHODS[method])
    for name, value in options.items():
        if value is None:
            continue
        if name not in OPTION_TERMS:
            raise ValueError(f"unknown method option {name!r}; expected one of {sorted(OPTION_TERMS)}")
        targets = [t for t in OPTION_TERMS[name] if t in terms]
        if not targets:
            raise ValueError(f"option {name}={value!r} does not apply to method {method!r} "
                             f"(terms: {sorted(terms)})")
        for t in targets:
            terms[t][name] = list(value) if name == "groups" else value
    return terms
