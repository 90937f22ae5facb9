"""Joint fit of several photos of one person (avatar_jax.fit.joint) on the real model."""

from __future__ import annotations

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.fit import FitConfig, fit, fit_joint, synthetic
from avatar_jax.fit import fitting as F
from avatar_jax.fit import joint, operators, problem
from avatar_jax.geometry import camera as cam
from avatar_jax.model import load_head_model
from avatar_jax.model.head import silhouette_landmarks, vertices
from avatar_jax.status import Status

GROUPS, VIEWS, NOISE_PX = 6, 4, 2.0


@pytest.fixture(scope="module")
def model():
    return load_head_model()


def _groups(model, groups, views, noise, seed=0):
    """``groups`` synthetic people, each seen in ``views`` photos (own camera and expression).

    Returns landmarks ``[G, V, 68, 2]``, image sizes ``[G, V, 2]`` and true identities ``[G, Ki]``."""
    lms, sizes, ident = [], [], []
    rng = np.random.default_rng(seed)
    for g in range(groups):
        b = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(100 * seed + g), views))
        alpha = b.identity[0]
        verts = jax.vmap(vertices, (None, None, 0))(model, alpha, b.expression)
        pts = jax.vmap(lambda v, c: silhouette_landmarks(model, v, c))(verts, b.camera)
        clean = np.asarray(jax.vmap(cam.project)(b.camera, pts))
        lms.append(clean + noise * rng.normal(size=clean.shape))
        sizes.append(b.image_sizes)
        ident.append(alpha)
    return np.stack(lms).astype(np.float32), np.stack(sizes), np.stack(ident)


def _face_error(model, alpha, corrective, true_alpha):
    """Mean error (mm) over the face region (within 100 mm of the nose tip) of the neutral shape
    ``alpha . identity_basis + corrective`` against the true identity's ``[..., Ki]``."""
    neutral = np.asarray(model.neutral)
    face = np.linalg.norm(neutral - neutral[np.argmax(neutral[:, 2])], axis=1) < 100.0
    basis = np.asarray(model.identity_basis).reshape(model.num_identity, -1)
    d = ((np.asarray(alpha) - true_alpha) @ basis).reshape(alpha.shape[:-1] + (-1, 3)) + corrective
    return np.linalg.norm(d, axis=-1)[..., face].mean(-1)


@pytest.fixture(scope="module")
def noisy_groups(model):
    return _groups(model, GROUPS, VIEWS, NOISE_PX)


@pytest.fixture(scope="module")
def joint_fit(model, noisy_groups):
    lms, sizes, _ = noisy_groups
    lms = lms.copy()
    lms[1, 3] = np.nan  # a padded slot: a group of 3 photos
    lms[2, 0, :66] = np.nan  # too few landmarks for its own fit: left out of its group
    return fit_joint(lms, sizes, model=model)


def test_shared_identity_beats_every_single_photo(model, noisy_groups, joint_fit):
    lms, sizes, truth = noisy_groups
    single = fit(lms.reshape(-1, 68, 2), sizes.reshape(-1, 2), model=model)
    s_err = _face_error(model, np.asarray(single.identity), np.asarray(single.corrective),
                        np.repeat(truth, VIEWS, 0)).reshape(GROUPS, VIEWS)
    j_err = _face_error(model, np.asarray(joint_fit.views.identity), np.asarray(joint_fit.views.corrective),
                        np.repeat(truth[:, None], VIEWS, 1))
    used = joint_fit.view_used
    print(f"face-region error, mm: single {s_err[used].mean():.2f}, joint {j_err[used].mean():.2f}")
    assert np.all(joint_fit.status == Status.OK)
    assert j_err[used].mean() < s_err[used].mean()


def test_prior_counted_once_recovers_clean_shapes_better(model):
    lms, sizes, truth = _groups(model, 4, 8, 0.0, seed=1)
    joint_once = fit_joint(lms, sizes, model=model, identity_prior="once")
    single = fit(lms.reshape(-1, 68, 2), sizes.reshape(-1, 2), model=model)
    s_err = _face_error(model, np.asarray(single.identity), 0, np.repeat(truth, 8, 0))
    j_err = _face_error(model, joint_once.identity, 0, truth)
    print(f"noise-free, 8 photos: identity error single {s_err.mean():.2f} mm, joint (prior once) {j_err.mean():.2f}")
    assert np.all(joint_once.status == Status.OK)
    assert j_err.mean() < s_err.mean()
    with pytest.raises(ValueError, match="identity_prior"):
        fit_joint(lms, sizes, model=model, identity_prior="twice")


def test_padded_and_failed_photos_are_left_out_with_their_own_result(joint_fit):
    used = joint_fit.view_used
    assert not used[1, 3] and not used[2, 0] and used.sum() == GROUPS * VIEWS - 2
    assert joint_fit.views.status[1, 3] == Status.DEGENERATE_INPUT
    assert joint_fit.views.status[2, 0] == Status.DEGENERATE_INPUT
    assert np.all(joint_fit.views.status[used] == Status.OK)
    assert np.all(joint_fit.views.identity[used] == np.repeat(joint_fit.identity[:, None], VIEWS, 1)[used])
    for name in ("energy", "reprojection_error"):
        assert np.all(np.isfinite(getattr(joint_fit.views, name)[used]))


