"""Shape augmentation: new identities from a few source subjects (the paper's section 3.2).

For each new shape: pick a source subject and its m-1 nearest neighbours (identity coefficients
scaled by the prior sigma), draw polar coordinates ``r ~ U[0.6, 1.3]``,
``theta_1..theta_{m-1} ~ U[0, pi/2]``, turn them into Cartesian weights ``a_1..a_m`` and blend
the group. Methods (docs/augment.md states the reading of the paper behind each):

- ``"dr"``: the paper: blend DR features (:mod:`avatar_jax.augment.dr`), decode.
- ``"linear"``: the same weights on the linear shapes (isolates what DR adds).
- ``"cpca"``: the paper's Categorized-PCA ablation: a Gaussian with the group's mean and
  covariance of identity coefficients (the k-NN group stands in for the gender/ethnicity
  category, for which we have no labels).
- ``"none"``: the sources themselves, resampled (the paper's No-Aug).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from avatar_jax.augment.dr import (
    component_centroids,
    dr_basis,
    dr_decode,
    dr_encode,
    dr_interpolate,
)
from avatar_jax.model import HeadModel

METHODS = ("dr", "linear", "cpca", "none")


@dataclass(frozen=True)
class AugmentConfig:
    """Sampling parameters (defaults: the paper's).

    Attributes:
      group_size: m, the source subject plus its m-1 nearest neighbours.
      radius_range: bounds of the uniform polar radius r.
      angle_range: bounds of each uniform polar angle theta_k (radians).
      num_sources: identities drawn from the model's prior when no sources are given.
      exact_dr: encode sources with the exactness correction (see :func:`dr_encode`).
    """

    group_size: int = 5
    radius_range: tuple[float, float] = (0.6, 1.3)
    angle_range: tuple[float, float] = (0.0, float(np.pi / 2))
    num_sources: int = 500
    exact_dr: bool = True


@dataclass(frozen=True, eq=False)
class Sources:
    """Source subjects: ``coefficients [N, K]`` identity coefficients, ``shapes [N, V, 3]`` mm.

    ``dr_features [N, V, 9]`` (optional, :func:`encode_sources`): the sources' DR features around
    their mean, encoded once so that repeated ``"dr"`` draws (dataset shards) skip the encoding;
    ``dr_exact`` says with which ``exact`` flag they were encoded.
    """

    coefficients: np.ndarray
    shapes: np.ndarray
    dr_features: np.ndarray | None = None
    dr_exact: bool | None = None

    @property
    def num(self) -> int:
        return self.shapes.shape[0]


@dataclass(frozen=True, eq=False)
class AugmentResult:
    """``n`` augmented shapes and how each was made.

    Attributes:
      shapes: ``[n, V, 3]`` mm, neutral expression.
      sources: ``[n, m]`` source ids of each sample's group (column 0: the picked subject,
        then its neighbours, nearest first).
      weights: ``[n, m]`` blend weight of each group member.
      r: ``[n]`` polar radius; theta: ``[n, m-1]`` polar angles (NaN for ``"cpca"``).
      method: the method that made them.
    """

    shapes: np.ndarray
    sources: np.ndarray
    weights: np.ndarray
    r: np.ndarray
    theta: np.ndarray
    method: str


@dataclass(frozen=True, eq=False)
class Plausibility:
    """``residual_rms [n]`` mm off the model's identity span; ``prior_energy [n]`` of the projection."""

    residual_rms: np.ndarray
    prior_energy: np.ndarray


# ----------------------------------------------------------------------------- sources

