"""Close the eye and mouth openings of the head mesh with caps (for texturing and export).

The low-poly head (like ICT-FaceKit's skin) has no eyeballs, mouth socket or teeth: the eyes
and the mouth are holes, dark in renders and see-through in viewers. :func:`cap_holes` closes
every boundary loop of the mesh except the largest one (the neck) with a patch of triangles:
two concentric rings between the rim and the rim's centroid, then a fan to the centroid.

* **Geometry**: every cap vertex is a fixed convex combination of its loop's rim vertices
  (``(1 - t) rim_i + t centroid``, ``t`` = 1/3, 2/3, 1), so it is linear in the mesh: the
  identity and expression bases (and so the glTF morph targets) extend with the same
  weights, and the caps follow the rims when the eyes blink or the jaw opens.
* **UVs**: each cap gets its own island in an unused part of the UV atlas (the rim and the
  rings projected on the model's xy plane, the openings face +Z), packed at up to the face
  chart's texel density, so the photo's eyes (iris, sclera, lash line) and mouth (teeth, lip
  line) are projected onto the caps like any other surface and the avatar looks at the
  viewer with the person's eyes. Parts of a cap the photo does not show are filled like the
  rest of the texture (mirror, then skin).

``cap_holes(model)`` returns a new :class:`~avatar_jax.model.head.HeadModel` (same class,
more vertices, triangles and uvs; the original vertex, triangle and uv ids are unchanged, so
landmarks and the Laplacian still refer to the same vertices) and the :class:`HoleCaps`
weights that map a fitted mesh ``[V, 3]`` to the capped one (:func:`extend_vertices`).
"""

from __future__ import annotations

import collections

import jax.numpy as jnp
import numpy as np
from flax import struct

from avatar_jax._identity_cache import IdentityCache
from avatar_jax.model.head import HeadModel

RING_FRACTIONS = (1.0 / 3.0, 2.0 / 3.0)  # towards the centroid; the centroid itself is t = 1


