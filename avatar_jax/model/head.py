"""The head model as an immutable pytree, and pure functions on it.

Axes and units (inherited from ICT-FaceKit): millimetres, right-handed, +Y up, +Z forward
(out of the face), +X = the subject's left. The origin lies on the mid-sagittal plane near the
centre of the head.

Shape model::

    X = neutral + sum_k alpha_k * identity_basis[k] + sum_j beta_j * expression_basis[j]

with prior ``alpha_k ~ N(0, identity_sigma_k**2)`` and ``beta_j ~ N(0, expression_sigma_j**2)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from avatar_jax.geometry.camera import Camera, silhouette_pick
from avatar_jax.geometry.mesh import vertex_normals

# iBUG-68 indices of the seven alignment points used by the evaluation (ARMSE):
# 4 eye corners, nose tip, 2 mouth corners.
ALIGNMENT_LANDMARKS = (36, 39, 42, 45, 30, 48, 54)
JAW_LANDMARKS = tuple(range(17))


@struct.dataclass
class HeadModel:
    """Low-poly head model. V vertices, F triangles, U uv coordinates.

    Attributes:
      neutral: ``[V, 3]`` float32, mm.
      triangles: ``[F, 3]`` int32, counter-clockwise seen from outside.
      uvs: ``[U, 2]`` float32 in [0, 1] (one tile; v up, OpenGL/OBJ convention).
      triangle_uvs: ``[F, 3]`` int32 index into ``uvs`` per corner (UV seams: U != V).
      identity_basis: ``[Ki, V, 3]`` float32, mm per unit coefficient.
      identity_sigma: ``[Ki]`` prior standard deviation of each identity coefficient.
      expression_basis: ``[Ke, V, 3]`` float32, mm per unit (ARKit-style) weight.
      expression_sigma: ``[Ke]`` prior standard deviation of each expression weight.
      landmark_faces: ``[68, 3]`` int32 vertex ids of the triangle holding each iBUG-68 landmark.
      landmark_bary: ``[68, 3]`` float32 barycentric coordinates in that triangle.
      contour_candidates: ``[17, C]`` int32 vertex ids: for each jaw landmark, candidate surface
        points ordered from the front of the face towards the ear (sliding contour).
      nose_tip: ``[]`` int32 vertex id.
      vertex_weights: ``[V]`` float32 per-vertex loss weight (5 within 95 mm of the nose tip, 1 else).
      face_mask: ``[V]`` bool, vertex of the face region (ICT "Face" geometry).
      lap_rows, lap_cols: ``[nnz]`` int32; lap_vals: ``[nnz]`` float32: the cotangent Laplacian
        L (V x V, rows sum to zero) in COO form; ``(L X)_i = sum_j L_ij X_j``.
      expression_names: static tuple of ``Ke`` ARKit-style names.
    """

    neutral: jax.Array
    triangles: jax.Array
    uvs: jax.Array
    triangle_uvs: jax.Array
    identity_basis: jax.Array
    identity_sigma: jax.Array
    expression_basis: jax.Array
    expression_sigma: jax.Array
    landmark_faces: jax.Array
    landmark_bary: jax.Array
    contour_candidates: jax.Array
    nose_tip: jax.Array
    vertex_weights: jax.Array
    face_mask: jax.Array
    lap_rows: jax.Array
    lap_cols: jax.Array
    lap_vals: jax.Array
    expression_names: tuple[str, ...] = struct.field(pytree_node=False, default=())

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    @property
    def num_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def num_expression(self) -> int:
        return self.expression_basis.shape[0]


def vertices(model: HeadModel, identity: jax.Array | None = None,
             expression: jax.Array | None = None) -> jax.Array:
    """Mesh vertices ``[V, 3]`` for identity ``[Ki]`` and expression ``[Ke]`` coefficients.

    Either may be None (zero). Batch with ``jax.vmap(vertices, (None, 0, 0))``.
    """
    x = model.neutral
    if identity is not None:
        x = x + jnp.einsum("k,kvd->vd", identity, model.identity_basis)
    if expression is not None:
        x = x + jnp.einsum("k,kvd->vd", expression, model.expression_basis)
    return x


def sample_surface(verts: jax.Array, faces: jax.Array, bary: jax.Array) -> jax.Array:
    """Surface points ``[..., 3]`` from vertices ``[V, 3]``, corner ids ``[..., 3]``, bary ``[..., 3]``."""
    return jnp.einsum("...k,...kd->...d", bary, verts[faces])


def landmarks(model: HeadModel, verts: jax.Array) -> jax.Array:
    """iBUG-68 landmark positions ``[68, 3]`` on the mesh ``verts`` ``[V, 3]``."""
    return sample_surface(verts, model.landmark_faces, model.landmark_bary)


def apply_laplacian(model: HeadModel, x: jax.Array) -> jax.Array:
    """Cotangent Laplacian ``L @ x`` for ``x`` of shape ``[V, ...]``."""
    contrib = model.lap_vals.reshape((-1,) + (1,) * (x.ndim - 1)) * x[model.lap_cols]
    return jax.ops.segment_sum(contrib, model.lap_rows, num_segments=x.shape[0])


def laplacian_matrix(model: HeadModel):
    """The cotangent Laplacian as a host-side ``scipy.sparse.csr_matrix`` ``[V, V]`` (float64)."""
    import numpy as np
    import scipy.sparse as sp

    n = model.num_vertices
    return sp.csr_matrix((np.asarray(model.lap_vals, np.float64),
                          (np.asarray(model.lap_rows), np.asarray(model.lap_cols))), shape=(n, n))


def silhouette_landmarks(model: HeadModel, verts, camera: Camera):
    """68 landmark points ``[68, 3]`` of mesh ``verts`` with the jaw on the silhouette."""
    pts = landmarks(model, verts)
    cand = model.contour_candidates[: len(JAW_LANDMARKS)]
    normals = vertex_normals(verts, model.triangles)[cand]
    pick = silhouette_pick(cand, verts[cand], normals, camera.rotvec, camera.translation)
    return pts.at[jnp.asarray(JAW_LANDMARKS)].set(verts[pick])
