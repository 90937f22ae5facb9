"""``avatar-jax make-dataset``: synthetic training renders with exact ground truth, in shards.

    config = DatasetConfig(n=10_000, aug="dr", skins="deid", seed=0)
    summary = make_dataset(config, "data/synth")      # resumable; a rerun skips finished shards
    for shard in iter_shards("data/synth"): ...       # dicts of arrays, see SHARD_FIELDS

Shard ``k`` (``shard-00007.npz``) is a pure function of ``(config, k)``: its identities,
expressions, cameras, skins, lights and backgrounds are drawn from ``numpy`` generators seeded by
``(seed, k)``, so shards can be made in any order, by several processes, or again after a crash,
and the dataset is the same. Shards are written atomically (temp file + rename); ``manifest.json``
holds the config and is checked on every rerun, so a rerun with another config cannot mix data.

The source identities (``config.num_sources`` draws from the head model's prior, seeded by
``seed`` alone) are shared by all shards; the skins come from a pool of ``config.num_skins``
de-identified skins (:mod:`avatar_jax.dataset.skins`, seeded by ``seed``) drawn independently of
the shape, or, with ``skins="photo"``, from textures baked from photos (the ablation's variant).
A held-out set is another seed: other identities, other skins.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.dataset import scenes as sc
from avatar_jax.dataset.skins import make_skin, sample_skin_params, skin_atlas
from avatar_jax.io.shards import iter_shards, shard_path, write_shard  # noqa: F401 - iter_shards re-exported

FORMAT_VERSION = 1
AUGMENTATIONS = ("dr", "cpca", "linear", "none")
SKINS = ("deid", "photo")
SHARD_FIELDS = {
    "images": "[n, S, S, 3] uint8 renders",
    "shapes": "[n, V, 3] float32 neutral identity shape (mm, model frame, base mesh)",
    "expression": "[n, Ke] float32 expression weights",
    "vertices": "[n, V, 3] float32 rendered mesh = shape + expression (mm)",
    "rotvec": "[n, 3]", "translation": "[n, 3]", "log_fs": "[n]", "focal": "[n]", "principal": "[n, 2]",
    "landmarks68": "[n, 68, 2] float32 projected iBUG-68 (jaw on the silhouette), pixels",
    "skin": "[n] int32 skin id (pool index, or photo index for skins='photo')",
    "sources": "[n, m] int32 augmentation group (source ids)", "weights": "[n, m] float32 blend weights",
    "mesh478": "[n, 478, 3] float32 MediaPipe points detected on the render (NaN: none); with detect",
    "detected68": "[n, 68, 2] float32 the detector's iBUG-68 points on the render (NaN: none); with detect",
}


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """What ``make-dataset`` renders. All fields go into ``manifest.json``.

    Attributes:
      n: images. shard_size: images per shard (the last one may be shorter).
      aug: identity augmentation (:data:`AUGMENTATIONS`, :func:`avatar_jax.augment.augment_shapes`).
      skins: ``"deid"`` (procedural de-identified) or ``"photo"`` (baked from ``skin_photos``).
      num_sources: prior identities the augmentation blends. num_skins: de-identified skin pool.
      skins_per_shard: distinct skins one shard draws from its pool (each skin costs a bake).
      texture_size: skin atlas side. detect: run MediaPipe's face mesh on every render.
      skin_photos: photo paths for ``skins="photo"``.
      scene: :class:`~avatar_jax.dataset.scenes.SceneConfig`. seed: everything above.
    """

    n: int = 10_000
    shard_size: int = 256
    aug: str = "dr"
    skins: str = "deid"
    num_sources: int = 500
    num_skins: int = 1000
    skins_per_shard: int = 8
    texture_size: int = 512
    detect: bool = False
    skin_photos: tuple[str, ...] = ()
    scene: sc.SceneConfig = sc.SceneConfig()
    seed: int = 0

    def __post_init__(self):
        if self.n < 1 or self.shard_size < 1:
            raise ValueError(f"DatasetConfig: n and shard_size must be >= 1, got {self.n}, {self.shard_size}")
        if self.aug not in AUGMENTATIONS:
            raise ValueError(f"DatasetConfig: aug must be one of {AUGMENTATIONS}, got {self.aug!r}")
        if self.skins not in SKINS:
            raise ValueError(f"DatasetConfig: skins must be one of {SKINS}, got {self.skins!r}")
        if self.skins == "photo" and not self.skin_photos:
            raise ValueError("DatasetConfig: skins='photo' needs skin_photos")
        if self.num_sources < 6 or self.num_skins < 1 or self.skins_per_shard < 1:
            raise ValueError("DatasetConfig: num_sources must be >= 6 (a group of 5 plus one), num_skins and "
                             "skins_per_shard >= 1")

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every shard shares (built once per process)."""

    model: object
    capped: object
    caps: object
    sources: object
    atlas: object
    photo_skins: tuple


