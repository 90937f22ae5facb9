"""avatar-jax: one photo of a face to a production-ready 3D head avatar, in JAX.

The pipeline, one public step per stage (:mod:`avatar_jax.pipeline`)::

    from avatar_jax import pipeline, load_image
    image = load_image("me.jpg")
    fits = pipeline.fit_faces(image, pipeline.detect(image))
    avatar = pipeline.texture_avatar(image, pipeline.face_fit(fits, 0))
    pipeline.export_avatar(avatar, "me")                      # me.glb, me.obj

Subpackages, in import order (each imports only those above it; ``tests/test_layers.py``):

- ``status``    one :class:`Status` enum for every stage
- ``geometry``  camera, rotations, mesh ops, closest points, UV helpers (a leaf)
- ``io``        robust image input, landmark files, OBJ / glTF export
- ``model``     the head model as an immutable pytree (low-poly ICT-FaceKit head)
- ``solve``     generic batched Gauss-Newton / Levenberg-Marquardt (knows nothing about faces)
- ``landmarks`` face detection + 68 landmarks (MediaPipe models on LiteRT; optional dlib)
- ``render``    small JAX rasteriser for visibility and previews
- ``fit``       energy terms, EPnP, batched non-rigid landmark fitting, the dense 468-point fit
- ``texture``   UV texture projection, completion and Poisson blending, eye/mouth caps
- ``regress``   identity encoders for the learned shape prior
- ``pipeline``, ``reconstruct``  the stages joined; ``evaluate`` benchmarks; ``cli`` commands

Importing the package changes no JAX setting. The command line enables JAX's persistent
compilation cache; a script can call :func:`enable_compilation_cache` to do the same.
"""

from __future__ import annotations

from avatar_jax._lazy import lazy_exports

__version__ = "0.1.0"

# Lazy, so ``import avatar_jax`` stays cheap and a stage's import does not pull in the others.
# (Names equal to a submodule, like ``fit``, are left out: once imported the module would win.)
_EXPORTS = {
    "Status": "avatar_jax.status",
    "enable_compilation_cache": "avatar_jax._cache",
    "use_host_devices": "avatar_jax._devices",
    "load_image": "avatar_jax.io.image",
    "load_head_model": "avatar_jax.model",
    "FitConfig": "avatar_jax.fit",
    "FitResult": "avatar_jax.fit",
    "detect_faces": "avatar_jax.landmarks",
    "Avatar": "avatar_jax.pipeline",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