def test_energy_never_increases(joint_fit):
    hist = joint_fit.cost_after
    assert np.all(np.diff(hist, axis=1) <= 1e-3 * hist[:, :1] + 1e-6)
    assert np.allclose(joint_fit.energy, hist[:, -1], rtol=1e-3)


def test_group_without_any_usable_photo_is_degenerate(model, noisy_groups):
    lms, sizes, _ = noisy_groups
    lms = lms[:2].copy()
    lms[1] = np.nan
    res = fit_joint(lms, sizes[:2], model=model)
    assert list(res.status) == [Status.OK, Status.DEGENERATE_INPUT]
    assert not res.view_used[1].any() and res.view_used[0].all()


def test_bad_shapes_and_config_raise(model, noisy_groups):
    lms, sizes, _ = noisy_groups
    with pytest.raises(ValueError, match=r"\[G, V, K, 2\]"):
        fit_joint(lms[0], sizes[0], model=model)
    with pytest.raises(ValueError, match="image_sizes"):
        fit_joint(lms, sizes[:, :2], model=model)
    with pytest.raises(ValueError, match="confidence"):
        fit_joint(lms, sizes, model=model, confidence=np.ones((GROUPS, VIEWS, 5)))
    with pytest.raises(ValueError, match="fit_identity"):
        fit_joint(lms, sizes, FitConfig(fit_identity=False), model=model)


def test_arrow_solver_solves_the_joint_damped_normal_equations(model, noisy_groups):
    """ArrowSolver against a dense float64 solve of (J^T J + mu diag(pose)) s = b on the whole
    group's unknowns (alpha, every used photo's pose and c); a left-out photo gets a zero step."""
    lms, sizes, truth = noisy_groups
    with jax.enable_x64(True):
        cfg = FitConfig()
        model64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating)
                               else a, model)
        ops = operators.prepare(model64, cfg, with_identity=False, dtype=np.float64)
        jops = joint.joint_operators(model64, ops, cfg)
        views, valid = jax.vmap(lambda t, s: F._image_data(ops, t, jnp.ones(68), s, model64.neutral))(
            jnp.asarray(lms[0, :3], jnp.float64), jnp.asarray(sizes[0, :3], jnp.float64))
        used = jnp.asarray([True, True, False])
        data = joint.GroupData(views, used)
        alpha = jnp.asarray(0.8 * truth[0], jnp.float64)
        on_alpha = joint.with_identity(jops, views, alpha)
        pose = jax.vmap(lambda d, v, s: F._initial_pose(ops, d, v, s)[0])(
            on_alpha, valid, jnp.asarray(sizes[0, :3], jnp.float64))
        r = ops.prior.factor.shape[-1]
        c = jnp.asarray(0.3 * np.random.default_rng(1).normal(size=(3, r)))
        aux = problem.IterationArgs(sel=jnp.tile(jnp.arange(68), (3, 1)), lag=jnp.zeros((3, ops.prior.lag_index.shape[0])),
                                    sqrt_w=jnp.sqrt(views.weights) * used[:, None])
        params = {"alpha": alpha, "pose": pose, "c": c}
        _, aux = joint.group_refresh(jops, cfg, params, data, aux)
        residual = functools.partial(joint.group_residual, jops, cfg)
        x, unravel = jax.flatten_util.ravel_pytree(params)
        J = np.asarray(jax.jacfwd(lambda v: jax.flatten_util.ravel_pytree(residual(unravel(v), data, aux))[0])(x))
        index = lambda tree: np.asarray(jax.flatten_util.ravel_pytree(tree)[0]) > 0  # noqa: E731
        zeros = jax.tree.map(jnp.zeros_like, params)
        is_pose = index({**zeros, "pose": jnp.ones_like(pose)})
        left_out = index({**zeros, "pose": zeros["pose"].at[2].set(1.0), "c": zeros["c"].at[2].set(1.0)})
        b = np.random.default_rng(0).normal(size=x.shape[0])
        b[left_out] = 0.0
        mu = 0.3
        keep = ~left_out
        system = J[:, keep].T @ J[:, keep] + mu * np.diag(is_pose[keep].astype(float))
        ref = np.zeros_like(b)
        ref[keep] = np.linalg.solve(system, b[keep])
        solver = joint.ArrowSolver(jops, cfg)
        lin = solver.linearise(residual, params, (data, aux))
        step, ok = solver.solve(lin, unravel(jnp.asarray(b)), jnp.asarray(mu), "identity")
        got = np.asarray(jax.flatten_util.ravel_pytree(step)[0])
    assert bool(ok)
    assert np.all(got[left_out] == 0.0)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-8