def sample_identities(model: HeadModel, seed, n: int, extra_shapes=None) -> Sources:
    """``n`` identities with coefficients ``~ N(0, identity_sigma^2)``, neutral expression.

    Args:
      seed: int, ``numpy.random.Generator`` or a JAX PRNG key.
      extra_shapes: optional ``[E, V, 3]`` more sources (e.g. identities fitted to photos),
        appended after the sampled ones; their coefficients are least-squares projections.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"sample_identities: n must be a non-negative int, got {n}")
    sigma = np.asarray(model.identity_sigma, np.float64)
    if _is_jax_key(seed):
        unit = np.asarray(jax.random.normal(seed, (int(n), sigma.size)), np.float64)
    else:
        unit = np.random.default_rng(seed).standard_normal((int(n), sigma.size))
    coefficients = unit * sigma
    sampled = Sources(coefficients, identity_shapes(model, coefficients))
    if extra_shapes is None:
        return sampled
    extra = sources_from_shapes(model, extra_shapes)
    return Sources(np.concatenate([sampled.coefficients, extra.coefficients]),
                   np.concatenate([sampled.shapes, extra.shapes]))


def sources_from_shapes(model: HeadModel, shapes) -> Sources:
    """Sources from given ``shapes [N, V, 3]``; coefficients by least-squares projection."""
    x = _as_shapes(model, "source shapes", shapes)
    return Sources(project_identity(model, x)[0], x)


def encode_sources(model: HeadModel, sources: Sources, exact: bool = True) -> Sources:
    """``sources`` with their DR features precomputed (see :class:`Sources`)."""
    basis = dr_basis(sources.shapes.mean(0), np.asarray(model.triangles))
    return Sources(sources.coefficients, sources.shapes, dr_encode(basis, sources.shapes, exact=exact), bool(exact))


def identity_shapes(model: HeadModel, coefficients) -> np.ndarray:
    """``[n, V, 3]`` float64 neutral-expression shapes of identity ``coefficients [n, K]``."""
    a = np.asarray(coefficients, np.float64)
    basis = np.asarray(model.identity_basis, np.float64)
    return np.asarray(model.neutral, np.float64) + np.einsum("nk,kvd->nvd", a, basis)


def _is_jax_key(seed) -> bool:
    return isinstance(seed, jax.Array) and (jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
                                            or (seed.dtype == np.uint32 and seed.shape == (2,)))


# ----------------------------------------------------------------------------- augmentation

def polar_weights(r, theta) -> np.ndarray:
    """Cartesian coordinates ``[..., m]`` of the polar point ``r [...]``, ``theta [..., m-1]``.

    ``a_1 = r cos t_1``, ``a_k = r sin t_1 ... sin t_{k-1} cos t_k``, ``a_m = r sin t_1 ... sin t_{m-1}``:
    non-negative for angles in [0, pi/2], with ``|a| = r``.
    """
    r = np.asarray(r, np.float64)
    theta = np.asarray(theta, np.float64)
    sines = np.concatenate([np.ones(theta.shape[:-1] + (1,)), np.cumprod(np.sin(theta), -1)], -1)
    cosines = np.concatenate([np.cos(theta), np.ones(theta.shape[:-1] + (1,))], -1)
    return r[..., None] * sines * cosines


def nearest_neighbours(coefficients, sigma, k: int) -> np.ndarray:
    """``[N, k]`` ids of each source's k nearest other sources in ``coefficients / sigma``."""
    z = np.asarray(coefficients, np.float64) / np.asarray(sigma, np.float64)
    if k >= z.shape[0]:
        raise ValueError(f"need more than {k} sources for {k} neighbours each, got {z.shape[0]}")
    sq = np.sum(z * z, 1)
    dist = sq[:, None] + sq[None, :] - 2.0 * z @ z.T
    np.fill_diagonal(dist, np.inf)
    near = np.argpartition(dist, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(dist, near, 1), 1, kind="stable")
    return np.take_along_axis(near, order, 1)


def augment_shapes(model: HeadModel, method: str, n: int, seed,
                   sources: Sources | np.ndarray | None = None,
                   config: AugmentConfig = AugmentConfig()) -> AugmentResult:
    """``n`` new identity shapes by ``method`` in :data:`METHODS`; deterministic for ``seed``.

    Args:
      seed: anything ``numpy.random.default_rng`` accepts; one generator draws the prior
        sources (when ``sources`` is None), the picked subjects, then the weights.
      sources: :class:`Sources`, or source shapes ``[N, V, 3]``; None = ``config.num_sources``
        identities from the model's prior.
    """
    _check_request(method, n, config)
    rng = np.random.default_rng(seed)
    if sources is None:
        sources = sample_identities(model, rng, config.num_sources)
    elif not isinstance(sources, Sources):
        sources = sources_from_shapes(model, sources)
    _check_sources(model, sources, config.group_size)
    m = config.group_size
    groups = _draw_groups(rng, sources, model, n, m)
    if method == "cpca":
        weights = _gaussian_group_weights(rng, n, m)
        r, theta = np.full(n, np.nan), np.full((n, m - 1), np.nan)
    else:
        r, theta = _draw_polar(rng, n, m, config, one_hot=(method == "none"))
        weights = polar_weights(r, theta)
    shapes = _blend(model, method, sources, groups, weights, config.exact_dr)
    return AugmentResult(shapes, groups, weights, r, theta, method)


def _draw_groups(rng, sources: Sources, model, n, m) -> np.ndarray:
    picked = rng.integers(0, sources.num, size=n)
    near = nearest_neighbours(sources.coefficients, model.identity_sigma, m - 1)
    return np.concatenate([picked[:, None], near[picked]], 1)


def _draw_polar(rng, n, m, config: AugmentConfig, one_hot: bool):
    if one_hot:  # r = 1, theta = 0: all weight on the picked subject
        return np.ones(n), np.zeros((n, m - 1))
    r = rng.uniform(*config.radius_range, size=n)
    theta = rng.uniform(*config.angle_range, size=(n, m - 1))
    return r, theta


