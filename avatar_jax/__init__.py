"""avatar-jax: one photo of a face to a production-ready 3D head avatar, in JAX.

Subpackages, one per stage of the pipeline:

- ``model``     head model as an immutable pytree (low-poly ICT-FaceKit head) + asset build
- ``solve``     generic batched Gauss-Newton / Levenberg-Marquardt (knows nothing about faces)
- ``fit``       energy terms, camera, EPnP, non-rigid landmark fitting
- ``landmarks`` face detection + landmarks (MediaPipe models on LiteRT; optional dlib)
- ``texture``   UV texture projection and Poisson blending
- ``render``    small JAX rasteriser used for visibility and previews
- ``evaluate``  ARMSE, landmark NME, synthetic benchmark
- ``io``        robust image input, OBJ / glTF export
"""

from avatar_jax._cache import enable_compilation_cache

__version__ = "0.1.0"

enable_compilation_cache()

__all__ = ["__version__", "enable_compilation_cache"]
