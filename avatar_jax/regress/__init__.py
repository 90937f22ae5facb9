"""regress stage of avatar-jax: photo -> base shape P (the paper's learned shape prior).

- ``dlib_resnet``: dlib's ResNet face descriptor (128-D identity embedding) ported to Flax,
  with its 5-point chip alignment; no dlib needed at run time.
- ``features``: the geometric encoder (MediaPipe's 478-point mesh without pose and scale).
- ``encode``: the encoders behind one interface, and ``regress`` (photo + faces -> shapes).
- ``decoder``: the FC vertex decoder (128 -> 200 -> 3V, last layer from the shapes' PCA).
- ``train``: training on precomputed features (optax, orbax checkpoints), saving / loading.

Names are imported lazily so that ``import avatar_jax.regress`` stays cheap.
"""

from __future__ import annotations

from avatar_jax._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["DlibResNet", "align_chip", "count_params", "face_chip_details", "face_descriptor",
                     "load_dlib_resnet", "normalise_chip", "points5_from_ibug68", "read_dlib_resnet",
                     "unflatten_params"], "avatar_jax.regress.dlib_resnet"),
    **dict.fromkeys(["mesh_features", "mesh_template"], "avatar_jax.regress.features"),
    **dict.fromkeys(["ENCODERS", "encode", "regress", "regress_faces"], "avatar_jax.regress.encode"),
    **dict.fromkeys(["VertexDecoder", "init_decoder", "shape_pca", "vertex_weights", "weighted_l1"],
                    "avatar_jax.regress.decoder"),
    **dict.fromkeys(["Regressor", "TrainConfig", "History", "train_regressor", "save_regressor",
                     "load_regressor", "DEFAULT_REGRESSOR"], "avatar_jax.regress.train"),
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