def _gaussian_group_weights(rng, n, m) -> np.ndarray:
    """``[n, m]`` w with ``sum_i w_i x_i ~ N(mean, cov)`` of the group members x_i.

    ``mean + X_c^T g / sqrt(m-1)`` with ``g ~ N(0, I_m)`` has the group's (unbiased) covariance
    and equals ``sum_i (1/m + (g_i - mean(g))/sqrt(m-1)) x_i``.
    """
    g = rng.standard_normal((n, m))
    return 1.0 / m + (g - g.mean(1, keepdims=True)) / np.sqrt(m - 1)


def _blend(model: HeadModel, method, sources: Sources, groups, weights, exact_dr) -> np.ndarray:
    members = sources.shapes[groups]  # [n, m, V, 3]
    if method in ("none", "cpca"):
        return np.einsum("nm,nmvd->nvd", weights, members)
    reference = sources.shapes.mean(0)
    if method == "linear":
        return reference + np.einsum("nm,nmvd->nvd", weights, members - reference)
    return _dr_blend(model, sources, groups, weights, reference, exact_dr)


def _dr_blend(model: HeadModel, sources: Sources, groups, weights, reference, exact_dr) -> np.ndarray:
    """DR blend ``sum_i a_i D_i`` around the sources' mean (the paper's reference mesh)."""
    basis = dr_basis(reference, np.asarray(model.triangles))
    if sources.dr_features is not None and sources.dr_exact == bool(exact_dr):
        features = sources.dr_features
    else:
        used = np.unique(groups)
        features = np.zeros((sources.num,) + reference.shape[:1] + (9,))
        features[used] = dr_encode(basis, sources.shapes[used], exact=exact_dr)
    centroids = component_centroids(basis, sources.shapes)
    # Translation follows the same linear blend of offsets from the reference.
    anchor = basis.ref_centroids + np.einsum("nm,nmcd->ncd", weights,
                                             centroids[groups] - basis.ref_centroids)
    return dr_decode(basis, dr_interpolate(features[groups], weights), anchor=anchor)


# ----------------------------------------------------------------------------- plausibility

def project_identity(model: HeadModel, shapes) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares identity coefficients ``[n, K]`` of ``shapes [n, V, 3]`` and the RMS ``[n]``
    (mm, per vertex) of what the mean + identity span cannot explain."""
    x = _as_shapes(model, "shapes", shapes)
    basis = np.asarray(model.identity_basis, np.float64).reshape(model.num_identity, -1).T
    offsets = (x - np.asarray(model.neutral, np.float64)).reshape(x.shape[0], -1).T
    coefficients, *_ = np.linalg.lstsq(basis, offsets, rcond=None)
    residual = offsets - basis @ coefficients
    rms = np.sqrt(np.mean(residual.reshape(x.shape[1], 3, -1) ** 2, (0, 1)) * 3)
    return coefficients.T, rms


def prior_energy(model: HeadModel, coefficients) -> np.ndarray:
    """``[n]`` sum_k (alpha_k / sigma_k)^2 of identity ``coefficients [n, K]``."""
    z = np.asarray(coefficients, np.float64) / np.asarray(model.identity_sigma, np.float64)
    return np.sum(z * z, -1)


def plausibility(model: HeadModel, shapes) -> Plausibility:
    """Distance to the identity span and prior energy of the projection, per shape."""
    coefficients, rms = project_identity(model, shapes)
    return Plausibility(rms, prior_energy(model, coefficients))


# ----------------------------------------------------------------------------- checks

def _check_request(method, n, config: AugmentConfig) -> None:
    if method not in METHODS:
        raise ValueError(f"augment_shapes: method must be one of {METHODS}, got {method!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"augment_shapes: n must be a positive int, got {n}")
    if config.group_size < 2:
        raise ValueError(f"augment_shapes: group_size must be >= 2, got {config.group_size}")
    lo, hi = config.radius_range
    if not 0 <= lo <= hi:
        raise ValueError(f"augment_shapes: radius_range must be 0 <= lo <= hi, got {config.radius_range}")


def _check_sources(model: HeadModel, sources: Sources, m) -> None:
    _as_shapes(model, "source shapes", sources.shapes)
    k = model.num_identity
    if sources.coefficients.shape != (sources.num, k):
        raise ValueError(f"source coefficients must be [{sources.num}, {k}], got "
                         f"{sources.coefficients.shape}")
    if not np.all(np.isfinite(sources.coefficients)):
        raise ValueError("source coefficients contain NaN or inf")
    if m > sources.num:
        raise ValueError(f"group_size m = {m} is larger than the number of sources ({sources.num})")


def _as_shapes(model: HeadModel, name, shapes) -> np.ndarray:
    x = np.asarray(shapes, np.float64)
    v = model.num_vertices
    if x.ndim != 3 or x.shape[1:] != (v, 3):
        raise ValueError(f"{name} must have shape [N, {v}, 3], got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or inf")
    return x