@struct.dataclass
class HoleCaps:
    """Linear map from the base mesh to the cap vertices.

    Attributes:
      weights: ``[Vc, V]`` float32, cap vertex ``c`` = ``sum_j weights[c, j] X_j``.
      num_base: static V (vertices of the uncapped model).
      loops: static tuple of rim loops (vertex ids, ordered along each hole's border).
    """

    weights: jnp.ndarray
    num_base: int = struct.field(pytree_node=False)
    loops: tuple = struct.field(pytree_node=False, default=())


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Ordered boundary loops ``[n_k]`` of a manifold triangle mesh (in no particular order).

    Each loop follows the direction of its boundary edges in their triangles (a cap triangle
    must use the edge reversed to face the same way).
    """
    tris = np.asarray(triangles)
    edges = tris[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    count = collections.Counter(map(tuple, np.sort(edges, 1)))
    nxt = {int(a): int(b) for a, b in edges if count[(min(a, b), max(a, b))] == 1}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            if v not in nxt:
                raise ValueError(f"mesh boundary is not a set of closed loops (vertex {v})")
            v = nxt[v]
        loops.append(np.array(loop))
    return loops


def _perimeter(verts: np.ndarray, loop: np.ndarray) -> float:
    return float(np.linalg.norm(verts[np.roll(loop, -1)] - verts[loop], axis=1).sum())


def _cap_topology(loop: np.ndarray, first_new: int):
    """Cap vertex weights ``[Vc, n]`` over the loop and triangles over (rim + new) ids."""
    n = len(loop)
    rows = [(1.0 - t) * np.eye(n) + t / n for t in RING_FRACTIONS]
    weights = np.concatenate(rows + [np.full((1, n), 1.0 / n)], 0)
    rings = [loop] + [first_new + k * n + np.arange(n) for k in range(len(RING_FRACTIONS))]
    centre = first_new + len(RING_FRACTIONS) * n
    tris = []
    for outer, inner in zip(rings[:-1], rings[1:]):
        for i in range(n):
            j = (i + 1) % n
            # Rim edge (outer[i] -> outer[j]) is used reversed so the cap faces outwards.
            tris.append((outer[j], outer[i], inner[i]))
            tris.append((outer[j], inner[i], inner[j]))
    last = rings[-1]
    tris += [(last[(i + 1) % n], last[i], centre) for i in range(n)]
    return weights, np.array(tris, np.int64)


def _free_space(uvs: np.ndarray, triangle_uvs: np.ndarray, grid: int, margin: int) -> np.ndarray:
    """``[grid, grid]`` bool: atlas cells at least ``margin`` cells away from every chart."""
    import cv2

    occupied = np.zeros((grid, grid), np.uint8)
    pts = np.stack([uvs[:, 0] * grid, (1.0 - uvs[:, 1]) * grid], -1)
    polys = np.round(pts[triangle_uvs] * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(occupied, list(polys), 1, lineType=cv2.LINE_8, shift=4)
    occupied = cv2.dilate(occupied, np.ones((2 * margin + 1,) * 2, np.uint8))
    occupied[:margin], occupied[-margin:], occupied[:, :margin], occupied[:, -margin:] = 1, 1, 1, 1
    return occupied == 0


def _pack(sizes: list[tuple[float, float]], free: np.ndarray, gap: int):
    """Place rectangles (w, h in cells, largest first) into ``free``; top-left cells or None."""
    free = free.copy()
    places = [None] * len(sizes)
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k][0] * sizes[k][1]):
        w, h = (int(np.ceil(s)) + gap for s in sizes[k])
        table = np.pad((~free).astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        blocked = table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]
        rows, cols = np.nonzero(blocked == 0)
        if len(rows) == 0:
            return None
        r, c = rows[0], cols[0]  # top-most, then left-most: deterministic
        free[r:r + h, c:c + w] = False
        places[k] = (r, c)
    return places


def _island_uvs(planar: list[np.ndarray], uvs: np.ndarray, triangle_uvs: np.ndarray,
                max_density: float, grid: int = 512, margin: int = 4) -> list[np.ndarray]:
    """UVs for each cap (planar mm coordinates ``[n_k, 2]``) in the free atlas space."""
    free = _free_space(uvs, triangle_uvs, grid, margin)
    lo = [p.min(0) for p in planar]
    extent = [p.max(0) - p.min(0) for p in planar]
    density = max_density
    while density > max_density / 16:
        cells = density * grid
        places = _pack([tuple(e * cells) for e in extent], free, gap=2 * margin)
        if places is not None:
            out = []
            for p, low, (r, c) in zip(planar, lo, places):
                q = (p - low) * cells + margin  # cells, x right / y up within the island
                h = float(np.ceil((p.max(0) - low)[1] * cells))
                u = (c + q[:, 0]) / grid
                v = 1.0 - (r + margin + h - (q[:, 1] - margin)) / grid
                out.append(np.stack([u, v], -1))
            return out
        density *= 0.85
    raise ValueError("cap_holes: no free space in the UV atlas for the hole caps")


def cap_holes(model: HeadModel, keep_open: int = 1) -> tuple[HeadModel, HoleCaps]:
    """Model with its eye and mouth openings closed, and the cap weights.

    Args:
      model: the head model (a manifold mesh with boundary loops).
      keep_open: how many of the longest loops (by perimeter) stay open (1: the neck).

    Returns:
      ``(capped, caps)``: ``capped`` has ``V + Vc`` vertices (the cap vertices appended, their
      bases extended linearly, ``face_mask`` True, ``vertex_weights`` 1), ``F + Fc`` triangles
      and ``U + Uc`` uvs (each cap's rim gets fresh uv ids in its own island).
    """
    tris = np.asarray(model.triangles)
    neutral = np.asarray(model.neutral, np.float64)
    loops = sorted(boundary_loops(tris), key=lambda lp: _perimeter(neutral, lp))
    loops = loops[:max(0, len(loops) - keep_open)]
    if not loops:
        return model, HoleCaps(jnp.zeros((0, model.num_vertices), jnp.float32),
                               model.num_vertices, ())
    v_base = model.num_vertices
    uvs = np.asarray(model.uvs, np.float64)
    weight_rows, new_tris, planar, corner_ids = [], [], [], []
    next_vertex = v_base
    for loop in loops:
        w_loop, t_loop = _cap_topology(loop, next_vertex)
        full = np.zeros((len(w_loop), v_base))
        full[:, loop] = w_loop
        weight_rows.append(full)
        new_tris.append(t_loop)
        # Island-local uv ids: rim vertices first (loop order), then the cap vertices.
        ids = np.concatenate([loop, next_vertex + np.arange(len(w_loop))])
        local = {int(v): k for k, v in enumerate(ids)}
        corner_ids.append(np.vectorize(local.__getitem__)(t_loop))
        pts = np.concatenate([neutral[loop], full @ neutral], 0)
        planar.append(pts[:, :2])
        next_vertex += len(w_loop)
    weights = np.concatenate(weight_rows, 0)
    face_density = _face_uv_density(model)
    islands = _island_uvs(planar, uvs, np.asarray(model.triangle_uvs), face_density)
    new_uvs, new_tuv, first_uv = [], [], len(uvs)
    for island, corners in zip(islands, corner_ids):
        new_uvs.append(island)
        new_tuv.append(corners + first_uv)
        first_uv += len(island)

    loop_ids = np.concatenate(loops)

    def extend(basis):  # [..., V, 3] -> [..., V + Vc, 3]; only the rim columns are non-zero
        b = np.asarray(basis, np.float32)
        rim = np.moveaxis(b, -2, 0)[loop_ids]  # [n_rim, ..., 3]
        caps_ = (weights[:, loop_ids].astype(np.float32) @ rim.reshape(len(loop_ids), -1))
        caps_ = np.moveaxis(caps_.reshape((len(weights),) + rim.shape[1:]), 0, -2)
        return jnp.asarray(np.concatenate([b, caps_], -2))

    vc = len(weights)
    capped = model.replace(
        neutral=extend(model.neutral),
        identity_basis=extend(model.identity_basis),
        expression_basis=extend(model.expression_basis),
        triangles=jnp.asarray(np.concatenate([tris] + new_tris, 0), jnp.int32),
        uvs=jnp.asarray(np.concatenate([uvs] + new_uvs, 0), jnp.float32),
        triangle_uvs=jnp.asarray(np.concatenate([np.asarray(model.triangle_uvs)] + new_tuv, 0),
                                 jnp.int32),
        face_mask=jnp.asarray(np.concatenate([np.asarray(model.face_mask), np.ones(vc, bool)])),
        vertex_weights=jnp.asarray(np.concatenate([np.asarray(model.vertex_weights),
                                                   np.ones(vc, np.float32)])),
    )
    return capped, HoleCaps(jnp.asarray(weights, jnp.float32), v_base,
                            tuple(tuple(int(i) for i in lp) for lp in loops))


def _face_uv_density(model: HeadModel) -> float:
    """Median UV units per mm over the face-region triangles."""
    tris = np.asarray(model.triangles)
    p = np.asarray(model.uvs)[np.asarray(model.triangle_uvs)]
    x = np.asarray(model.neutral)[tris]
    face = np.asarray(model.face_mask)[tris].all(1)
    ratio = np.linalg.norm(p[:, 1] - p[:, 0], axis=1) / np.maximum(
        np.linalg.norm(x[:, 1] - x[:, 0], axis=1), 1e-9)
    return float(np.median(ratio[face] if face.any() else ratio))


def extend_vertices(caps: HoleCaps, verts) -> jnp.ndarray:
    """Fitted mesh ``[..., V, 3]`` -> capped mesh ``[..., V + Vc, 3]`` (works under jit/vmap)."""
    verts = jnp.asarray(verts)
    if verts.shape[-2] != caps.num_base:
        raise ValueError(f"verts must have {caps.num_base} vertices, got shape {verts.shape}")
    return jnp.concatenate([verts, jnp.einsum("cv,...vd->...cd", caps.weights, verts)], -2)


_CAPPED: IdentityCache[tuple] = IdentityCache(maxsize=4)


def capped_model(model: HeadModel) -> tuple[HeadModel, HoleCaps]:
    """:func:`cap_holes` of ``model``, computed once per model object and process."""
    return _CAPPED.get((model,), None, lambda: cap_holes(model))
