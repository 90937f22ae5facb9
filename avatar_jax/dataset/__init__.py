"""dataset stage of avatar-jax: synthetic training renders with exact ground truth.

- ``skins``: de-identified procedural skins (no photographed person's face on a render).
- ``scenes``: random pose, field of view, expression, light and background.
- ``make``: ``make_dataset`` (sharded, deterministic, resumable) and ``iter_shards``.
- ``command``: the ``avatar-jax make-dataset`` command.

Names are imported lazily so that ``import avatar_jax.dataset`` stays cheap.
"""

from __future__ import annotations

from avatar_jax._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["SkinAtlas", "SkinParams", "make_skin", "sample_skin_params", "skin_atlas"],
                    "avatar_jax.dataset.skins"),
    **dict.fromkeys(["SceneConfig", "sample_backgrounds", "sample_cameras", "sample_expressions",
                     "sample_lights"], "avatar_jax.dataset.scenes"),
    **dict.fromkeys(["DatasetConfig", "SHARD_FIELDS", "iter_shards", "make_dataset", "make_shard"],
                    "avatar_jax.dataset.make"),
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
