"""The paper's claims about CIFAR-10, each with our verdict ("agrees", "disagrees", "agrees so far", "not measured
yet"), the evidence (our medians) and the number of seeds behind it."""

from __future__ import annotations

from typing import Sequence

from .grids import Cell
from .settings import Settings
from .summary import collect, summarize

Medians = dict[tuple[str, str], tuple[float, int, float, float]]


def _medians(cells: Sequence[Cell], settings: Settings) -> Medians:
    """(row, column) -> (median, n, min, max) over finished seeds (median NaN where none)."""
    summary = summarize(collect(cells, settings))
    return {(r.row, r.column): (r.ours_median, r.n, r.ours_min, r.ours_max) for r in summary.itertuples()}


def _value(m: tuple) -> str:
    median, n, lo, hi = m
    return f"{median:.2f}" + (f" (n={n}, {lo:.2f}..{hi:.2f})" if n > 1 else "")


def _verdict(measured: int, needed: int, broken: bool) -> str:
    if broken:
        return "disagrees"
    if measured == 0:
        return "not measured yet"
    return "agrees" if measured == needed else f"agrees so far ({measured} of {needed} measured)"


def claims(settings: Settings) -> list[dict]:
    """The paper's claims about CIFAR-10, each with our verdict ("agrees", "disagrees", "agrees so far",
    "not measured yet"), the evidence and the number of seeds behind it."""
    from .grids import TABLE1_PAIRS, groups_ablation, table1, table2
    t1, t2, g = _medians(table1(), settings), _medians(table2(), settings), _medians(groups_ablation(), settings)
    rows = [row for row, *_ in TABLE1_PAIRS]
    return [_at_lowers_error(t1, rows), _best_attention_function(t2), _all_groups_beat_one(g),
            _at_kd_best(t1, rows)]


def _at_lowers_error(t1: Medians, rows: list[str]) -> dict:
    evidence, measured, broken, seeds = [], 0, False, []
    for row in rows:
        at, st = t1[(row, "AT")], t1[(row, "student")]
        if at[1] and st[1]:
            measured += 1
            seeds += [at[1], st[1]]
            broken |= not at[0] < st[0]
            evidence.append(f"{row}: AT {_value(at)} vs student {_value(st)} ({at[0] - st[0]:+.2f})")
    return {"claim": "AT lowers the student's error in every Table 1 row",
            "verdict": _verdict(measured, len(rows), broken), "evidence": evidence, "seeds": seeds}


def _best_attention_function(t2: Medians) -> dict:
    functions = ["F_sum (p=1)", "F_sum^2", "F_sum^4", "F_max^1"]
    have = {f: t2[(f, "error")] for f in functions if t2[(f, "error")][1]}
    best = min(have, key=lambda f: have[f][0]) if have else None
    broken = "F_sum^2" in have and best != "F_sum^2"
    return {"claim": "F_sum^2 is the best attention function of Table 2 (F_sum, F_sum^2, F_sum^4, F_max^1)",
            "verdict": _verdict(len(have) if "F_sum^2" in have else 0, len(functions), broken),
            "evidence": [f"{f}: {_value(m)}" for f, m in have.items()]
            + [f"{r} (ours only): {_value(m)}" for (r, _), m in t2.items()
               if "not in the paper" in r and m[1]],
            "seeds": [m[1] for m in have.values()]}


def _all_groups_beat_one(g: Medians) -> dict:
    singles = {r: g[(r, "error")] for r in ("group 1", "group 2", "group 3") if g[(r, "error")][1]}
    every = g[("groups 1-3", "error")]
    broken = bool(every[1]) and any(not every[0] < m[0] for m in singles.values())
    return {"claim": "AT at all groups beats AT at any single group (section 4.1.1)",
            "verdict": _verdict(len(singles) if every[1] else 0, 3, broken),
            "evidence": ([f"groups 1-3: {_value(every)}"] if every[1] else [])
            + [f"{r}: {_value(m)}" for r, m in singles.items()],
            "seeds": [m[1] for m in singles.values()] + ([every[1]] if every[1] else [])}


def _at_kd_best(t1: Medians, rows: list[str]) -> dict:
    methods = ["student", "AT", "F-ActT", "KD", "AT+KD"]
    best_rows, measured, evidence, seeds = 0, 0, [], []
    for row in rows:
        ms = {m: t1[(row, m)] for m in methods}
        if all(v[1] for v in ms.values()):
            measured += 1
            seeds += [v[1] for v in ms.values()]
            winner = min(ms, key=lambda m: ms[m][0])
            best_rows += winner == "AT+KD"
            evidence.append(f"{row}: best {winner} {_value(ms[winner])}, AT+KD {_value(ms['AT+KD'])}")
    broken = measured - best_rows > 1  # the paper: best in 3 of the 4 rows
    return {"claim": "AT+KD is the best method in 3 of the 4 Table 1 rows",
            "verdict": _verdict(measured, len(rows), broken) + (f": best in {best_rows} of {measured}"
                                                                  if measured else ""),
            "evidence": evidence, "seeds": seeds}


def claims_markdown(found: list[dict]) -> str:
    """``claims`` as a Markdown table; a verdict on one seed per cell says it is within seed noise."""
    lines = ["| the paper's claim | ours | evidence (test error %, median; n and spread where n > 1) |",
             "|---|---|---|"]
    for c in found:
        note = ""
        if c["seeds"] and max(c["seeds"]) == 1:
            note = " *(one seed per cell: within seed noise, not a verdict)*"
        lines.append(f"| {c['claim']} | {c['verdict']}{note} | {'; '.join(c['evidence']) or '-'} |")
    return "\n".join(lines) + "\n"

