"""Load the head model asset (``data/head_<variant>.npz``) into a :class:`HeadModel`."""

from __future__ import annotations

import functools
import zipfile
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .head import HeadModel

FORMAT_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
_FLOAT_FIELDS = ("neutral", "uvs", "identity_basis", "identity_sigma", "expression_basis",
                 "expression_sigma", "landmark_bary", "vertex_weights", "lap_vals")
_INT_FIELDS = ("triangles", "triangle_uvs", "landmark_faces", "contour_candidates", "nose_tip",
               "lap_rows", "lap_cols")
REQUIRED_KEYS = ("format_version", "variant", "expression_names", "face_mask") + _FLOAT_FIELDS + _INT_FIELDS


class HeadModelError(ValueError):
    """The head model file is missing, unreadable, of another format version, or inconsistent."""


def default_path(variant: str) -> Path:
    return DATA_DIR / f"head_{variant}.npz"


def load_head_model(variant: str = "lowpoly", path: str | Path | None = None,
                    dtype=jnp.float32) -> HeadModel:
    """Load (once; cached per (variant, path, dtype)) the head model.

    Args:
      variant: "lowpoly" (committed, ~3k vertices) or "full" (11248 vertices; build it with
        ``tools/build_head_model.py --variant full`` and pass ``path``). Checked against the
        file only when ``path`` is None.
      path: an ``.npz`` written by ``tools/build_head_model.py``; default ``data/head_<variant>.npz``.
      dtype: float dtype of the float fields (int fields are int32, ``face_mask`` bool).

    Raises:
      HeadModelError: naming the file and the problem.
    """
    resolved = Path(path).expanduser().resolve() if path is not None else default_path(variant)
    return _load_cached(variant, resolved, path is None, jnp.dtype(dtype))


@functools.lru_cache(maxsize=8)
def _load_cached(variant: str, path: Path, check_variant: bool, dtype) -> HeadModel:
    arrays = _read_npz(path)
    _validate(arrays, path, variant if check_variant else None)
    fields = {k: jnp.asarray(arrays[k], dtype) for k in _FLOAT_FIELDS}
    fields.update({k: jnp.asarray(arrays[k], jnp.int32) for k in _INT_FIELDS})
    fields["face_mask"] = jnp.asarray(arrays["face_mask"], bool)
    names = tuple(str(n) for n in arrays["expression_names"])
    return HeadModel(expression_names=names, **fields)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        hint = (" (build it with: python tools/build_head_model.py --src ../shared/assets/"
                "ict_facekit --variant full --out <file>, then pass path=<file>)"
                if "full" in path.name else "")
        raise HeadModelError(f"head model file not found: {path}{hint}")
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"]) if "format_version" in z.files else None
            if version != FORMAT_VERSION:
                raise HeadModelError(f"{path}: format_version {version}, expected {FORMAT_VERSION}")
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise HeadModelError(f"{path}: missing keys {missing}")
            return {k: z[k] for k in REQUIRED_KEYS}
    except HeadModelError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        raise HeadModelError(f"{path}: not a readable head model npz ({type(e).__name__}: {e})") from e


def _validate(a: dict[str, np.ndarray], path: Path, variant: str | None) -> None:
    def fail(msg: str):
        raise HeadModelError(f"{path}: {msg}")

    if variant is not None and str(a["variant"]) != variant:
        fail(f"variant {str(a['variant'])!r}, expected {variant!r}")
    nv = a["neutral"].shape[0]
    expect = {
        "neutral": (nv, 3), "vertex_weights": (nv,), "face_mask": (nv,),
        "landmark_faces": (68, 3), "landmark_bary": (68, 3), "nose_tip": (),
    }
    for k, shape in expect.items():
        if a[k].shape != shape:
            fail(f"{k} has shape {a[k].shape}, expected {shape}")
    for k in ("identity_basis", "expression_basis"):
        if a[k].ndim != 3 or a[k].shape[1:] != (nv, 3):
            fail(f"{k} has shape {a[k].shape}, expected [K, {nv}, 3]")
    for k, basis in (("identity_sigma", "identity_basis"), ("expression_sigma", "expression_basis")):
        if a[k].shape != (a[basis].shape[0],):
            fail(f"{k} has shape {a[k].shape}, expected ({a[basis].shape[0]},)")
    if a["expression_names"].shape != (a["expression_basis"].shape[0],):
        fail(f"expression_names has shape {a['expression_names'].shape}")
    if a["triangles"].ndim != 2 or a["triangles"].shape[1] != 3 \
            or a["triangle_uvs"].shape != a["triangles"].shape:
        fail(f"triangles {a['triangles'].shape} / triangle_uvs {a['triangle_uvs'].shape} must be [F, 3]")
    if a["contour_candidates"].ndim != 2 or a["contour_candidates"].shape[0] != 17:
        fail(f"contour_candidates has shape {a['contour_candidates'].shape}, expected [17, C]")
    if not (a["lap_rows"].shape == a["lap_cols"].shape == a["lap_vals"].shape):
        fail("lap_rows, lap_cols, lap_vals differ in length")
    for k in ("triangles", "landmark_faces", "contour_candidates", "nose_tip", "lap_rows", "lap_cols"):
        if a[k].size and (a[k].min() < 0 or a[k].max() >= nv):
            fail(f"{k} has vertex ids outside [0, {nv})")
    if a["triangle_uvs"].min() < 0 or a["triangle_uvs"].max() >= a["uvs"].shape[0]:
        fail(f"triangle_uvs has ids outside [0, {a['uvs'].shape[0]})")
