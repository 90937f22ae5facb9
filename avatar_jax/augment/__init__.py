"""augment stage of avatar-jax: shape augmentation of identities (the paper's section 3.2).

- ``dr``: the deformation representation (DR) of meshes on one triangulation: encode, blend,
  decode.
- ``sampling``: source identities from the model's prior, and new shapes by polar-coordinate
  blending of k-NN groups (``"dr"``, with ``"linear"``, ``"cpca"`` and ``"none"`` baselines),
  with plausibility measures.

Names are imported lazily so that ``import avatar_jax.augment`` stays cheap.
"""

from __future__ import annotations

from avatar_jax._lazy import lazy_exports

_DR = ("DRBasis", "FEATURE_DIM", "component_centroids", "dr_basis", "dr_decode", "dr_encode",
       "dr_interpolate")
_SAMPLING = ("METHODS", "AugmentConfig", "AugmentResult", "Plausibility", "Sources",
             "augment_shapes", "identity_shapes", "nearest_neighbours", "plausibility",
             "polar_weights", "prior_energy", "project_identity", "sample_identities",
             "sources_from_shapes", "encode_sources")
__all__ = [
    "FEATURE_DIM",
    "METHODS",
    "AugmentConfig",
    "AugmentResult",
    "DRBasis",
    "Plausibility",
    "Sources",
    "augment_shapes",
    "component_centroids",
    "dr_basis",
    "dr_decode",
    "dr_encode",
    "dr_interpolate",
    "encode_sources",
    "identity_shapes",
    "nearest_neighbours",
    "plausibility",
    "polar_weights",
    "prior_energy",
    "project_identity",
    "sample_identities",
    "sources_from_shapes",
]
_EXPORTS = {**dict.fromkeys(_DR, "avatar_jax.augment.dr"),
            **dict.fromkeys(_SAMPLING, "avatar_jax.augment.sampling")}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
