"""Random scene parameters for synthetic renders: pose, field of view, expression, light, background.

Each sampler takes a ``numpy.random.Generator`` and a count and returns plain arrays, so a shard
of a dataset is a pure function of its seed.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import cv2
import numpy as np

from avatar_jax.geometry import camera as cam

BACKGROUNDS = ("plain", "noise", "photo")
DEFAULT_BACKGROUNDS = ("plain", "noise")
PHOTO_BANK = Path(__file__).parent / "data" / "backgrounds"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Ranges of the random scene (degrees, pixels, fractions).

    Attributes:
      image_size: output side (square images).
      yaw_deg, pitch_deg, roll_deg: uniform in ``[-x, x]``.
      log_fs: uniform range of the focal scale's log (field of view around the paper's f = S).
      face_fraction: the jaw width's share of the image width (frontal), uniform.
      shift_fraction: the frame centre's offset from the image centre (share of the side).
      expression_rate: share of images with a random expression (the rest neutral).
      expression_count, expression_max: how many expression shapes, and their largest weight.
      backgrounds: kinds drawn uniformly (:data:`BACKGROUNDS`): ``"plain"`` colours, ``"noise"``
        (smooth clutter, :func:`clutter`) or ``"photo"`` (crops of ``background_photos``).
      background_photos: folder of face-free photos for ``"photo"``; empty = the packaged bank
        (:data:`PHOTO_BANK`, built by ``tools/build_background_bank.py``).
    """

    image_size: int = 256
    yaw_deg: float = 60.0
    pitch_deg: float = 30.0
    roll_deg: float = 15.0
    log_fs: tuple[float, float] = (0.0, 0.7)
    face_fraction: tuple[float, float] = (0.35, 0.6)
    shift_fraction: float = 0.08
    expression_rate: float = 0.5
    expression_count: tuple[int, int] = (1, 4)
    expression_max: float = 0.8
    backgrounds: tuple[str, ...] = DEFAULT_BACKGROUNDS
    background_photos: str = ""

    def __post_init__(self):
        if self.image_size < 32:
            raise ValueError(f"SceneConfig: image_size must be >= 32, got {self.image_size}")
        unknown = set(self.backgrounds) - set(BACKGROUNDS)
        if unknown or not self.backgrounds:
            raise ValueError(f"SceneConfig: backgrounds must be a non-empty subset of {BACKGROUNDS}, "
                             f"got {self.backgrounds}")
        if "photo" in self.backgrounds:
            background_photos(self.background_photos)  # fails now, not in the middle of a run


# Put at the image centre (plus a shift): a point behind the nose bridge, so that the face stays in
# the frame when the head turns, with the back of the head allowed to leave it.
FRAME_CENTRE_MM = np.array([0.0, 20.0, 80.0])
HEAD_WIDTH_MM = 150.0  # between the jaw's ends (iBUG 0 and 16)


