"""Fréchet distance between two sets of features (FVD when the features are I3D's, :mod:`.i3d`).

::

    X [N, d], Y [M, d] -> mu_x, mu_y [d];  S_x, S_y [d, d]  (np.cov, unbiased)
    FD = ||mu_x - mu_y||^2 + tr(S_x) + tr(S_y) - 2 tr((S_x S_y)^(1/2))      (lower = closer; 0 for equal sets)

The Fréchet (2-Wasserstein) distance between the Gaussians fitted to the two sets, as in FID and the
StyleGAN-V / Latte FVD protocol (which call ``scipy.linalg.sqrtm(S_x @ S_y)``). Here the trace of the
square root is computed from a symmetric matrix: tr((S_x S_y)^(1/2)) = sum_i sqrt(lambda_i) with
lambda_i the eigenvalues of S_x^(1/2) S_y S_x^(1/2) (similar to S_x S_y, and symmetric positive
semi-definite), which stays real and finite when the covariances are singular, as they are with fewer
videos than feature dimensions.
"""

from __future__ import annotations

import numpy as np


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and unbiased covariance ``[d, d]`` of ``features`` ``[N, d]`` (N >= 2), float64."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, d] (two videos at least), got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _clean_eigenvalues(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise (below d * eps * the largest) set to 0.

    A singular covariance's null-space eigenvalues come out as +-1e-16-level noise; their square roots
    (1e-8 each) would otherwise add up over hundreds of dimensions.
    """
    tol = len(w) * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), 1e-300)
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(_clean_eigenvalues(w))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (covariances symmetric PSD)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    a = _psd_sqrt(s1)
    m = a @ s2 @ a
    lam = _clean_eigenvalues(np.linalg.eigvalsh((m + m.T) / 2))
    tr_sqrt = float(np.sqrt(lam).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def frechet_from_features(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets ``x`` [N, d] and ``y`` [M, d]."""
    return frechet_distance(*feature_stats(x), *feature_stats(y))
