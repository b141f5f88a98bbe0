"""Closed forms and invariances of core.diversity (SCD, FID, precision/recall, Vendi, pairwise cosine)."""

import numpy as np
import pytest
import torch

from comfy_aig.core import diversity as dv


def whitened(n, d, rng):
    """Z [n, d] with exact zero column means and exact sample covariance I (divisor n - 1)."""
    z = rng.standard_normal((n, d))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal columns, still zero-mean (span of centred columns)
    return q * np.sqrt(n - 1)


def random_rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def with_spectrum(lam, n, rng, mean=None):
    """Samples whose sample covariance is exactly Q diag(lam) Q^T for a random rotation Q."""
    d = len(lam)
    x = whitened(n, d, rng) * np.sqrt(lam) @ random_rotation(d, rng).T
    return x + (0.0 if mean is None else mean)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- SCD -------------------------------------------------------------------------------------------
def test_scd_equals_closed_form_for_known_spectra(rng):
    lam1 = np.array([9.0, 4.0, 1.0, 0.5, 0.1])
    lam2 = np.array([0.2, 6.0, 3.0, 2.0, 0.01])  # given unsorted: SCD pairs sorted values
    a, b = with_spectrum(lam1, 300, rng), with_spectrum(lam2, 200, rng, mean=5.0)
    s1, s2 = np.sort(lam1)[::-1], np.sort(lam2)[::-1]
    assert dv.spectral_covariance_distance(a, b) == pytest.approx(np.sum((s1 - s2) ** 2), rel=1e-9)
    expected_log = np.sum((np.log10(s1 + 1e-10) - np.log10(s2 + 1e-10)) ** 2)
    assert dv.spectral_covariance_distance(a, b, log=True) == pytest.approx(expected_log, rel=1e-9)


def test_scd_of_sampled_gaussians_approaches_population_value(rng):
    lam1, lam2 = np.array([4.0, 2.0, 1.0]), np.array([1.0, 1.0, 1.0])
    a = rng.standard_normal((20000, 3)) * np.sqrt(lam1)
    b = rng.standard_normal((20000, 3)) * np.sqrt(lam2)
    assert dv.spectral_covariance_distance(a, b) == pytest.approx(9.0 + 1.0, rel=0.05)


def test_scd_zero_for_identical_sets_and_positive_otherwise(rng):
    a = rng.standard_normal((50, 8))
    assert dv.spectral_covariance_distance(a, a) == 0.0
    assert dv.spectral_covariance_distance(a, a, log=True) == 0.0
    assert dv.spectral_covariance_distance(a, 2 * a) > 0.1


def test_scd_invariant_to_rotation_translation_and_permutation(rng):
    a, b = rng.standard_normal((60, 6)), rng.standard_normal((40, 6)) * [3, 2, 1, 1, 0.5, 0.1]
    base = dv.spectral_covariance_distance(a, b)
    moved = b[rng.permutation(40)] @ random_rotation(6, rng) + 7.0
    assert dv.spectral_covariance_distance(a, moved) == pytest.approx(base, rel=1e-9)
    assert dv.spectral_covariance_distance(a[:, ::-1], b) == pytest.approx(base, rel=1e-9)
    assert dv.spectral_covariance_distance(b, a) == pytest.approx(base, rel=1e-12)  # symmetric


def test_scd_accepts_torch_and_numpy_alike(rng):
    a, b = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    expected = dv.spectral_covariance_distance(a, b)
    got = dv.spectral_covariance_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert got == pytest.approx(expected, rel=1e-5)


# -- FID -------------------------------------------------------------------------------------------
def test_fid_zero_for_identical_sets(rng):
    a = rng.standard_normal((80, 5))
    assert dv.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fid_matches_formula_for_known_diagonal_gaussians(rng):
    lam1, lam2 = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([3.0, 1.0, 0.0])
    w1, w2 = whitened(100, 3, rng), whitened(120, 3, rng)
    a, b = w1 * np.sqrt(lam1) + mu1, w2 * np.sqrt(lam2) + mu2
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(lam1) - np.sqrt(lam2)) ** 2)  # commuting covariances
    assert dv.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_matches_nonsymmetric_eigen_route_for_rotated_covariances(rng):
    a = with_spectrum(np.array([5.0, 2.0, 1.0, 0.3]), 90, rng, mean=1.0)
    b = with_spectrum(np.array([1.0, 1.0, 4.0, 0.1]), 70, rng)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(c1 @ c2).real.clip(0)).sum()
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert dv.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


# -- precision / recall ----------------------------------------------------------------------------
def test_recall_and_precision_one_for_identical_sets(rng):
    a = rng.standard_normal((100, 8))
    assert dv.precision_recall(a, a, k=5) == (1.0, 1.0)


def test_collapsed_set_keeps_precision_but_loses_recall(rng):
    ref = rng.standard_normal((200, 4))
    collapsed = ref[0] + 1e-3 * rng.standard_normal((200, 4))  # mode collapse onto one reference sample
    precision, recall = dv.precision_recall(ref, collapsed, k=5)
    assert precision == 1.0
    assert recall < 0.1
    _, recall_spread = dv.precision_recall(ref, rng.standard_normal((200, 4)), k=5)
    assert recall_spread > 0.8


