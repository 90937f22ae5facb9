"""Tests of avatar_jax.solve: agreement with scipy, batching, NaN isolation, implicit gradients,
no recompilation, statuses and input validation."""

from __future__ import annotations

import dataclasses

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from avatar_jax.solve import (
    ConjugateGradient,
    DenseCholesky,
    FactorDamping,
    GaussNewton,
    ImplicitExact,
    ImplicitGaussNewton,
    LevenbergMarquardt,
    NielsenDamping,
    Status,
    Tolerances,
    Unrolled,
    batched_least_squares,
    least_squares,
    linearise_matrix_free,
)

METHODS = {"levenberg_marquardt": LevenbergMarquardt(), "gauss_newton": GaussNewton()}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------
# Classic problems


def rosenbrock(p):
    return jnp.stack([10.0 * (p[1] - p[0] ** 2), 1.0 - p[0]])


def powell_singular(p):
    x1, x2, x3, x4 = p[0], p[1], p[2], p[3]
    return jnp.stack([
        x1 + 10.0 * x2,
        jnp.sqrt(5.0) * (x3 - x4),
        (x2 - 2.0 * x3) ** 2,
        jnp.sqrt(10.0) * (x1 - x4) ** 2,
    ])


DECAY_T = np.linspace(0.0, 4.0, 25)


def decay_data(seed=0, a=2.5, b=1.3, c=0.4, noise=0.02):
    rng = np.random.default_rng(seed)
    return a * np.exp(-b * DECAY_T) + c + noise * rng.standard_normal(DECAY_T.shape)


def decay_residual(p, y):
    """Exponential decay a·exp(-b t) + c; params a dict pytree; nonzero residual (noisy data)."""
    return p["a"] * jnp.exp(-p["b"] * jnp.asarray(DECAY_T, y.dtype)) + p["c"] - y


DECAY_P0 = {"a": 1.0, "b": 0.5, "c": 0.0}


def _rotate(rotvec, pts):
    """Rodrigues rotation of ``pts [P, 3]`` by ``rotvec [3]`` (smooth at 0)."""
    theta2 = jnp.sum(rotvec**2)
    theta = jnp.sqrt(theta2 + 1e-30)
    k = rotvec / theta
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    return (pts * cos + jnp.cross(k, pts) * sin
            + k * (pts @ k)[:, None] * (1.0 - cos))


