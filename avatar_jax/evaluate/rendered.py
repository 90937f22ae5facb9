"""Rendered synthetic benchmark: the projected suite's heads, rendered, detected, fitted.

The truth meshes and cameras are exactly those of the projected variant
(:func:`avatar_jax.evaluate.synthetic.out_of_space_heads` with the same seed and count: identity
+ expression samples moved out of the model space, yaw +-60 deg). Instead of projecting the
landmarks, each head is

1. **rendered** at its true camera: the capped mesh (eye and mouth openings closed by
   :mod:`avatar_jax.texture.caps`, as ``reconstruct`` exports it) with a real skin texture baked
   once from a photo (:func:`bake_source_texture`: MediaPipe -> fit -> ``bake_texture``, cached
   on disk), Lambert shading under a random light from the front hemisphere, composited over a
   mildly cluttered random background (smooth colour gradient + blurred blobs), rendered at
   2x and box-filtered (anti-aliased edges);
2. **detected** with :func:`avatar_jax.landmarks.api.detect_faces` (MediaPipe, default route,
   largest face). A render where no face is found counts as a detection failure: its ARMSE is
   NaN and the other heads carry on;
3. **fitted** on the detected 68 points by the same methods as the projected suite (landmark-only,
   full energy, mean identity, eos-py through the same ``fit_ours`` / ``_fit_eos``), scored by ARMSE vs d
   against the truth (:func:`~avatar_jax.evaluate.synthetic.armse_against_truth`).

The detected points are also scored against the true projected landmarks (jaw on the true
silhouette, as in the projected suite) by 68-point NME (% of sqrt(w h) of the true landmark box):
a landmark benchmark with exact ground truth and known yaw. Caveat: the rendered heads wear the
texture of another person's face baked onto their UV layout, so eyebrows, lips and eyes sit where
the model's UV layout puts them, not necessarily exactly at the model's landmark embedding.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.evaluate import synthetic as es
from avatar_jax.evaluate.nme import landmark_nme
from avatar_jax.geometry import camera as cam
from avatar_jax.model.head import HeadModel
from avatar_jax.render.scene import supersampled_camera
from avatar_jax.status import Status

DEFAULT_TEXTURE_PHOTOS = ("tom_cruise.jpg", "obama.jpg")
TEXTURE_SIZE = 1024
SUPERSAMPLE = 2
AMBIENT = 0.55  # the texture already holds the photo's soft shading: keep the extra light mild
INNER = slice(17, 68)  # brows, nose, eyes, mouth: no jaw-contour ambiguity


@dataclasses.dataclass
class RenderedResults:
    """Host-side results. M methods, n heads, D distances.

    Attributes:
      methods: the M method names that ran; ``skipped``: method -> reason for those that did not.
      distances ``[D]``, yaw_deg ``[n]``.
      found: ``[n]`` bool, MediaPipe found a face in the render.
      detected: ``[n, 68, 2]`` detected points (NaN where none was found).
      true_landmarks: ``[n, 68, 2]`` noise-free projections of the true mesh (jaw on its silhouette).
      nme: ``[n]`` 68-point NME of ``detected`` vs ``true_landmarks`` (fraction; NaN if not found);
      nme_inner: ``[n]`` the same over the 51 inner points (17-67).
      armse: ``[M, n, D]`` mm (NaN where not detected or the fit failed).
      reprojection_error ``[M, n]`` px, status ``[M, n]`` ``Status`` codes (``NO_FACE`` where none was found).
      texture_of: ``[n]`` index into ``texture_names`` of each head's skin texture.
      seconds: wall time per stage (textures, render, detect, fit per method, armse).
      example: data for the overlay: ``head``, ``image`` ``[H, W, 3]`` uint8, ``detected``,
        ``true`` ``[68, 2]``, ``nme``, ``yaw_deg``.
      images: the renders ``[n, H, W, 3]`` uint8 when asked for (``keep_images``), else None.
      config: the run's parameters.
    """

    methods: tuple[str, ...]
    skipped: dict
    distances: np.ndarray
    yaw_deg: np.ndarray
    found: np.ndarray
    detected: np.ndarray
    true_landmarks: np.ndarray
    nme: np.ndarray
    nme_inner: np.ndarray
    armse: np.ndarray
    reprojection_error: np.ndarray
    status: np.ndarray
    texture_of: np.ndarray
    texture_names: tuple[str, ...]
    seconds: dict
    example: dict
    images: np.ndarray | None
    config: dict


# ----------------------------------------------------------------------------- textures

def example_photos() -> list[Path]:
    """The packaged photos used for the skin textures (``data/texture_photos``, public domain:
    its README)."""
    folder = Path(__file__).resolve().parent / "data" / "texture_photos"
    paths = [folder / name for name in DEFAULT_TEXTURE_PHOTOS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"texture photos not found: {missing} (a broken install?); pass "
                         "texture_photos= (any frontal face photos)")
    return paths


def bake_source_texture(photo: str | Path, size: int = TEXTURE_SIZE, model: HeadModel | None = None) -> np.ndarray:
    """Skin texture ``[S, S, 3]`` uint8 of the capped head's UV layout baked from ``photo``.

    The ``reconstruct`` path (largest face, full-energy fit, :func:`bake_texture` of the capped
    mesh), cached on disk (:mod:`avatar_jax._disk_cache`, kind ``render_textures``) under a key of
    the photo's bytes, the size and the model, so a rerun reads it back.

    Raises:
      ValueError: unreadable photo or no face in it.
    """
    from avatar_jax._disk_cache import cache_key, cached_arrays
    from avatar_jax.fit import FitConfig
    from avatar_jax.model import load_head_model

    model = model or load_head_model()
    photo = Path(photo)
    try:
        data = photo.read_bytes()
    except OSError as err:
        raise ValueError(f"bake_source_texture: cannot read {photo}: {err}") from err
    # The fit decides where the photo lands on the UV layout, so its configuration is part of the
    # key: a retuned default must not reuse textures baked under the old one.
    key = cache_key(np.frombuffer(data, np.uint8), size, model.neutral, model.uvs, model.triangles,
                    repr(FitConfig()))
    arrays = cached_arrays(f"skin-{photo.stem}-{size}", key,
                           lambda: {"texture": _bake(photo, size, model)}, kind="render_textures")
    return arrays["texture"]


def _bake(photo: Path, size: int, model: HeadModel) -> np.ndarray:
    from avatar_jax.fit import fit
    from avatar_jax.io.image import load_image
    from avatar_jax.landmarks.api import detect_faces
    from avatar_jax.texture.bake import bake_plan, bake_texture
    from avatar_jax.texture.caps import capped_model, extend_vertices

    image = load_image(photo)
    faces = detect_faces(image, max_faces=1, small_faces=False)
    if not faces:
        raise ValueError(f"bake_source_texture: no face found in {photo}")
    res = fit(faces[0].landmarks68[None], np.array([image.shape[:2]], np.float32), model=model)
    res = jax.tree.map(lambda a: np.asarray(a)[0], res)
    capped, caps = capped_model(model)
    verts = np.asarray(extend_vertices(caps, res.vertices))
    plan = bake_plan(capped, size, np.arange(capped.num_vertices) >= caps.num_base)
    # hair=False: the skin texture these evaluations were measured with (and cached under keys
    # that do not name the hair fill)
    return bake_texture(np.asarray(image, np.uint8), verts, res.camera, capped, size, plan=plan, hair=False)


# ----------------------------------------------------------------------------- rendering

def background_image(rng: np.random.Generator, image_size: tuple[int, int]) -> np.ndarray:
    """Mildly cluttered background ``[H, W, 3]`` float in [0, 1]: a vertical gradient between two
    muted random colours plus large blurred blobs, mostly brightness with a little colour (no
    face-like structure)."""
    h, w = image_size
    muted = lambda: rng.uniform(0.2, 0.8) + rng.uniform(-0.08, 0.08, 3)
    top, bottom = muted(), muted()
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    blobs = cv2.resize(_smooth_noise(rng, (h // 8, w // 8)), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip((1.0 - t) * top + t * bottom + blobs, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], sigma: float = 3.0) -> np.ndarray:
    """Blurred noise ``[h, w, 3]`` (``sigma`` in cells): brightness blobs (sd 0.12) with a little
    colour (sd 0.03)."""
    def blobs(shape):
        b = cv2.GaussianBlur(rng.normal(0.0, 1.0, shape).astype(np.float32), (0, 0), sigma)
        return b / max(float(b.std()), 1e-6)

    return 0.12 * blobs(size)[..., None] + 0.03 * blobs(size + (3,))


def random_light(rng: np.random.Generator) -> tuple[float, float, float]:
    """Light direction in view space from the front hemisphere, above-ish (x right, y up, z to
    the viewer)."""
    return (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0.0, 0.6)), 1.0)


def render_head(capped: HeadModel, verts, camera: cam.Camera, image_size: tuple[int, int],
                texture, background: np.ndarray, light, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Anti-aliased textured render ``[H, W, 3]`` uint8 of the capped mesh ``verts`` ``[Vc, 3]``
    (model frame, mm) at ``camera`` (unbatched) over ``background`` ``[H, W, 3]`` float.

    ``texture``: ``[S, S, 3]`` float in [0, 1] on ``capped``'s UV layout.
    """
    from avatar_jax.render.preview import render_mesh

    h, w = image_size
    if background.shape != (h, w, 3):
        raise ValueError(f"render_head: background must be [{h}, {w}, 3], got {background.shape}")
    # A NaN background marks the pixels no triangle covers (textures are never NaN), so the
    # clutter can be composited per fine pixel before the box filter.
    fine = np.asarray(render_mesh(verts, capped.triangles, supersampled_camera(camera, supersample),
                                  (h * supersample, w * supersample), texture=texture, uvs=capped.uvs,
                                  triangle_uvs=capped.triangle_uvs, light=light,
                                  background=(np.nan, np.nan, np.nan), ambient=AMBIENT))
    back = np.repeat(np.repeat(background, supersample, 0), supersample, 1)
    fine = np.where(np.isnan(fine), back, np.clip(fine, 0.0, 1.0))
    image = fine.reshape(h, supersample, w, supersample, 3).mean((1, 3))
    return np.round(image * 255.0).astype(np.uint8)