def test_precision_recall_match_brute_force_with_small_chunks(rng, monkeypatch):
    ref, other = rng.standard_normal((37, 3)), rng.standard_normal((29, 3)) + 0.7
    k = 3

    def brute(a, b):
        daa = np.linalg.norm(a[:, None] - a[None], axis=-1)
        dbb = np.linalg.norm(b[:, None] - b[None], axis=-1)
        dab = np.linalg.norm(a[:, None] - b[None], axis=-1)
        ra, rb = np.sort(daa, axis=1)[:, k], np.sort(dbb, axis=1)[:, k]
        return (dab <= ra[:, None]).any(0).mean(), (dab <= rb[None, :]).any(1).mean()

    monkeypatch.setattr(dv, "CHUNK_ROWS", 7)
    got = dv.precision_recall(ref, other, k=k)
    assert got == pytest.approx(brute(ref, other), abs=1e-12)
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0


# -- Vendi and pairwise cosine ---------------------------------------------------------------------
def test_vendi_counts_distinct_modes():
    assert dv.vendi_score(np.ones((10, 4))) == pytest.approx(1.0, abs=1e-9)
    assert dv.vendi_score(np.eye(6)) == pytest.approx(6.0, rel=1e-9)
    assert dv.vendi_score(np.repeat(np.eye(3), 4, axis=0)) == pytest.approx(3.0, rel=1e-9)
    wide = np.repeat(np.eye(3, 20), 2, axis=0)  # D > N route
    assert dv.vendi_score(wide) == pytest.approx(3.0, rel=1e-9)


def test_pairwise_cosine_matches_brute_force(rng):
    x = rng.standard_normal((25, 6))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    expected = np.mean(1 - cos[~np.eye(25, dtype=bool)])
    assert dv.mean_pairwise_cosine_distance(x) == pytest.approx(expected, rel=1e-12)
    assert dv.mean_pairwise_cosine_distance(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)


def test_diversity_metrics_agrees_with_single_functions(rng):
    ref, other = rng.standard_normal((40, 5)), rng.standard_normal((30, 5)) * 2
    got = dv.diversity_metrics(ref, other, k=5)
    assert tuple(got) == dv.METRIC_KEYS
    assert got["scd"] == pytest.approx(dv.spectral_covariance_distance(ref, other), rel=1e-12)
    assert got["log_scd"] == pytest.approx(dv.spectral_covariance_distance(ref, other, log=True), rel=1e-12)
    assert got["fid"] == pytest.approx(dv.frechet_distance(ref, other), rel=1e-12)
    assert (got["precision"], got["recall"]) == dv.precision_recall(ref, other, k=5)
    assert got["vendi"] == dv.vendi_score(other) and got["vendi_ref"] == dv.vendi_score(ref)
    assert got["pairwise_cosine"] == dv.mean_pairwise_cosine_distance(other)


# -- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, other, match",
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "N = 1"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "feature sizes differ"),
        (np.zeros((5, 3, 1)), np.zeros((5, 3)), "2-D"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN or inf"),
        (np.zeros((5, 3)), np.array([[np.inf, 0, 0]] * 5), "NaN or inf"),
    ],
)
def test_bad_inputs_raise_named_errors(ref, other, match):
    for fn in (dv.spectral_covariance_distance, dv.frechet_distance, dv.diversity_metrics):
        with pytest.raises(dv.DiversityInputError, match=match):
            fn(ref, other)


def test_precision_recall_needs_more_than_k_samples_and_valid_k(rng):
    with pytest.raises(dv.DiversityInputError, match="at least 6"):
        dv.precision_recall(rng.standard_normal((5, 2)), rng.standard_normal((9, 2)), k=5)
    with pytest.raises(dv.DiversityInputError, match="positive integer"):
        dv.precision_recall(rng.standard_normal((9, 2)), rng.standard_normal((9, 2)), k=0)


def test_cosine_metrics_reject_zero_rows():
    x = np.eye(4)
    x[2] = 0
    with pytest.raises(dv.DiversityInputError, match="all-zero"):
        dv.vendi_score(x)
    with pytest.raises(dv.DiversityInputError, match="all-zero"):
        dv.mean_pairwise_cosine_distance(x)


def test_fid_with_singular_covariance_uses_symmetric_root(rng):
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))  # N <= D: C1 is singular
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(c1 @ c2).real.clip(0)).sum()
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert dv.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n_ref, n_other", [(5, 7), (7, 30), (30, 40)])  # sample-space, mixed and D x D routes
def test_sample_space_and_covariance_routes_agree(rng, n_ref, n_other):
    d = 8 if n_ref < 8 else 12
    ref, other = rng.standard_normal((n_ref, d)) * np.arange(1, d + 1), rng.standard_normal((n_other, d)) + 1
    c1, c2 = np.cov(ref, rowvar=False), np.cov(other, rowvar=False)
    s1 = np.sort(np.clip(np.linalg.eigvalsh(c1), 0, None))[::-1]
    s2 = np.sort(np.clip(np.linalg.eigvalsh(c2), 0, None))[::-1]
    assert dv.spectral_covariance_distance(ref, other) == pytest.approx(np.sum((s1 - s2) ** 2), rel=1e-9)
    log_expected = np.sum((np.log10(s1 + 1e-10) - np.log10(s2 + 1e-10)) ** 2)
    assert dv.spectral_covariance_distance(ref, other, log=True) == pytest.approx(log_expected, rel=1e-3)
    diff = ref.mean(0) - other.mean(0)
    tr_sqrt = np.sqrt(np.linalg.eigvals(c1 @ c2).real.clip(0)).sum()
    expected_fid = diff @ diff + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert dv.frechet_distance(ref, other) == pytest.approx(expected_fid, rel=1e-6)
