"""eos-py as a benchmark peer, driven with OUR head model on the same landmarks.

    python -m avatar_jax.evaluate.eos_peer [--images 8] [--iterations 5] [--noise 0]

Converts a :class:`~avatar_jax.model.HeadModel` into an ``eos.morphablemodel.MorphableModel``
(identity PCA + expression blendshapes) plus the landmark mapper, contour definitions and edge
topology eos needs, and runs ``eos.fitting.fit_shape_and_pose`` (contour fitting on) on iBUG-68
landmarks, so that both fitters fit the same model to the same points.

Conversion (exact):

* mean = ``model.neutral`` (mm; eos is unit-agnostic), triangles = ``model.triangles``.
* identity: our model is ``X = neutral + B c`` with ``B[:, k] = identity_basis[k] * sigma_k``
  (``[3V, Ki]``, xyzxyz... order) and prior ``c ~ N(0, I)``. eos's ``PcaModel`` wants an
  orthonormal basis ``U`` and eigenvalues ``lam`` and draws ``X = mean + U sqrt(lam) z`` with
  prior ``z ~ N(0, I)`` (its linear shape fit minimises ``|residual_px|^2 / 3 + lambda |z|^2``,
  i.e. a detector sd of sqrt(3) px; checked against ``fit_shape_to_landmarks_linear``). With
  the thin SVD ``B = U S W^T`` (via the eigenvectors ``W`` of ``B^T B``) we pass ``U`` and
  ``lam = S^2``; then ``z = W^T c``. ``W`` is orthogonal (``B`` has full column rank; checked),
  so the two priors are the same Gaussian and ``|z| = |c|``: eos's regulariser on ``z`` is
  exactly ours on ``c``. Back to our coefficients: ``identity = sigma * (W z)`` (returned as
  ``identity``).
* expression: one ``eos.morphablemodel.Blendshape(name, expression_basis[j])`` per ARKit shape;
  eos's blendshape coefficients are our expression weights ``beta`` directly.

Approximations (documented, deliberate):

* eos maps landmarks to VERTICES, not barycentric surface points: each landmark uses the vertex
  of its embedding triangle with the largest barycentric weight (``landmark_vertex_ids``). Exact
  for the committed low-poly model (its landmark barycentrics are one-hot; ``mapper_offset_mm``
  reports the offset for any model, and ``main`` prints it).
* Landmarks 1-8 / 10-17 (jaw, eos's 1-based iBUG names) are not in the mapper: eos matches them
  itself, the camera-facing side against ``ModelContour`` (2D nearest neighbour among the
  model-contour vertices) and the away-facing side against occluding mesh edges (from the edge
  topology). ``ModelContour`` per side = all ``model.contour_candidates`` of that side's jaw
  landmarks (rows 0-7 right, 9-16 left; +X is the subject's left), de-duplicated. The chin (9)
  is a fixed mapped vertex, as in eos's ``ibug_to_sfm.txt``.
* eos's camera is scaled orthographic (affine); our fitter and the synthetic data use a pinhole
  camera, so eos carries a perspective residual that grows as the head gets closer.
* Priors: eos defaults ``lambda_identity = 30`` on ``z`` (i.e. on our ``c``), landmark
  residuals weighted by 1/3 (eos's default detector sd sqrt(3) px), and the blendshapes are fit
  by non-negative least squares without our ``expression_sigma`` prior (``lambda_expressions``
  is passed through but only used by eos for PCA expression models).
* Edge topology: eos stores at most two faces per edge; for a non-manifold edge the first two
  faces (in triangle order) are kept.

``landmarks2d`` are the 68 model landmarks of the fitted mesh reprojected with eos's own
``modelview``/``projection`` and OpenCV viewport (``glm::project``, top-left origin): the 51
inner points at their barycentric embedding (not the mapper's vertex), and each jaw point at the
contour candidate on the silhouette under eos's pose (smallest ``|n_z|`` in camera space, n the
fitted mesh's normal; the orthographic view direction is -z). That is the rule the synthetic
ground truth and our fitter use, so the reprojection errors are comparable.

Reproducibility: the conversion is bit-identical from run to run, but eos's fit itself is not
quite (same inputs, separate processes: reprojection of one head 6.965 vs 6.972 px), presumably
alignment-dependent Eigen reductions whose float32 rounding the discrete contour matching
amplifies; means over 16 images agreed to 0.01 px in three runs.

eos-py 1.5.0 is single-threaded: its extension imports no pthread_create/OpenMP symbols
(Eigen without OpenMP). ``time_s`` is the wall time of the ``fit_shape_and_pose`` call alone,
``cpu_s`` its thread CPU time.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import eos  # the `bench` extra: importing this module without it raises ImportError

from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.model.head import JAW_LANDMARKS, HeadModel

NUM_LANDMARKS = 68
# eos's 1-based iBUG names of the jaw landmarks (eos share/ibug_to_sfm.txt [contour_landmarks]).
RIGHT_CONTOUR_IDS = tuple(range(1, 9))
LEFT_CONTOUR_IDS = tuple(range(10, 18))
EOS_LAMBDA_IDENTITY = 30.0  # eos-py 1.5.0 fit_shape_and_pose default
EOS_LAMBDA_EXPRESSIONS = 30.0  # idem (unused by eos for blendshapes)


@dataclasses.dataclass(frozen=True)
class EosBundle:
    """Everything ``fit_shape_and_pose`` needs for one head model (host objects, not a pytree).

    Attributes:
      morphable_model: eos MorphableModel (identity PCA + blendshapes, no colour model).
      landmark_mapper: iBUG name ("1".."68", non-jaw + chin) -> vertex id.
      contour_landmarks: eos ContourLandmarks (right "1".."8", left "10".."17").
      model_contour: eos ModelContour (right/left candidate vertex ids).
      edge_topology: eos EdgeTopology of ``model.triangles``.
      coeff_rotation: ``[Ki, Ki]`` W with our ``c = W z`` (z: eos shape coefficients).
      identity_sigma: ``[Ki]``; our identity ``alpha = sigma * c``.
      landmark_faces, landmark_bary: ``[68, 3]`` our landmark embedding (for reprojection).
      contour_candidates: ``[17, C]`` jaw candidate vertex ids (for the silhouette jaw points).
      triangles: ``[F, 3]`` int.
    """

    morphable_model: eos.morphablemodel.MorphableModel
    landmark_mapper: eos.core.LandmarkMapper
    contour_landmarks: eos.fitting.ContourLandmarks
    model_contour: eos.fitting.ModelContour
    edge_topology: eos.morphablemodel.EdgeTopology
    coeff_rotation: np.ndarray
    identity_sigma: np.ndarray
    landmark_faces: np.ndarray
    landmark_bary: np.ndarray
    contour_candidates: np.ndarray
    triangles: np.ndarray


# ----------------------------------------------------------------------------- conversion


def orthonormal_identity(model: HeadModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U [3V, Ki], eigenvalues [Ki], W [Ki, Ki])`` with ``B = U diag(sqrt(eig)) W^T``.

    ``B[:, k] = identity_basis[k].ravel() * identity_sigma[k]``. Computed from the eigen-
    decomposition of the small Gram matrix ``B^T B = W diag(eig) W^T`` (float64), with einsum
    instead of threaded BLAS and a fixed sign per column, so the result is bit-identical from run
    to run: eos's discrete contour matching amplifies float32 rounding differences in the basis
    into visibly different fits. Raises ValueError when ``B`` is rank deficient (then no N(0, I)
    prior on eos's side matches ours).
    """
    basis = np.asarray(model.identity_basis, np.float64)
    sigma = np.asarray(model.identity_sigma, np.float64)
    b = (basis * sigma[:, None, None]).reshape(basis.shape[0], -1).T
    eig, w = np.linalg.eigh(np.einsum("ik,il->kl", b, b, optimize=False))
    eig, w = eig[::-1], w[:, ::-1]  # descending, like a PCA
    if eig[-1] <= 1e-10 * eig[0]:
        raise ValueError(f"identity_basis is rank deficient (eigenvalues {eig[0]:.3g}..{eig[-1]:.3g})")
    w = w * np.where(w[np.argmax(np.abs(w), axis=0), np.arange(w.shape[1])] < 0, -1.0, 1.0)
    u = np.einsum("ik,kl->il", b, w, optimize=False) / np.sqrt(eig)
    return u, eig, w


