"""Diversity metrics on feature matrices [N, D]: SCD, FID, k-NN precision/recall, Vendi, pairwise cosine.

All maths runs in float64 on numpy. Inputs are torch tensors or numpy arrays [N, D]. Features are used
as given: no per-dimension standardisation (it inflates SCD by orders of magnitude, docs/design.md section 5).
Pairwise distances are computed in row chunks, so N = 10,000 needs O(chunk * N) memory, not O(N^2).
"""

from __future__ import annotations

import numpy as np

from .errors import AIGInputError

LOG_EPS = 1e-10  # floor inside log10 for the log-spectrum SCD (Jena et al. 2024, sec. 5)
CHUNK_ROWS = 1024  # rows of a pairwise-distance block: CHUNK_ROWS * N * 8 bytes (80 MB at N = 10,000)
METRIC_KEYS = ("scd", "log_scd", "fid", "precision", "recall", "vendi", "vendi_ref", "pairwise_cosine")


class DiversityInputError(AIGInputError):
    """Bad feature matrices given to a diversity metric (the message names the problem and the fix)."""


def as_features(x, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """Validated float64 copy-free view [N, D] of a torch tensor or array; raises DiversityInputError."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DiversityInputError(
            f"{name} must be a 2-D feature matrix [N, D], got shape {x.shape}; "
            "flatten per-image features with x.reshape(len(x), -1)."
        )
    if x.shape[1] < 1:
        raise DiversityInputError(f"{name} has D = 0 feature dimensions; pass non-empty features.")
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DiversityInputError(
            f"{name} contains NaN or inf in rows {rows[:8].tolist()}; fix the feature extractor input "
            "(e.g. NaN images from an fp16 VAE) before computing metrics."
        )
    if x.shape[0] < min_rows:
        raise DiversityInputError(
            f"{name} has N = {x.shape[0]} samples; at least {min_rows} are needed "
            "(a covariance or neighbourhood needs several images: generate a larger batch)."
        )
    return x


def _check_pair(ref, other, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    ref = as_features(ref, "ref", min_rows)
    other = as_features(other, "other", min_rows)
    if ref.shape[1] != other.shape[1]:
        raise DiversityInputError(
            f"feature sizes differ: ref has D = {ref.shape[1]}, other has D = {other.shape[1]}; "
            "extract both sets with the same feature model."
        )
    return ref, other


def mean_and_covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean [D] and unbiased covariance [D, D] (divisor N - 1) of float64 features [N, D]."""
    mu = x.mean(axis=0)
    xc = x - mu
    cov = xc.T @ xc / (x.shape[0] - 1)
    return mu, (cov + cov.T) * 0.5


def sorted_spectrum(cov: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, descending, round-off negatives clipped to 0."""
    return np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)


def scd_from_spectra(lam_ref: np.ndarray, lam_other: np.ndarray, log: bool = False) -> float:
    """SCD = sum_i (lambda1_i - lambda2_i)^2 over descending spectra; log10(lambda + 1e-10) if log."""
    if log:
        lam_ref, lam_other = np.log10(lam_ref + LOG_EPS), np.log10(lam_other + LOG_EPS)
    return float(np.sum((lam_ref - lam_other) ** 2))


class _Moments:
    """Mean [D] and scaled centred samples A = (X - mu) / sqrt(N - 1) [N, D], so the covariance is A^T A."""

    def __init__(self, x: np.ndarray):
        self.n, self.d = x.shape
        self.mu = x.mean(axis=0)
        self.a = (x - self.mu) / np.sqrt(self.n - 1)

    def spectrum(self) -> np.ndarray:
        """Covariance eigenvalues [D], descending; via the N x N Gram A A^T (zero-padded) when N <= D."""
        if self.n <= self.d:
            lam = np.zeros(self.d)
            gram = self.a @ self.a.T
            lam[: self.n] = sorted_spectrum((gram + gram.T) * 0.5)
            return lam
        return sorted_spectrum(self.cov())

    def cov(self) -> np.ndarray:
        cov = self.a.T @ self.a
        return (cov + cov.T) * 0.5


def _frechet(m1: _Moments, m2: _Moments) -> float:
    """FID from moments; tr (C1 C2)^1/2 = nuclear norm of A1 A2^T when both sets have N <= D (no D x D work)."""
    if max(m1.n, m2.n) > m1.d:
        return frechet_from_stats(m1.mu, m1.cov(), m2.mu, m2.cov())
    tr_sqrt = np.linalg.svd(m1.a @ m2.a.T, compute_uv=False).sum()
    diff = m1.mu - m2.mu
    value = diff @ diff + np.sum(m1.a**2) + np.sum(m2.a**2) - 2.0 * tr_sqrt
    return float(max(value, 0.0))


def spectral_covariance_distance(ref, other, log: bool = False) -> float:
    """Spectral Covariance Distance (Jena et al. 2024, sec. 5): squared distance of sorted covariance spectra."""
    ref, other = _check_pair(ref, other)
    return scd_from_spectra(_Moments(ref).spectrum(), _Moments(other).spectrum(), log=log)


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix via eigh (negative round-off eigenvalues clipped)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr (C1 C2)^1/2 = sum sqrt eig(M) for the symmetric M = L^T C2 L (C1 = L L^T, a similarity of C1 C2)."""
    try:
        root = np.linalg.cholesky(cov1)  # fast route, needs C1 positive definite (N > D, no collinearity)
    except np.linalg.LinAlgError:
        root = _psd_sqrt(cov1)  # singular C1 (e.g. N <= D): C1 = S S with S symmetric, same identity
    middle = root.T @ cov2 @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) * 0.5), 0.0, None)).sum())