def render_batch(model: HeadModel, batch: es.OutOfSpaceBatch, textures: Sequence[np.ndarray], seed: int,
                 progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Renders ``[n, H, W, 3]`` uint8 of every head of ``batch`` and the texture index ``[n]`` of
    each (round robin over ``textures``); backgrounds and lights from ``seed``."""
    from avatar_jax.texture.caps import capped_model, extend_vertices

    progress = progress or es._no_progress
    capped, caps = capped_model(model)
    verts = np.asarray(jax.vmap(lambda v: extend_vertices(caps, v))(jnp.asarray(batch.vertices)))
    tex = [jnp.asarray(t, jnp.float32) / 255.0 for t in textures]
    n = verts.shape[0]
    h, w = (int(v) for v in np.asarray(batch.image_sizes)[0])
    rng = np.random.default_rng(seed)
    texture_of = np.arange(n) % len(tex)
    images = np.zeros((n, h, w, 3), np.uint8)
    for i in progress(range(n), "render"):
        camera = jax.tree.map(lambda a: a[i], batch.camera)
        images[i] = render_head(capped, verts[i], camera, (h, w), tex[texture_of[i]],
                                background_image(rng, (h, w)), random_light(rng))
    return images, texture_of


# ----------------------------------------------------------------------------- detection

def detect_renders(images: np.ndarray, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's 68 points ``[n, 68, 2]`` (largest face, default route; NaN where no face) and
    ``found`` ``[n]`` bool for renders ``[n, H, W, 3]`` uint8."""
    from avatar_jax.landmarks.api import detect_faces

    progress = progress or es._no_progress
    n = images.shape[0]
    detected = np.full((n, 68, 2), np.nan, np.float32)
    for i in progress(range(n), "detect"):
        faces = detect_faces(images[i], max_faces=1)
        if faces:
            detected[i] = faces[0].landmarks68
    return detected, np.all(np.isfinite(detected), (1, 2))


# ----------------------------------------------------------------------------- the benchmark

def run_rendered(model: HeadModel | None = None, num: int = 16, seed: int = 0,
                 distances=es.DISTANCES, methods=es.METHODS, yaw_deg: float = 60.0,
                 texture_photos: Sequence[str | Path] | None = None, texture_size: int = TEXTURE_SIZE,
                 progress=None, keep_images: bool = False) -> RenderedResults:
    """Run the rendered benchmark (see the module docstring).

    Args:
      model: head model (default: the bundled one).
      num: heads n; seed: PRNG seed (same heads as ``run_synthetic`` with the same num and seed).
      distances ``[D]`` mm; methods: subset of :data:`avatar_jax.evaluate.synthetic.METHODS`.
      yaw_deg: yaw range +-yaw_deg.
      texture_photos: face photos for the skin textures (default: the checkout's
        the packaged ``tom_cruise.jpg`` and ``obama.jpg``); texture_size: their side.
      progress: ``progress(iterable, desc) -> iterable`` (e.g. a tqdm wrapper) or None.
      keep_images: keep every render in the result (``images``).
    """
    if model is None:
        from avatar_jax.model import load_head_model

        model = load_head_model()
    unknown = [m for m in methods if m not in es.METHODS]
    if unknown:
        raise ValueError(f"run_rendered: unknown methods {unknown}; expected a subset of {es.METHODS}")
    if num < 1:
        raise ValueError(f"run_rendered: num must be >= 1, got {num}")
    if not 0.0 <= yaw_deg <= 90.0:
        raise ValueError(f"run_rendered: yaw_deg must be in [0, 90], got {yaw_deg}")
    if texture_size < 16:
        raise ValueError(f"run_rendered: texture_size must be >= 16, got {texture_size}")
    photos = [Path(p) for p in texture_photos] if texture_photos else example_photos()
    if not photos:
        raise ValueError("run_rendered: texture_photos is empty")
    distances = np.atleast_1d(np.asarray(distances, np.float32))
    seconds = {}

    scene = render_scene(model, num, seed, yaw_deg, photos, texture_size, progress, seconds)
    batch, images, texture_of, detected, found = (scene.batch, scene.images, scene.texture_of,
                                                  scene.detected, scene.found)
    true = np.asarray(batch.clean_landmarks, np.float32)
    nme = np.where(found, np.asarray(landmark_nme(np.nan_to_num(detected), true)), np.nan)
    nme_inner = np.where(found, np.asarray(landmark_nme(np.nan_to_num(detected[:, INNER]), true[:, INNER])), np.nan)

    ran, skipped, fitted = _fit_detected(model, scene, methods, progress, seconds)
    scores = np.full((len(ran), num, len(distances)), np.nan, np.float32)
    t0 = time.perf_counter()
    jobs = [(mi, i) for mi in range(len(ran)) for i in range(num)]
    for mi, i in _progress(progress)(jobs, "ARMSE"):
        pred = fitted[ran[mi]][0][i]
        if np.all(np.isfinite(pred)):
            scores[mi, i] = np.asarray(es.armse_against_truth(model, pred, batch.vertices[i], distances).armse)
    seconds["armse"] = time.perf_counter() - t0
    return RenderedResults(
        methods=ran, skipped=skipped, distances=distances, yaw_deg=np.asarray(batch.yaw_deg),
        found=found, detected=detected, true_landmarks=true, nme=nme, nme_inner=nme_inner, armse=scores,
        reprojection_error=np.stack([fitted[m][1] for m in ran]) if ran else np.zeros((0, num)),
        status=np.stack([fitted[m][2] for m in ran]) if ran else np.zeros((0, num), np.int32),
        texture_of=texture_of, texture_names=tuple(p.stem for p in photos), seconds=seconds,
        example=_pick_example(images, detected, true, nme, np.asarray(batch.yaw_deg)),
        images=images if keep_images else None,
        config=dict(num=num, seed=seed, yaw_deg=yaw_deg, pitch_deg=20.0, roll_deg=10.0,
                    image_size=[int(v) for v in batch.image_sizes[0]], texture_size=texture_size,
                    supersample=SUPERSAMPLE, ambient=AMBIENT,
                    deformation="4 Gaussian normal bumps, radius 20-40 mm, |amplitude| 2-5 mm"))


@dataclasses.dataclass(frozen=True)
class RenderedScene:
    """The benchmark's heads rendered and detected, before any fit (n heads).

    Attributes:
      batch: the truth (:class:`~avatar_jax.evaluate.synthetic.OutOfSpaceBatch`, one noise level).
      images ``[n, H, W, 3]`` uint8; texture_of ``[n]``: skin texture index of each render.
      detected ``[n, 68, 2]`` MediaPipe's points (NaN where no face); found ``[n]`` bool.
    """

    batch: es.OutOfSpaceBatch
    images: np.ndarray
    texture_of: np.ndarray
    detected: np.ndarray
    found: np.ndarray


def render_scene(model: HeadModel, num: int, seed: int, yaw_deg: float, texture_photos: Sequence[Path],
                 texture_size: int = TEXTURE_SIZE, progress=None, seconds: dict | None = None) -> RenderedScene:
    """Bake the skins, sample the ``num`` heads of ``seed``, render and detect them (stage wall
    times go into ``seconds`` when given)."""
    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    textures = [bake_source_texture(p, texture_size, model) for p in _progress(progress)(texture_photos, "textures")]
    seconds["textures"] = time.perf_counter() - t0
    batch = jax.tree.map(np.asarray, es.out_of_space_heads(model, jax.random.PRNGKey(seed), num, (0.0,),
                                                           yaw_deg=yaw_deg))
    t0 = time.perf_counter()
    images, texture_of = render_batch(model, batch, textures, seed, progress)
    seconds["render"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    detected, found = detect_renders(images, progress)
    seconds["detect"] = time.perf_counter() - t0
    return RenderedScene(batch, images, texture_of, detected, found)


def fit_scene(model: HeadModel, scene: RenderedScene, config,
              landmarks_on_head: str = "calibrated") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our fit (any :class:`~avatar_jax.fit.FitConfig`) on the detected points of the heads with a
    face: ``(verts [n, V, 3], reprojection [n], status [n])``, NaN / ``NO_FACE`` for the others.
    ``landmarks_on_head``: where the detected points sit on the head, as ``reconstruct`` fits
    them (:func:`avatar_jax.pipeline.head_landmark_set`)."""
    from avatar_jax.pipeline import head_landmark_set

    landmark_set = head_landmark_set(model, landmarks_on_head)
    return _fit_found(model, scene, lambda sub: es.fit_ours(model, sub, config, landmark_set))


def _fit_found(model, scene: RenderedScene, fit_batch):
    """``fit_batch(batch of the heads with a face)`` scattered back over all n heads."""
    n = scene.detected.shape[0]
    verts = np.full((n,) + tuple(model.neutral.shape), np.nan, np.float32)
    reproj = np.full(n, np.nan, np.float32)
    status = np.full(n, Status.NO_FACE, np.int32)
    idx = np.flatnonzero(scene.found)
    if len(idx):
        out = fit_batch(_detected_batch(scene, idx))
        verts[idx], reproj[idx], status[idx] = out[0][0], out[1][0], out[2][0]
    return verts, reproj, status


def _detected_batch(scene: RenderedScene, idx: np.ndarray) -> es.OutOfSpaceBatch:
    """The heads ``idx`` with one "noise level" (the detector's): ``[1, k, 68, 2]`` landmarks."""
    per_head = scene.batch.replace(landmarks=None, noise_levels=None)
    return jax.tree.map(lambda a: a[idx], per_head).replace(
        landmarks=scene.detected[idx][None], noise_levels=np.zeros(1, np.float32))


def _progress(progress):
    """``progress`` or a pass-through (no bars)."""
    return progress or es._no_progress


def _fit_detected(model, scene: RenderedScene, methods, progress, seconds):
    """Fit every method on the scene: ``(ran, skipped, {method: (verts [n, V, 3], reprojection [n],
    status [n])})``, NaN / ``NO_FACE`` for the heads without a face."""
    skipped = dict(es.SKIPPED_METHODS)
    fitted = {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "eos-py":
            peer, reason = es.load_eos_peer()
            if peer is None:
                skipped[method] = reason
                continue
            fitted[method] = _fit_found(model, scene, lambda sub: es._fit_eos(peer, model, sub, _progress(progress)))
        else:
            fitted[method] = fit_scene(model, scene, es.method_config(method))
        seconds[f"fit {method}"] = time.perf_counter() - t0
    return tuple(fitted), skipped, fitted


def _pick_example(images, detected, true, nme, yaw) -> dict:
    """The detected head with the median NME (else head 0, with no detection)."""
    ok = np.flatnonzero(np.isfinite(nme))
    head = int(ok[np.argsort(nme[ok])[len(ok) // 2]]) if len(ok) else 0
    return dict(head=head, image=images[head], detected=detected[head], true=true[head],
                nme=float(nme[head]), yaw_deg=float(yaw[head]))