def to_eos_model(model: HeadModel) -> eos.morphablemodel.MorphableModel:
    """Our head model as an eos MorphableModel: mean = neutral, identity PCA, blendshapes.

    See the module docstring for the exact identity mapping. No colour model, no texture.
    """
    u, eig, _ = orthonormal_identity(model)
    return _eos_model(model, u, eig)


def _eos_model(model: HeadModel, u: np.ndarray, eig: np.ndarray) -> eos.morphablemodel.MorphableModel:
    mean = np.asarray(model.neutral, np.float32).reshape(-1)
    triangles = np.asarray(model.triangles).astype(int).tolist()
    shape = eos.morphablemodel.PcaModel(mean, u.astype(np.float32), eig.astype(np.float32), triangles)
    names = model.expression_names or tuple(f"expr{j}" for j in range(model.num_expression))
    if len(names) != model.num_expression:
        raise ValueError(f"expression_names has {len(names)} names for {model.num_expression} shapes")
    expr = np.asarray(model.expression_basis, np.float32).reshape(model.num_expression, -1)
    blendshapes = [eos.morphablemodel.Blendshape(str(n), d) for n, d in zip(names, expr)]
    return eos.morphablemodel.MorphableModel(shape, blendshapes, eos.morphablemodel.PcaModel())