def euler_rotvec(yaw, pitch, roll) -> np.ndarray:
    """Rotation vectors ``[n, 3]`` of ``R = R_y(yaw) R_x(pitch) R_z(roll)`` (radians ``[n]``): roll
    about the view axis first, then pitch, then yaw (scipy's extrinsic "zxy")."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("zxy", np.stack([roll, pitch, yaw], -1)).as_rotvec()


def sample_cameras(rng: np.random.Generator, n: int, config: SceneConfig) -> cam.Camera:
    """``n`` cameras looking at the head from random poses (leading dim ``[n]``)."""
    deg = np.pi / 180.0
    yaw = rng.uniform(-1, 1, n) * config.yaw_deg * deg
    pitch = rng.uniform(-1, 1, n) * config.pitch_deg * deg
    roll = rng.uniform(-1, 1, n) * config.roll_deg * deg
    rotvec = euler_rotvec(yaw, pitch, roll)
    log_fs = rng.uniform(*config.log_fs, n)
    s = config.image_size
    focal_px = np.exp(log_fs) * s
    width_px = rng.uniform(*config.face_fraction, n) * s
    depth = focal_px * HEAD_WIDTH_MM / width_px
    shift = rng.uniform(-1, 1, (n, 2)) * config.shift_fraction * s * depth[:, None] / focal_px[:, None]
    from scipy.spatial.transform import Rotation

    centre_view = Rotation.from_rotvec(rotvec).apply(FRAME_CENTRE_MM)
    translation = np.stack([shift[:, 0], shift[:, 1], -depth], -1) - centre_view
    return cam.camera_from_image_size(np.tile([s, s], (n, 1)), rotvec=rotvec.astype(np.float32),
                                      translation=translation.astype(np.float32), log_fs=log_fs.astype(np.float32))


def sample_expressions(rng: np.random.Generator, n: int, num_expression: int, config: SceneConfig) -> np.ndarray:
    """Expression weights ``[n, Ke]``: sparse, non-negative, zero for the neutral share."""
    weights = np.zeros((n, num_expression), np.float32)
    for i in np.flatnonzero(rng.uniform(size=n) < config.expression_rate):
        k = rng.integers(config.expression_count[0], config.expression_count[1] + 1)
        chosen = rng.choice(num_expression, size=k, replace=False)
        weights[i, chosen] = rng.uniform(0.1, config.expression_max, k)
    return weights


@dataclasses.dataclass(frozen=True)
class LightSample:
    """``sh [n, 9, 3]``, ``specular [n]``, ``shininess [n]``, ``light_dir [n, 3]`` (view space)."""

    sh: np.ndarray
    specular: np.ndarray
    shininess: np.ndarray
    light_dir: np.ndarray


def sample_lights(rng: np.random.Generator, n: int) -> LightSample:
    """A key light from the front hemisphere, a tinted ambient and a little random band-2 light."""
    from avatar_jax.render.scene import directional_sh

    direction = np.stack([rng.uniform(-0.8, 0.8, n), rng.uniform(-0.3, 0.8, n), np.ones(n)], -1)
    tint = 1.0 + rng.normal(0, 0.05, (n, 3))
    key = rng.uniform(0.35, 0.8, n)[:, None] * tint
    ambient = rng.uniform(0.25, 0.6, n)[:, None] * (1.0 + rng.normal(0, 0.03, (n, 3)))
    sh = np.array(directional_sh(direction, key, ambient), np.float32)
    sh[:, 4:] += rng.normal(0, 0.03, (n, 5, 1)).astype(np.float32)
    return LightSample(sh, rng.uniform(0.0, 0.15, n).astype(np.float32),
                       rng.uniform(5.0, 40.0, n).astype(np.float32), direction.astype(np.float32))


def sample_backgrounds(rng: np.random.Generator, n: int, size: int, kinds=DEFAULT_BACKGROUNDS,
                       photos: str = "") -> np.ndarray:
    """Backgrounds ``[n, S, S, 3]`` uint8 of random ``kinds``: plain colours, smooth clutter (no
    face-like structure) or crops of the photos in folder ``photos`` (empty: the packaged bank)."""
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        kind = kinds[rng.integers(len(kinds))]
        if kind == "plain":
            image = rng.uniform(0.05, 0.95, 3) * np.ones((size, size, 3))
        elif kind == "noise":
            image = clutter(rng, size)
        else:
            image = photo_background(rng, size, background_photos(photos))
        out[i] = np.round(np.clip(image, 0, 1) * 255)
    return out


@functools.lru_cache(maxsize=4)
def background_photos(folder: str = "") -> tuple[np.ndarray, ...]:
    """The RGB uint8 photos of ``folder`` (empty: :data:`PHOTO_BANK`), sorted by file name.

    Raises:
      ValueError: the folder does not exist or holds no .jpg/.jpeg/.png file.
    """
    from avatar_jax.io.image import load_image

    path = Path(folder) if folder else PHOTO_BANK
    if not path.is_dir():
        raise ValueError(f"background photos: {path} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise ValueError(f"background photos: no {'/'.join(PHOTO_SUFFIXES)} file in {path}")
    return tuple(load_image(f) for f in files)


def photo_background(rng: np.random.Generator, size: int, photos) -> np.ndarray:
    """``[S, S, 3]`` float: a random square crop (half the photo's short side or more) of one of
    ``photos``, maybe mirrored, defocused as behind a subject and tinted by a random exposure."""
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(round(min(h, w) * rng.uniform(0.5, 1.0)))
    y0, x0 = rng.integers(h - side + 1), rng.integers(w - side + 1)
    crop = photo[y0:y0 + side, x0:x0 + side]
    crop = crop[:, ::-1] if rng.uniform() < 0.5 else crop
    shrink = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    image = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=shrink).astype(np.float32) / 255.0
    sigma = rng.uniform(0.0, 2.5) * size / 256
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return image * rng.uniform(0.7, 1.15) * (1.0 + rng.normal(0.0, 0.04, 3))


def clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[S, S, 3]`` float: a gradient between two random colours plus blurred blobs."""
    top, bottom = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    cells = max(size // 8, 2)
    noise = rng.normal(0.0, 1.0, (cells, cells, 1)) + 0.3 * rng.normal(0.0, 1.0, (cells, cells, 3))
    blobs = cv2.GaussianBlur(noise.astype(np.float32), (0, 0), 2.0)
    blobs = 0.15 * blobs / max(float(blobs.std()), 1e-6)  # mostly brightness, a little colour
    return (1.0 - t) * top + t * bottom + cv2.resize(blobs, (size, size), interpolation=cv2.INTER_CUBIC)