def _context(config: DatasetConfig) -> _Context:
    from avatar_jax.augment import encode_sources, sample_identities
    from avatar_jax.model import load_head_model
    from avatar_jax.texture.caps import capped_model

    model = load_head_model()
    capped, caps = capped_model(model)
    sources = sample_identities(model, np.random.default_rng([config.seed, 2**31 - 1]), config.num_sources)
    if config.aug == "dr":
        sources = encode_sources(model, sources)
    atlas = skin_atlas(capped, caps, config.texture_size)
    photos = (tuple(_photo_skin(p, config.texture_size, model) for p in config.skin_photos)
              if config.skins == "photo" else ())
    return _Context(model, capped, caps, sources, atlas, photos)


def _photo_skin(path, size, model) -> np.ndarray:
    from avatar_jax.io.image import load_image
    from avatar_jax.pipeline import detect, face_fit, fit_faces, texture_avatar

    image = load_image(path)
    faces = detect(image, max_faces=1)
    if not faces:
        raise ValueError(f"make-dataset: no face found in skin photo {path}")
    return texture_avatar(image, face_fit(fit_faces(image, faces, model=model), 0), model=model,
                          texture_size=size).texture


def make_shard(config: DatasetConfig, k: int, context: _Context | None = None) -> dict[str, np.ndarray]:
    """The arrays of shard ``k`` (see :data:`SHARD_FIELDS`); deterministic for ``(config, k)``."""
    from avatar_jax.augment import augment_shapes
    from avatar_jax.augment.sampling import AugmentConfig

    if not 0 <= k < config.num_shards:
        raise ValueError(f"make_shard: shard {k} is out of range [0, {config.num_shards})")
    ctx = context or _context(config)
    n = min(config.shard_size, config.n - k * config.shard_size)
    rng = np.random.default_rng([config.seed, k])
    aug = augment_shapes(ctx.model, config.aug, n, rng, sources=ctx.sources,
                         config=AugmentConfig(num_sources=config.num_sources))
    shapes = aug.shapes.astype(np.float32)
    expression = sc.sample_expressions(rng, n, ctx.model.num_expression, config.scene)
    vertices = shapes + np.einsum("nk,kvd->nvd", expression, np.asarray(ctx.model.expression_basis))
    camera = sc.sample_cameras(rng, n, config.scene)
    skin_ids, textures = _draw_skins(rng, n, config, ctx)
    lights = sc.sample_lights(rng, n)
    backgrounds = sc.sample_backgrounds(rng, n, config.scene.image_size, config.scene.backgrounds,
                                         config.scene.background_photos)
    images = _render(ctx, vertices, camera, textures, lights, backgrounds, config.scene.image_size)
    out = {"images": images, "shapes": shapes, "expression": expression, "vertices": vertices.astype(np.float32),
           **{f: np.asarray(getattr(camera, f)) for f in ("rotvec", "translation", "log_fs", "focal", "principal")},
           "landmarks68": _landmarks(ctx.model, vertices, camera), "skin": skin_ids,
           "sources": aug.sources.astype(np.int32), "weights": aug.weights.astype(np.float32)}
    if config.detect:
        out["mesh478"], out["detected68"] = _detect(images)
    return out


def _draw_skins(rng, n, config: DatasetConfig, ctx: _Context):
    """Skin id ``[n]`` per image and textures ``[n, T, T, 3]`` uint8 (from this shard's subset)."""
    if config.skins == "photo":
        ids = rng.integers(0, len(ctx.photo_skins), n).astype(np.int32)
        return ids, np.stack([ctx.photo_skins[i] for i in ids])
    subset = rng.choice(config.num_skins, size=min(config.skins_per_shard, config.num_skins), replace=False)
    made = {int(s): make_skin(ctx.atlas, sample_skin_params(np.random.default_rng([config.seed, 2**30, int(s)])))
            for s in subset}
    ids = subset[rng.integers(0, len(subset), n)].astype(np.int32)
    return ids, np.stack([made[int(i)] for i in ids])