def landmark_vertex_ids(model: HeadModel) -> np.ndarray:
    """``[68]`` vertex id per landmark: the embedding triangle's corner with the largest weight."""
    faces = np.asarray(model.landmark_faces)
    bary = np.asarray(model.landmark_bary)
    return faces[np.arange(faces.shape[0]), np.argmax(bary, axis=1)]


def mapper_offset_mm(model: HeadModel) -> np.ndarray:
    """``[68]`` distance (mm, neutral mesh) between each landmark and its mapper vertex."""
    pts = np.einsum("lk,lkd->ld", np.asarray(model.landmark_bary),
                    np.asarray(model.neutral)[np.asarray(model.landmark_faces)])
    return np.linalg.norm(np.asarray(model.neutral)[landmark_vertex_ids(model)] - pts, axis=1)


def edge_topology(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """eos edge topology of ``triangles [F, 3]``: ``(adjacent_faces [E, 2], adjacent_vertices [E, 2])``.

    1-based ids as in eos's share/*_edge_topology.json; a boundary edge has face 0 first.
    """
    tri = np.asarray(triangles, np.int64)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    face_of = np.tile(np.arange(tri.shape[0]), 3)
    uniq, inverse = np.unique(edges, axis=0, return_inverse=True)
    order = np.lexsort((face_of, inverse))  # group by edge, faces ascending
    inv_sorted, faces_sorted = inverse[order], face_of[order] + 1
    first = np.searchsorted(inv_sorted, np.arange(len(uniq)))
    count = np.bincount(inverse, minlength=len(uniq))
    second = np.where(count >= 2, faces_sorted[np.minimum(first + 1, len(order) - 1)], 0)
    adjacent_faces = np.where(count[:, None] >= 2,
                              np.stack([faces_sorted[first], second], 1),
                              np.stack([np.zeros_like(second), faces_sorted[first]], 1))
    return adjacent_faces, uniq + 1


def _contour_vertices(candidates: np.ndarray, rows) -> list[int]:
    """Candidate vertex ids of the given jaw rows, de-duplicated in first-seen order."""
    ids = candidates[list(rows)].reshape(-1)
    _, first = np.unique(ids, return_index=True)
    return [int(v) for v in ids[np.sort(first)]]


def write_mapper_toml(path: Path, vertex_ids: np.ndarray) -> None:
    """eos landmark-mapper TOML (like eos share/ibug_to_sfm.txt): non-jaw + chin -> vertex id."""
    jaw = set(RIGHT_CONTOUR_IDS + LEFT_CONTOUR_IDS)
    lines = ["# iBUG-68 (1-based) -> avatar-jax head model vertex ids (0-based), written by eos_peer.py",
             "[landmark_mappings]"]
    lines += [f"{i} = {int(vertex_ids[i - 1])}" for i in range(1, NUM_LANDMARKS + 1) if i not in jaw]
    lines += ["", "[contour_landmarks]",
              f"right = [ {', '.join(map(str, RIGHT_CONTOUR_IDS))} ]",
              f"left = [ {', '.join(map(str, LEFT_CONTOUR_IDS))} ]", ""]
    path.write_text("\n".join(lines))


def write_model_contour_json(path: Path, candidates: np.ndarray) -> None:
    """eos ModelContour JSON (like eos share/sfm_model_contours.json)."""
    right = _contour_vertices(candidates, [i - 1 for i in RIGHT_CONTOUR_IDS])
    left = _contour_vertices(candidates, [i - 1 for i in LEFT_CONTOUR_IDS])
    path.write_text(json.dumps({"model_contour": {"right_contour": right, "left_contour": left}}, indent=1))


def make_bundle(model: HeadModel, out_dir: str | Path | None = None) -> EosBundle:
    """Convert ``model`` and write/load its eos landmark mapper and model contour.

    The TOML/JSON files go to ``out_dir`` (kept) or to a temporary folder (deleted after loading).
    """
    if model.landmark_faces.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"landmark_faces must be [68, 3], got {tuple(model.landmark_faces.shape)}")
    candidates = np.asarray(model.contour_candidates)
    if candidates.ndim != 2 or candidates.shape[0] < len(JAW_LANDMARKS):
        raise ValueError(f"contour_candidates must be [17, C], got {candidates.shape}")
    with tempfile.TemporaryDirectory(prefix="eos_peer_") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        mapper_path, contour_path = folder / "ibug_to_head.txt", folder / "head_model_contours.json"
        write_mapper_toml(mapper_path, landmark_vertex_ids(model))
        write_model_contour_json(contour_path, candidates)
        mapper = eos.core.LandmarkMapper(str(mapper_path))
        contour_landmarks = eos.fitting.ContourLandmarks.load(str(mapper_path))
        model_contour = eos.fitting.ModelContour.load(str(contour_path))
    triangles = np.asarray(model.triangles).astype(np.int64)
    faces, verts = edge_topology(triangles)
    u, eig, w = orthonormal_identity(model)
    return EosBundle(
        morphable_model=_eos_model(model, u, eig), landmark_mapper=mapper,
        contour_landmarks=contour_landmarks, model_contour=model_contour,
        edge_topology=eos.morphablemodel.EdgeTopology(faces.tolist(), verts.tolist()),
        coeff_rotation=w, identity_sigma=np.asarray(model.identity_sigma, np.float64),
        landmark_faces=np.asarray(model.landmark_faces), landmark_bary=np.asarray(model.landmark_bary),
        contour_candidates=candidates[: len(JAW_LANDMARKS)], triangles=triangles)


