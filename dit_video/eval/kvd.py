"""Kernel video distance: the unbiased squared MMD with KID's polynomial kernel, on I3D features.

::

    k(a, b) = (a . b / d + 1)^3                                   (d = feature dimension)
    KVD = 1/(N(N-1)) sum_{i != j} k(x_i, x_j) + 1/(M(M-1)) sum_{i != j} k(y_i, y_j) - 2/(NM) sum_{i,j} k(x_i, y_j)

The estimator of Binkowski et al. (ICLR 2018, KID) that Unterthiner et al. report next to FVD as KVD,
computed on the whole sets (no subsets). Unbiased: its expectation is 0 when both sets come from one
distribution, so small sets can give small negative values. Lower = closer. Needs N, M >= 2.
"""

from __future__ import annotations

import numpy as np


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between feature sets ``x`` [N, d] and ``y`` [M, d] under k(a, b) = (a.b/d + 1)^3."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f"features must be [N >= 2, d] and [M >= 2, d], got {x.shape} and {y.shape}")
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())
