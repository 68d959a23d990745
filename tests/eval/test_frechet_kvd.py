"""Fréchet distance against scipy.linalg.sqrtm and closed forms; the polynomial-kernel MMD (KVD) against a loop."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from dit_video.eval.frechet import feature_stats, frechet_distance, frechet_from_features
from dit_video.eval.kvd import polynomial_mmd2


def _scipy_fd(mu1, s1, mu2, s2) -> float:  # the StyleGAN-V / FID formula
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)))


def _rotation(d: int, rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


def test_commuting_covariances_closed_form():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(0)
    d = 6
    q = _rotation(d, rng)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def test_matches_scipy_sqrtm_on_general_covariances():
    rng = np.random.default_rng(1)
    for d in (3, 16, 64):
        x, y = rng.normal(size=(d, 2 * d)), rng.normal(size=(d, 2 * d))
        s1, s2 = x @ x.T / d, y @ y.T / d + 0.1 * np.eye(d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-8)


def test_gaussian_features_against_closed_form_and_scipy():
    # features drawn from N(mu1, S1) and N(mu2, S2) with commuting S: the distance of the fitted Gaussians
    # agrees with scipy on the same fit to rounding and with the population's closed form to sampling error
    rng = np.random.default_rng(2)
    d, n = 4, 50_000
    q = _rotation(d, rng)
    a, b = np.array([0.5, 1.0, 2.0, 0.2]), np.array([1.5, 0.3, 2.0, 0.8])
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 0.25])
    x = rng.normal(size=(n, d)) * np.sqrt(a) @ q.T + mu1
    y = rng.normal(size=(n, d)) * np.sqrt(b) @ q.T + mu2
    got = frechet_from_features(x, y)
    assert got == pytest.approx(_scipy_fd(*feature_stats(x), *feature_stats(y)), rel=1e-9)
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 1.3125 + 0.86 = 2.17
    # the fitted means and covariances are off by ~ sqrt(tr S / n) ~ 0.01 each; 0.1 is several of those
    assert got == pytest.approx(exact, abs=0.1)


def test_singular_covariances_fewer_videos_than_features():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 40)), rng.normal(size=(7, 40)) + 0.5
    fd = frechet_from_features(x, y)
    assert np.isfinite(fd) and fd > 0
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="two videos"):
        feature_stats(x[:1])


def _mmd_loop(x, y) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kvd_matches_the_definition_and_separates_sets():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(9, 5)), rng.normal(size=(12, 5)) + 1.0
    assert polynomial_mmd2(x, y) == pytest.approx(_mmd_loop(x, y), rel=1e-10)
    same = polynomial_mmd2(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)))
    apart = polynomial_mmd2(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)) + 1.0)
    assert apart > 0.5 and abs(same) < 0.05 * apart  # unbiased: ~0 for one distribution
    with pytest.raises(ValueError):
        polynomial_mmd2(x[:1], y)