# ----------------------------------------------------------------------------- fitting


def project_eos(points: np.ndarray, modelview: np.ndarray, projection: np.ndarray,
                image_size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` of model points ``[N, 3]``, as eos/glm::project does with
    the OpenCV viewport ``(0, h, w, -h)`` (origin top-left, y down)."""
    h, w = image_size
    hom = np.concatenate([points, np.ones((points.shape[0], 1))], 1) @ (projection @ modelview).T
    ndc = hom[:, :2] / hom[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) * 0.5 * w, h - (ndc[:, 1] + 1) * 0.5 * h], 1)


def model_landmarks(bundle: EosBundle, verts: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """68 landmark points ``[68, 3]`` of ``verts [V, 3]``: barycentric embedding, jaw on the
    silhouette under camera ``rotation [3, 3]`` for an orthographic view along -z."""
    pts = np.einsum("lk,lkd->ld", bundle.landmark_bary, verts[bundle.landmark_faces])
    cand = bundle.contour_candidates
    facing = np.abs((np.asarray(vertex_normals(verts, bundle.triangles))[cand] @ rotation.T)[..., 2])
    pick = cand[np.arange(cand.shape[0]), np.argmin(facing, axis=1)]
    pts[list(JAW_LANDMARKS)] = verts[pick]
    return pts


def _check_inputs(landmarks68, image_size, iterations) -> tuple[np.ndarray, int, int]:
    lm = np.asarray(landmarks68, np.float32)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks68 must have shape (68, 2), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks68 contains non-finite values")
    if len(image_size) != 2 or min(int(image_size[0]), int(image_size[1])) <= 0:
        raise ValueError(f"image_size must be (h, w) with positive entries, got {image_size!r}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    return lm, int(image_size[0]), int(image_size[1])


def eos_fit(eos_bundle: EosBundle, landmarks68, image_size, iterations: int = 5,
            lambda_identity: float = EOS_LAMBDA_IDENTITY,
            lambda_expressions: float = EOS_LAMBDA_EXPRESSIONS) -> dict:
    """Fit with ``eos.fitting.fit_shape_and_pose`` (all 100/53 coefficients, contour on).

    Args:
      eos_bundle: from :func:`make_bundle`.
      landmarks68: ``[68, 2]`` iBUG-68 pixel coordinates (x right, y down).
      image_size: ``(h, w)``.

    Returns a dict: ``vertices [V, 3]`` (fitted mesh, model space), ``modelview [4, 4]``,
    ``projection [4, 4]``, ``rotation [3, 3]``, ``rendering_parameters`` (eos's object),
    ``yaw_pitch_roll [3]`` (deg, eos's),
    ``shape_coeffs [Ki]`` (eos's z), ``identity [Ki]`` (ours, ``sigma * W z``),
    ``blendshape_coeffs [Ke]`` (= our expression weights), ``landmarks2d [68, 2]``,
    ``reprojection_error`` (mean px over the 68), ``time_s`` (wall time of the eos call alone),
    ``cpu_s`` (CPU time of this thread in that call: eos is single-threaded, so this is its work,
    less inflated than ``time_s`` on a loaded machine).
    """
    if not isinstance(eos_bundle, EosBundle):
        raise TypeError(f"eos_fit needs an EosBundle from make_bundle(model), got {type(eos_bundle).__name__}")
    lm, h, w = _check_inputs(landmarks68, image_size, iterations)
    eos_landmarks = [eos.core.Landmark(str(i + 1), p) for i, p in enumerate(lm)]
    b = eos_bundle
    t0, c0 = time.perf_counter(), time.thread_time()
    mesh, params, shape_coeffs, blend_coeffs = eos.fitting.fit_shape_and_pose(
        b.morphable_model, eos_landmarks, b.landmark_mapper, w, h, b.edge_topology,
        b.contour_landmarks, b.model_contour, num_iterations=int(iterations),
        lambda_identity=float(lambda_identity), lambda_expressions=float(lambda_expressions))
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    verts = np.asarray(mesh.vertices, np.float64)
    modelview = np.asarray(params.get_modelview(), np.float64)
    projection = np.asarray(params.get_projection(), np.float64)
    rotation = modelview[:3, :3]
    pts2d = project_eos(model_landmarks(b, verts, rotation), modelview, projection, (h, w))
    z = np.asarray(shape_coeffs, np.float64)
    return dict(
        vertices=verts, modelview=modelview, projection=projection, rotation=rotation,
        rendering_parameters=params,
        yaw_pitch_roll=np.asarray(params.get_yaw_pitch_roll(), np.float64).reshape(3),
        shape_coeffs=z, identity=b.identity_sigma * (b.coeff_rotation @ z),
        blendshape_coeffs=np.asarray(blend_coeffs, np.float64), landmarks2d=pts2d,
        reprojection_error=float(np.mean(np.linalg.norm(pts2d - lm, axis=1))), time_s=elapsed,
        cpu_s=cpu)


# ----------------------------------------------------------------------------- self-check


def main(argv=None) -> int:
    import argparse

    import jax

    from avatar_jax.fit import synthetic
    from avatar_jax.model import load_head_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--noise", type=float, default=0.0, help="landmark noise in px")
    args = ap.parse_args(argv)

    model = load_head_model()
    t0 = time.perf_counter()
    bundle = make_bundle(model)
    print(f"model V={model.num_vertices} Ki={model.num_identity} Ke={model.num_expression}; "
          f"eos bundle built in {time.perf_counter() - t0:.2f} s; landmark->vertex mapping offset "
          f"max {mapper_offset_mm(model).max():.2f} mm")
    batch = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(0), args.images,
                                             noise_px=args.noise))
    times, cpu, errs = [], [], []
    for i, (lm, size) in enumerate(zip(batch.landmarks, batch.image_sizes)):
        out = eos_fit(bundle, lm, (int(size[0]), int(size[1])), iterations=args.iterations)
        err = np.linalg.norm(out["landmarks2d"] - lm, axis=1)
        id_rms = np.sqrt(np.mean((out["identity"] - batch.identity[i]) ** 2))
        print(f"image {i:3d}: {1e3 * out['time_s']:7.2f} ms  reprojection {err.mean():6.2f} px "
              f"(jaw {err[:17].mean():5.2f}, inner {err[17:].mean():5.2f})  eos yaw "
              f"{out['yaw_pitch_roll'][0]:+6.1f} deg  identity rms err {id_rms:.2f} (prior sd 1)")
        times.append(out["time_s"])
        cpu.append(out["cpu_s"])
        errs.append(err)
    errs = np.stack(errs)
    print(f"eos-py fit_shape_and_pose, {args.iterations} it., contour on: median "
          f"{1e3 * np.median(times):.2f} ms/image wall, {1e3 * np.median(cpu):.2f} ms CPU (single "
          f"thread), mean reprojection "
          f"{errs.mean():.2f} px (jaw {errs[:, :17].mean():.2f}, inner {errs[:, 17:].mean():.2f}) "
          f"over {len(times)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
