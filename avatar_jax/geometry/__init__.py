"""geometry: the leaf every stage builds on; it imports no other stage.

- ``camera``: pinhole camera, rigid transforms, rotation conversions, projection and its
  Jacobians, the silhouette (sliding-contour) pick.
- ``mesh``: vertex normals, the cotangent Laplacian, topology checks.
- ``closest``: exact closest points on triangles (batched JAX query; host-side mesh query).
- ``uv``: UV to texel coordinates.
"""

from avatar_jax.geometry import camera, closest, mesh, uv
from avatar_jax.geometry.camera import Camera

__all__ = ["Camera", "camera", "closest", "mesh", "uv"]
