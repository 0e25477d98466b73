"""Independent float64 reference computations (numpy, explicit loops) used by the tests."""

import math

import numpy as np


def attention_map_loop(x: np.ndarray, p: float, kind: str) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.zeros((b, h, w), dtype=np.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                vals = [abs(float(x[n, k, i, j])) ** p for k in range(c)]
                out[n, i, j] = sum(vals) if kind == "sum" else max(vals)
    return out


def normalized_vectors(amap: np.ndarray) -> np.ndarray:
    flat = amap.reshape(amap.shape[0], -1)
    return np.stack([v / max(math.sqrt(float(np.sum(v * v))), 1e-12) for v in flat])


def at_loss_reference(student, teacher, beta, p, kind, form="code", groups=None):
    total = 0.0
    for g in (range(len(student)) if groups is None else groups):
        qs = normalized_vectors(attention_map_loop(student[g], p, kind))
        qt = normalized_vectors(attention_map_loop(teacher[g], p, kind))
        d = qs - qt
        if form == "code":
            total += beta * float(np.mean(d * d))
        else:
            total += beta / 2 * float(np.mean([math.sqrt(float(np.sum(r * r))) for r in d]))
    return total


def log_softmax(z):
    z = z - z.max()
    return z - math.log(float(np.sum(np.exp(z))))


def kd_loss_reference(s, t, labels, T, alpha):
    b, k = s.shape
    kl, ce = 0.0, 0.0
    for n in range(b):
        ls, lt = log_softmax(s[n] / T), log_softmax(t[n] / T)
        kl += sum(math.exp(lt[c]) * (lt[c] - ls[c]) for c in range(k))
        ce += -log_softmax(s[n])[labels[n]]
    return alpha * T * T * kl / b + (1 - alpha) * ce / b