def _render(ctx: _Context, vertices, camera, textures, lights, backgrounds, size) -> np.ndarray:
    from avatar_jax.render.scene import Lighting, RenderSettings, Scenes, fit_tile_budget, render_scenes
    from avatar_jax.texture.caps import extend_vertices

    capped_verts = extend_vertices(ctx.caps, jnp.asarray(vertices, jnp.float32))
    light = Lighting(sh=lights.sh, specular=lights.specular, shininess=lights.shininess, light_dir=lights.light_dir)
    # A head close to the camera needs more tiles than the default budget (its caps, last in the
    # triangle list, would be dropped first); a far one renders faster under a smaller budget.
    settings = fit_tile_budget(ctx.capped, capped_verts, camera, RenderSettings(image_size=(size, size)))
    out = render_scenes(ctx.capped, Scenes(capped_verts, camera, jnp.asarray(textures), light,
                                           jnp.asarray(backgrounds)), settings)
    return np.asarray(out.images)


def _landmarks(model, vertices, camera) -> np.ndarray:
    from avatar_jax.geometry.camera import project
    from avatar_jax.model.head import silhouette_landmarks

    pts = jax.vmap(lambda v, c: project(c, silhouette_landmarks(model, v, c)))(jnp.asarray(vertices, jnp.float32),
                                                                                  camera)
    return np.asarray(pts, np.float32)


def _detect(images) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's mesh ``[n, 478, 3]`` and 68 points ``[n, 68, 2]`` of the largest face (NaN: none)."""
    from avatar_jax.landmarks.api import detect_faces

    mesh = np.full((len(images), 478, 3), np.nan, np.float32)
    points = np.full((len(images), 68, 2), np.nan, np.float32)
    for i, image in enumerate(images):
        faces = detect_faces(image, max_faces=1)
        if faces:
            points[i] = faces[0].landmarks68
            if faces[0].landmarks478 is not None:
                mesh[i, :len(faces[0].landmarks478)] = faces[0].landmarks478
    return mesh, points


# ----------------------------------------------------------------------------- the command

def _check_manifest(out_dir: Path, config: DatasetConfig) -> None:
    path = out_dir / "manifest.json"
    wanted = json.loads(json.dumps(config.to_json()))
    if path.is_file():
        found = _with_defaults(json.loads(path.read_text()).get("config"))
        if found != wanted:
            raise ValueError(f"make-dataset: {out_dir} holds a dataset made with another config "
                             f"(manifest.json); use a new folder or the same options")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".manifest.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"config": wanted, "fields": SHARD_FIELDS,
                               "shards": [shard_path(out_dir, k).name for k in range(config.num_shards)]},
                              indent=1) + "\n")
    os.replace(tmp, path)


def _with_defaults(found):
    """A manifest's config with the fields added since it was written set to their defaults, so
    that a dataset made before a new option existed still resumes."""
    return _merge(json.loads(json.dumps(DatasetConfig().to_json())), found)


def _merge(defaults, found):
    if not isinstance(found, dict) or not isinstance(defaults, dict):
        return found
    return {**defaults, **{k: _merge(defaults.get(k), v) for k, v in found.items()}}


def make_dataset(config: DatasetConfig, out_dir, *, shards=None, progress: bool = True) -> dict:
    """Render the missing shards of ``config`` into ``out_dir`` (all, or the ids in ``shards``).

    Returns a summary: shards made and skipped, images made, seconds, images/s.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    _check_manifest(out_dir, config)
    wanted = range(config.num_shards) if shards is None else shards
    todo = [k for k in wanted if not shard_path(out_dir, k).is_file()]
    made_images, t0 = 0, time.perf_counter()
    total = sum(min(config.shard_size, config.n - k * config.shard_size) for k in todo)
    bar = tqdm(total=total, unit="img", disable=not progress, desc="make-dataset")
    ctx = _context(config) if todo else None
    # The compressed write of shard k overlaps the making of shard k + 1 (zlib releases the GIL).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for k in todo:
            arrays = make_shard(config, k, ctx)
            if pending is not None:
                pending.result()
            pending = writer.submit(write_shard, shard_path(out_dir, k), arrays)
            made_images += len(arrays["images"])
            bar.update(len(arrays["images"]))
        if pending is not None:
            pending.result()
    bar.close()
    seconds = time.perf_counter() - t0
    return {"shards_made": len(todo), "shards_skipped": len(wanted) - len(todo), "images_made": made_images,
            "seconds": seconds, "images_per_s": made_images / seconds if made_images else 0.0}