def frechet_from_stats(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2) (Heusel et al. 2017, eq. 6), clipped at 0."""
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * _trace_sqrt_product(cov1, cov2)
    return float(max(value, 0.0))


def frechet_distance(ref, other) -> float:
    """Frechet distance between Gaussians fitted to the two sets (FID, Heusel et al. 2017, eq. 6)."""
    ref, other = _check_pair(ref, other)
    return _frechet(_Moments(ref), _Moments(other))


def _row_chunks(n: int, chunk: int = CHUNK_ROWS):
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def _squared_distances(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 [len(a), len(b)] via the Gram expansion, clipped at 0."""
    d = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def knn_radii_squared(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row [N] (the row itself excluded)."""
    sq = np.einsum("ij,ij->i", x, x)
    radii = np.empty(x.shape[0])
    for rows in _row_chunks(x.shape[0]):
        d = _squared_distances(x[rows], sq[rows], x, sq)
        d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)] = 0.0  # self exactly at distance 0
        radii[rows] = np.partition(d, k, axis=1)[:, k]  # index 0 is the self match
    return radii


def precision_recall(ref, other, k: int = 5) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019): k-NN balls; recall = share of ref covered by other."""
    if int(k) != k or k < 1:
        raise DiversityInputError(f"k must be a positive integer, got {k!r}; the paper uses k = 5.")
    k = int(k)
    ref, other = _check_pair(ref, other, min_rows=k + 1)
    r_ref, r_other = knn_radii_squared(ref, k), knn_radii_squared(other, k)
    ref_sq, other_sq = np.einsum("ij,ij->i", ref, ref), np.einsum("ij,ij->i", other, other)
    other_inside_ref = np.zeros(other.shape[0], dtype=bool)  # precision: other sample in some ref ball
    ref_covered = np.zeros(ref.shape[0], dtype=bool)  # recall: ref sample in some other ball
    for rows in _row_chunks(ref.shape[0]):
        d = _squared_distances(ref[rows], ref_sq[rows], other, other_sq)  # [c, N_other]
        other_inside_ref |= (d <= r_ref[rows, None]).any(axis=0)
        ref_covered[rows] = (d <= r_other[None, :]).any(axis=1)
    return float(other_inside_ref.mean()), float(ref_covered.mean())


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise DiversityInputError(
            f"{name} has all-zero feature rows {np.flatnonzero(norms == 0)[:8].tolist()}; cosine similarity "
            "is undefined for them (check the feature extractor)."
        )
    return x / norms[:, None]


def vendi_score(features) -> float:
    """Vendi score (Friedman & Dieng 2023): exp of the entropy of eig(K / N), K the cosine-similarity kernel."""
    u = _unit_rows(as_features(features), "features")
    n, d = u.shape
    gram = u.T @ u / n if d < n else u @ u.T / n  # same non-zero spectrum, the smaller matrix
    lam = np.clip(np.linalg.eigvalsh((gram + gram.T) * 0.5), 0.0, None)
    lam = lam[lam > 0]
    return float(np.exp(-np.sum(lam * np.log(lam))))


def mean_pairwise_cosine_distance(features) -> float:
    """Mean of 1 - cos(x_i, x_j) over pairs i != j, in O(N D): sum_{i != j} u_i.u_j = ||sum u||^2 - N."""
    u = _unit_rows(as_features(features), "features")
    n = u.shape[0]
    total = u.sum(axis=0)
    return float(1.0 - (total @ total - n) / (n * (n - 1)))


def diversity_metrics(ref, other, k: int = 5) -> dict[str, float]:
    """Every metric of `other` against the reference set `ref` (moments shared between SCD and FID)."""
    ref, other = _check_pair(ref, other)
    m_ref, m_other = _Moments(ref), _Moments(other)
    lam_r, lam_o = m_ref.spectrum(), m_other.spectrum()
    precision, recall = precision_recall(ref, other, k=k)
    return {
        "scd": scd_from_spectra(lam_r, lam_o),
        "log_scd": scd_from_spectra(lam_r, lam_o, log=True),
        "fid": _frechet(m_ref, m_other),
        "precision": precision,
        "recall": recall,
        "vendi": vendi_score(other),
        "vendi_ref": vendi_score(ref),
        "pairwise_cosine": mean_pairwise_cosine_distance(other),
    }