def make_bundle(seed=0, cameras=3, points=8):
    """Small bundle adjustment: cameras (rotvec, translation) [C, 6], points [P, 3], pinhole
    observations [C, P, 2], plus a weak prior to the initial guess that fixes the gauge."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1, 1, (points, 3))
    cams = np.concatenate([0.1 * rng.standard_normal((cameras, 3)),
                           np.c_[0.3 * rng.standard_normal((cameras, 2)), np.full(cameras, 5.0)]], 1)
    true = {"cameras": cams, "points": pts}
    obs = np.asarray(jax.vmap(lambda c: _project(c, jnp.asarray(pts)))(jnp.asarray(cams)))
    obs = obs + 0.002 * rng.standard_normal(obs.shape)
    init = {"cameras": cams + 0.05 * rng.standard_normal(cams.shape),
            "points": pts + 0.05 * rng.standard_normal(pts.shape)}
    return true, init, obs


def _project(cam, pts):
    p = _rotate(cam[:3], pts) + cam[3:]
    return p[:, :2] / p[:, 2:3]


def bundle_residual(p, obs, prior):
    proj = jax.vmap(lambda c: _project(c, p["points"]))(p["cameras"])
    return {
        "reprojection": 10.0 * (proj - obs),
        "prior_cameras": 0.1 * (p["cameras"] - prior["cameras"]),
        "prior_points": 0.1 * (p["points"] - prior["points"]),
    }


def _scipy_fit(residual_fn, p0, *args):
    x0, unravel = jax.flatten_util.ravel_pytree(p0)
    fun = jax.jit(lambda x: jax.flatten_util.ravel_pytree(residual_fn(unravel(x), *args))[0])
    jac = jax.jit(jax.jacfwd(fun))
    sol = scipy.optimize.least_squares(
        lambda x: np.asarray(fun(jnp.asarray(x))), np.asarray(x0),
        jac=lambda x: np.asarray(jac(jnp.asarray(x))),
        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=10000)
    return sol.x, sol.cost


def assert_relative(actual, desired, rtol):
    err = np.linalg.norm(actual - desired) / max(np.linalg.norm(desired), 1e-300)
    assert err <= rtol, f"relative error {err:.3g} > {rtol}: {actual} vs {desired}"


def _flat(tree):
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])


CLASSIC = {
    "rosenbrock": lambda: (rosenbrock, jnp.array([-1.2, 1.0]), ()),
    "decay": lambda: (decay_residual, jax.tree_util.tree_map(jnp.asarray, DECAY_P0),
                      (jnp.asarray(decay_data()),)),
    "bundle": lambda: _bundle_case(),
}


def _bundle_case():
    _, init, obs = make_bundle()
    init = jax.tree_util.tree_map(jnp.asarray, init)
    return bundle_residual, init, (jnp.asarray(obs), init)


@pytest.mark.parametrize("name", sorted(CLASSIC))
@pytest.mark.parametrize("method", ["levenberg_marquardt", "gauss_newton"])
def test_matches_scipy(x64, name, method):
    fn, p0, args = CLASSIC[name]()
    if method == "gauss_newton" and name == "rosenbrock":
        p0 = jnp.array([-1.2, 1.0])  # plain GN converges here too (in 3 steps)
    run = jax.jit(lambda p, *a: least_squares(fn, p, *a, solver=METHODS[method], iterations=100))
    res = run(p0, *args)
    x_ref, cost_ref = _scipy_fit(fn, p0, *args)
    # norm-wise relative error: elementwise is meaningless for entries near 0 of an
    # ill-conditioned problem (scipy's own answer has ‖g‖ ~ 1e-9 there)
    assert_relative(_flat(res.params), x_ref, 1e-6)
    np.testing.assert_allclose(float(res.cost), cost_ref, rtol=1e-6, atol=1e-14)
    assert np.all(np.diff(np.asarray(res.cost_history)) <= 1e-12 * cost_ref + 1e-20) or \
        method == "gauss_newton"


def test_powell_singular_reaches_zero_like_scipy(x64):
    """The Jacobian is singular at the solution (0, 0, 0, 0); convergence is only linear, so
    compare with an absolute tolerance: both end within 1e-6 of the solution and of each other."""
    p0 = jnp.array([3.0, -1.0, 0.0, 1.0])
    res = least_squares(powell_singular, p0, iterations=100)
    x_ref, cost_ref = _scipy_fit(powell_singular, p0)
    x = np.asarray(res.params)
    np.testing.assert_allclose(x, x_ref, atol=1e-6)
    assert np.max(np.abs(x)) < 1e-6 and float(res.cost) < 1e-20 and cost_ref < 1e-20


def test_conjugate_gradient_matches_dense(x64):
    fn, p0, args = CLASSIC["bundle"]()  # n = 42 (exact diagonal) ...
    dense = least_squares(fn, p0, *args, iterations=40)
    cg = least_squares(fn, p0, *args, iterations=40, solver=LevenbergMarquardt(
        linear_solver=ConjugateGradient(max_iterations=200)))
    assert_relative(_flat(cg.params), _flat(dense.params), 1e-8)
    # ... and with the randomised diagonal estimate (only changes the damping path)
    cg_est = least_squares(fn, p0, *args, iterations=60, solver=LevenbergMarquardt(
        linear_solver=ConjugateGradient(max_iterations=200, exact_diagonal_limit=0)))
    assert_relative(_flat(cg_est.params), _flat(dense.params), 1e-8)


# ------------------------------------------------------------------------------------------
# A user-supplied structured solver: Schur complement on the bundle problem


@dataclasses.dataclass(frozen=True)
class BundleSchur:
    """Eliminates the points (3x3 blocks) and solves the reduced camera system densely.
    Uses only jvps of the residual per block (never the full J), exercising the protocol:
    ``linearise`` keeps the blocks of JᵀJ, ``solve`` damps and eliminates."""

    def linearise(self, residual_fn, params, args):
        flat_r = lambda p: jax.flatten_util.ravel_pytree(residual_fn(p, *args))[0]  # noqa: E731
        cams, pts = params["cameras"], params["points"]

        def column(tangent):
            return jax.jvp(flat_r, (params,), (tangent,))[1]

        def basis(name, shape):
            eye = jnp.eye(int(np.prod(shape))).reshape((-1,) + shape)
            zero = jax.tree_util.tree_map(jnp.zeros_like, params)
            return jax.vmap(lambda e: column({**zero, name: e}))(eye).T  # [m, size]

        jc = basis("cameras", cams.shape)  # [m, 6C]
        jp = basis("points", pts.shape).reshape(-1, pts.shape[0], 3)  # [m, P, 3]
        u = jc.T @ jc
        v = jnp.einsum("mpi,mpj->pij", jp, jp)  # block diagonal of the point part
        w = jnp.einsum("mc,mpj->cpj", jc, jp)  # [6C, P, 3]
        return linearise_matrix_free(residual_fn, params, args, operator=(u, v, w))

    def solve(self, linearisation, rhs, damping, damping_mode):
        u, v, w = linearisation.operator
        d_u = jnp.diag(u) if damping_mode == "marquardt" else jnp.ones(u.shape[0])
        d_v = (jnp.diagonal(v, axis1=1, axis2=2) if damping_mode == "marquardt"
               else jnp.ones(v.shape[:2]))
        u = u + damping * jnp.diag(d_u)
        v = v + damping * jax.vmap(jnp.diag)(d_v)
        v_inv = jnp.linalg.inv(v)
        bc, bp = rhs["cameras"].reshape(-1), rhs["points"]
        schur = u - jnp.einsum("cpi,pij,dpj->cd", w, v_inv, w)
        rhs_c = bc - jnp.einsum("cpi,pij,pj->c", w, v_inv, bp)
        dc = jnp.linalg.solve(schur, rhs_c)
        dp = jnp.einsum("pij,pj->pi", v_inv, bp - jnp.einsum("cpi,c->pi", w, dc))
        ok = jnp.all(jnp.isfinite(dc)) & jnp.all(jnp.isfinite(dp))
        return {"cameras": dc.reshape(rhs["cameras"].shape), "points": dp}, ok


def test_structured_solver_protocol(x64):
    fn, p0, args = CLASSIC["bundle"]()
    dense = least_squares(fn, p0, *args, iterations=30)
    schur = jax.jit(lambda p, *a: least_squares(fn, p, *a, iterations=30, solver=LevenbergMarquardt(
        linear_solver=BundleSchur())))(p0, *args)
    assert_relative(_flat(schur.params), _flat(dense.params), 1e-8)
    # the structured solver also serves the Gauss-Newton implicit gradient
    grad = lambda solver: jax.jit(jax.grad(lambda o: jnp.sum(least_squares(  # noqa: E731
        fn, p0, o, args[1], iterations=30, solver=LevenbergMarquardt(linear_solver=solver),
        differentiation=ImplicitGaussNewton()).params["points"])))(args[0])
    np.testing.assert_allclose(grad(BundleSchur()), grad(DenseCholesky()), rtol=1e-6, atol=1e-9)


class _WrongShapeSolver:
    def linearise(self, residual_fn, params, args):
        return linearise_matrix_free(residual_fn, params, args)

    def solve(self, linearisation, rhs, damping, damping_mode):
        return {"a": rhs["a"][:1], "b": rhs["b"]}, jnp.bool_(True)


def test_structured_solver_with_wrong_step_shape_is_named():
    with pytest.raises(ValueError, match=r"\['a'\].*shape"):
        least_squares(lambda p: jnp.concatenate([p["a"], p["b"]]),
                      {"a": jnp.ones(2), "b": jnp.ones(1)},
                      solver=LevenbergMarquardt(linear_solver=_WrongShapeSolver()))


def test_linear_solver_without_the_protocol_is_refused_at_construction():
    def old_style(residual_fn, params, args, rhs, damping, damping_mode):  # the former callable protocol
        return rhs, jnp.bool_(True)

    for method in (GaussNewton, LevenbergMarquardt):
        with pytest.raises(ValueError, match=r"linear_solver must implement the LinearSolver protocol"):
            method(linear_solver=old_style)


# ------------------------------------------------------------------------------------------
# Batching and isolation


def _decay_batch(n):
    ys = np.stack([decay_data(seed=s, a=1 + s % 3, b=0.5 + 0.2 * (s % 4)) for s in range(n)])
    p0 = {k: jnp.full((n,), v) for k, v in DECAY_P0.items()}
    return p0, jnp.asarray(ys, jnp.float32)


@pytest.mark.parametrize("method", ["levenberg_marquardt", "gauss_newton"])
def test_batched_equals_looped(x64, method):
    """Unconverged after 3 iterations (far from the precision floor, where accept/reject is
    decided by rounding), so every number, damping included, is compared."""
    p0, ys = _decay_batch(6)
    ys = ys.astype(jnp.float64)
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    solve = lambda p, y: least_squares(decay_residual, p, y, solver=METHODS[method],  # noqa: E731
                                       iterations=3)
    batched = jax.jit(jax.vmap(solve))(p0, ys)
    if method == "levenberg_marquardt":  # still far from the floor in the last iteration
        assert np.all(np.asarray(batched.gradient_norm) > 1e-7)
    single = jax.jit(solve)
    for i in range(ys.shape[0]):
        one = single(jax.tree_util.tree_map(lambda a: a[i], p0), ys[i])
        row = jax.tree_util.tree_map(lambda a: a[i], batched)
        for field in ("params", "cost", "cost_history", "iterations", "status", "damping"):
            np.testing.assert_allclose(_flat(getattr(row, field)), _flat(getattr(one, field)),
                                       rtol=1e-8, atol=1e-12, err_msg=field)


@pytest.mark.parametrize("method", ["levenberg_marquardt", "gauss_newton"])
def test_nan_in_one_problem_changes_no_other(method):
    p0, ys = _decay_batch(5)
    solve = jax.jit(jax.vmap(lambda p, y: least_squares(decay_residual, p, y, solver=METHODS[method],
                                                        iterations=20)))
    clean = solve(p0, ys)
    poisoned = solve(p0, ys.at[2, 7].set(jnp.nan).at[4, 0].set(jnp.inf))
    others = np.array([0, 1, 3])
    for a, b in zip(jax.tree_util.tree_leaves(clean), jax.tree_util.tree_leaves(poisoned)):
        np.testing.assert_array_equal(np.asarray(a)[others], np.asarray(b)[others])
    assert [Status.of(s).name for s in np.asarray(poisoned.status)[[2, 4]]] == ["NON_FINITE"] * 2
    assert np.all(np.asarray(poisoned.iterations)[[2, 4]] == 0)
    np.testing.assert_array_equal(np.asarray(poisoned.params["a"])[[2, 4]], 1.0)


def test_nan_mid_solve_keeps_last_finite_params():
    """Gauss-Newton overshoots into the domain where sqrt is NaN: stop with NON_FINITE and the
    last finite parameters; LM rejects those trial points and converges."""
    def fn(p):
        return jnp.stack([jnp.sqrt(p[0]) - 0.1, 0.1 * p[0]])

    gn = least_squares(fn, jnp.array([4.0]), solver=GaussNewton(), iterations=20)
    assert Status.of(gn.status) == Status.NON_FINITE and np.isfinite(gn.params).all()
    assert 0 < int(gn.iterations) < 20 and np.isfinite(gn.cost)
    lm = least_squares(fn, jnp.array([4.0]), iterations=60)
    assert np.isfinite(lm.params).all() and float(lm.cost) < float(lm.initial_cost)


def test_statuses():
    # singular: a parameter the residual ignores makes JᵀJ singular for Gauss-Newton ...
    singular = least_squares(lambda p: p[:1] - 1.0, jnp.zeros(2), solver=GaussNewton())
    assert int(singular.status) == Status.SINGULAR and int(singular.iterations) == 1
    # ... while Marquardt damping with a clamped diagonal still solves it
    lm = least_squares(lambda p: p[:1] - 1.0, jnp.zeros(2), iterations=30,
                       tolerances=Tolerances(gtol=1e-6))
    assert Status.of(lm.status) == Status.OK
    np.testing.assert_allclose(lm.params, [1.0, 0.0], atol=1e-5)
    # tolerances freeze a problem: its history stays constant afterwards
    y = jnp.asarray(decay_data(), jnp.float32)
    tol = least_squares(decay_residual, DECAY_P0, y, iterations=50, tolerances=Tolerances(ftol=1e-6))
    n = int(tol.iterations)
    assert Status.of(tol.status) == Status.OK and n < 50
    assert np.all(np.asarray(tol.cost_history)[n - 1:] == float(tol.cost))
    # and without tolerances all iterations run
    fixed = least_squares(decay_residual, DECAY_P0, jnp.asarray(decay_data() + 5.0), iterations=3)
    assert Status.of(fixed.status).name == "MAX_ITERATIONS" and int(fixed.iterations) == 3
    with pytest.raises(ValueError, match="unknown"):
        Status.of(99)


# ------------------------------------------------------------------------------------------
# Differentiation


def _fd_gradient(f, y, eps=1e-4):
    y = np.asarray(y)
    out = np.zeros_like(y)
    for i in range(y.size):
        e = np.zeros_like(y)
        e.flat[i] = eps
        out.flat[i] = (f(jnp.asarray(y + e)) - f(jnp.asarray(y - e))) / (2 * eps)
    return out


@pytest.mark.parametrize("mode", ["exact", "gauss_newton", "unrolled"])
def test_gradients_match_finite_differences(x64, mode):
    """Nonzero-residual decay fit: the exact implicit Hessian and the unrolled solve match
    central differences; the Gauss-Newton approximation matches to the size of its neglected
    second-order residual term (small here: the noise is small)."""
    y = jnp.asarray(decay_data())
    w = jnp.array([0.3, -1.0, 2.0])
    kw = {"differentiation": {"exact": ImplicitExact(), "gauss_newton": ImplicitGaussNewton(),
                              "unrolled": Unrolled()}[mode]}

    def objective(y_, **k):
        p = least_squares(decay_residual, DECAY_P0, y_, iterations=60, **k).params
        return w[0] * p["a"] + w[1] * p["b"] + w[2] * p["c"]

    grad = jax.jit(jax.grad(lambda y_: objective(y_, **kw)))(y)
    fd = _fd_gradient(jax.jit(objective), y)
    rtol = 2e-2 if mode == "gauss_newton" else 1e-5
    np.testing.assert_allclose(grad, fd, rtol=rtol, atol=rtol * np.max(np.abs(fd)))


def test_implicit_gradient_batched_and_params0_gets_zero():
    p0, ys = _decay_batch(3)

    def loss(p0, ys):
        res = jax.vmap(lambda p, y: least_squares(decay_residual, p, y, iterations=30))(p0, ys)
        return jnp.sum(res.params["b"])

    g_p0, g_y = jax.jit(jax.grad(loss, argnums=(0, 1)))(p0, ys)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(g_p0))
    # each problem's gradient only depends on its own data: compare with singles
    single = jax.jit(jax.grad(lambda p, y: least_squares(decay_residual, p, y,
                                                         iterations=30).params["b"], argnums=1))
    for i in range(3):
        gi = single(jax.tree_util.tree_map(lambda a: a[i], p0), ys[i])
        np.testing.assert_allclose(g_y[i], gi, rtol=1e-4, atol=1e-5)


def test_implicit_gradient_with_integer_args():
    def fn(p, y, k):
        return p * k.astype(p.dtype) - y

    g = jax.grad(lambda y: jnp.sum(least_squares(fn, jnp.zeros(3), y, jnp.int32(2),
                                                 iterations=10).params))(jnp.ones(3))
    np.testing.assert_allclose(g, 0.5 * np.ones(3), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Compilation and validation


def test_second_call_does_not_recompile():
    traces = []

    def fn(p, y):
        traces.append(1)  # runs only while tracing
        return decay_residual(p, y)

    solve = jax.jit(jax.vmap(lambda p, y: least_squares(fn, p, y, iterations=5)))
    p0, ys = _decay_batch(4)
    solve(p0, ys)
    n_traces = len(traces)
    solve(jax.tree_util.tree_map(lambda a: a + 0.1, p0), ys * 1.5).cost.block_until_ready()
    assert solve._cache_size() == 1 and len(traces) == n_traces
    # config objects compare by value: an equal one, built anew, as a static argument hits the cache
    solve_with = jax.jit(lambda p, y, solver: jax.vmap(lambda q, z: least_squares(
        fn, q, z, iterations=5, solver=solver))(p, y), static_argnames="solver")
    make = lambda: LevenbergMarquardt(damping=FactorDamping(0.3, 10.0, 0.1),  # noqa: E731
                                      linear_solver=DenseCholesky())
    solve_with(p0, ys, solver=make())
    solve_with(p0, ys * 1.5, solver=make()).cost.block_until_ready()
    assert solve_with._cache_size() == 1
    assert hash(make()) == hash(make()) and make() != LevenbergMarquardt()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"params0 leaf \['n'\].*int32"):
        least_squares(lambda p: p["x"], {"x": jnp.ones(2), "n": jnp.int32(3)})
    with pytest.raises(ValueError, match="residual_fn failed on params0.*shapes"):
        least_squares(lambda p, y: p - y, jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match=r"residual leaf \['r'\].*int32"):
        least_squares(lambda p: {"r": jnp.round(p).astype(jnp.int32)}, jnp.ones(2))
    with pytest.raises(ValueError, match="mix dtypes"):
        least_squares(lambda p: p["a"], {"a": jnp.ones(2), "b": jnp.ones(2, jnp.float16)})
    with pytest.raises(ValueError, match="solver must be GaussNewton.*or LevenbergMarquardt.*'newton'"):
        least_squares(lambda p: p, jnp.ones(2), solver="newton")
    with pytest.raises(ValueError, match="iterations must be a positive Python int"):
        least_squares(lambda p: p, jnp.ones(2), iterations=0)
    with pytest.raises(ValueError, match="differentiation must be ImplicitExact.*'implicit'"):
        least_squares(lambda p: p, jnp.ones(2), differentiation="implicit")
    with pytest.raises(ValueError, match="tolerances must be a Tolerances"):
        least_squares(lambda p: p, jnp.ones(2), tolerances=1e-6)


def test_bad_configs_raise_at_construction():
    with pytest.raises(ValueError, match="damping_mode must be one of.*'levenberg'"):
        LevenbergMarquardt(damping_mode="levenberg")
    with pytest.raises(ValueError, match=r"LevenbergMarquardt.initial_damping must be >= 0"):
        LevenbergMarquardt(initial_damping=-1.0)
    with pytest.raises(ValueError, match=r"LevenbergMarquardt.max_damping must be > 0"):
        LevenbergMarquardt(max_damping=0.0)
    with pytest.raises(ValueError, match="LevenbergMarquardt.damping must be NielsenDamping"):
        LevenbergMarquardt(damping=lambda lam, nu, accept, ratio: (lam, nu))  # the former callable
    with pytest.raises(ValueError, match=r"Tolerances.ftol must be >= 0"):
        Tolerances(ftol=-1e-6)
    with pytest.raises(ValueError, match=r"FactorDamping.increase must be > 1"):
        FactorDamping(increase=0.5)
    with pytest.raises(ValueError, match="ConjugateGradient.max_iterations"):
        ConjugateGradient(max_iterations=0)
    with pytest.raises(ValueError, match="ImplicitExact.dense_limit"):
        ImplicitExact(dense_limit=-1)
    # a traced damping (carried over from an earlier solve) is accepted unchecked
    jax.jit(lambda lam: least_squares(lambda p: p - 1.0, jnp.zeros(2), iterations=2,
                                      solver=LevenbergMarquardt(initial_damping=lam)).cost)(0.5)


def test_batched_least_squares_chunks_equal_vmap(x64):
    """float64 and unconverged (3 iterations) like test_batched_equals_looped: at float32's
    precision floor a step's accept/reject is decided by rounding, which differs between a
    chunk of 2 and the remainder chunk of 1."""
    p0, ys = _decay_batch(5)
    ys = ys.astype(jnp.float64)
    p0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p0)
    kw = dict(iterations=3)
    chunked = jax.jit(lambda p, y: batched_least_squares(decay_residual, p, y, chunk_size=2,
                                                         **kw))(p0, ys)
    plain = jax.jit(jax.vmap(lambda p, y: least_squares(decay_residual, p, y, **kw)))(p0, ys)
    for a, b in zip(jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="leading batch axis"):
        batched_least_squares(decay_residual, p0, ys[:3])


# ------------------------------------------------------------------------------------------
# refresh: auxiliary inputs updated every iteration (ICP correspondences), damping schedules


def _rigid_2d(p, pts):
    c, s = jnp.cos(p[0]), jnp.sin(p[0])
    return pts @ jnp.array([[c, s], [-s, c]]) + p[1:]


def _icp_residual(p, source, target, match):
    return _rigid_2d(p, source) - target[match]


def _nearest(p, source, target, match):
    d = jnp.sum((_rigid_2d(p, source)[:, None] - target[None]) ** 2, -1)
    return source, target, jnp.argmin(d, axis=1).astype(match.dtype)


def test_refresh_runs_icp_with_correspondences_repicked_each_iteration():
    """Point-to-point ICP: the correspondences are args that ``refresh`` re-picks from the
    current pose. With the initial (wrong, nearest-at-start) matches kept fixed the solve stops
    at their least-squares pose; with refresh it recovers the true rotation and translation."""
    rng = np.random.default_rng(3)
    target = jnp.asarray(rng.uniform(-1, 1, (40, 2)), jnp.float32)
    truth = jnp.array([0.15, 0.08, -0.05])
    inv = lambda q: jnp.array([-q[0], *(-(q[1:] @ jnp.array([[jnp.cos(q[0]), -jnp.sin(q[0])],  # noqa: E731
                                                                [jnp.sin(q[0]), jnp.cos(q[0])]])))])
    source = _rigid_2d(inv(truth), target)  # target = rigid(truth) of source, matches shuffled below
    p0 = jnp.zeros(3)
    args = _nearest(p0, source, target, jnp.zeros(40, jnp.int32))
    fixed = least_squares(_icp_residual, p0, *args, iterations=30)
    icp = least_squares(_icp_residual, p0, *args, iterations=30, refresh=_nearest)
    np.testing.assert_allclose(icp.params, truth, atol=1e-4)
    assert float(icp.cost) < 1e-8
    assert np.abs(np.asarray(fixed.params) - np.asarray(truth)).max() > 1e-2
    np.testing.assert_array_equal(icp.args[2], np.arange(40))  # final correspondences returned
    assert np.all(np.asarray(icp.cost_history) <= np.asarray(icp.linearization_cost_history) + 1e-7)


def test_refresh_is_batched_and_rejects_implicit_differentiation():
    rng = np.random.default_rng(4)
    target = jnp.asarray(rng.uniform(-1, 1, (3, 30, 2)), jnp.float32)
    source = target - jnp.array([0.1, -0.05])
    args = (source, target, jnp.zeros((3, 30), jnp.int32))
    solve = jax.jit(jax.vmap(lambda s, t, m: least_squares(_icp_residual, jnp.zeros(3), s, t, m, iterations=10,
                                                           refresh=_nearest)))
    out = solve(*args)
    one = least_squares(_icp_residual, jnp.zeros(3), source[1], target[1], args[2][1], iterations=10,
                        refresh=_nearest)
    np.testing.assert_allclose(out.params[1], one.params, atol=1e-6)
    np.testing.assert_allclose(out.params[:, 1:], np.tile([0.1, -0.05], (3, 1)), atol=1e-5)
    for implicit in (ImplicitExact(), ImplicitGaussNewton()):
        with pytest.raises(ValueError, match=r"refresh needs differentiation=Unrolled\(\)"):
            least_squares(_icp_residual, jnp.zeros(3), source[0], target[0], args[2][0],
                          refresh=_nearest, differentiation=implicit)
    with pytest.raises(ValueError, match="refresh must return args"):
        least_squares(_icp_residual, jnp.zeros(3), source[0], target[0], args[2][0],
                      refresh=lambda p, s, t, m: (s, t))


def test_factor_damping_schedule():
    upd = FactorDamping(decrease=0.3, increase=10.0, restart=0.1)
    lam, _ = upd.update(jnp.asarray(0.0), 2.0, jnp.asarray(False), 0.0)
    assert float(lam) == pytest.approx(0.1)  # restart from an undamped start
    lam, _ = upd.update(jnp.asarray(0.5), 2.0, jnp.asarray(False), 0.0)
    assert float(lam) == pytest.approx(5.0)
    lam, _ = upd.update(jnp.asarray(0.5), 2.0, jnp.asarray(True), 0.9)
    assert float(lam) == pytest.approx(0.15)
    # acceptance is the schedule's: any decrease here, a gain-ratio test for Nielsen's
    assert bool(upd.accepts(jnp.asarray(1e-9), jnp.asarray(1e-6)))
    assert not bool(NielsenDamping().accepts(jnp.asarray(1e-9), jnp.asarray(1e-6)))
    assert bool(NielsenDamping().accepts(jnp.asarray(1e-9), jnp.asarray(0.5)))
    assert not bool(upd.accepts(jnp.asarray(-1e-9), jnp.asarray(0.5)))
    # starting undamped, LM with this schedule takes exactly the Gauss-Newton steps while they
    # lower the cost (they all do on this mildly nonlinear fit)
    t = jnp.linspace(0.0, 2.0, 12)

    def expfit(p):
        return p[0] * jnp.exp(p[1] * t) - 2.0 * jnp.exp(-0.5 * t)

    res_lm = least_squares(expfit, jnp.array([1.5, -0.3]), iterations=3,
                           solver=LevenbergMarquardt(damping=upd, initial_damping=0.0))
    res_gn = least_squares(expfit, jnp.array([1.5, -0.3]), iterations=3, solver=GaussNewton())
    assert np.all(np.diff(np.asarray(res_gn.cost_history)) < 0)
    np.testing.assert_array_equal(res_lm.params, res_gn.params)
    assert float(res_lm.damping) == 0.0
