"""What a batch run fits: the items of a folder, a glob or a manifest, each with a stable id.

    items = list_items("photos/")                       # folder, recursive, image extensions
    items = list_items("shoot/*/*.jpg")                  # glob (image extensions only)
    items = list_items("faces.csv")                      # header: image[,landmarks][,id]
    items = list_items("faces.jsonl")                    # {"image": ..., "landmarks": ..., "id": ..., "person": ...}
    items = list_items("people/", group_by="folder")     # one sub-folder per person
    mine = shard(items, 1, 4)                            # every item whose index % 4 == 1

Manifest paths are relative to the manifest's folder. A manifest's ``landmarks`` names the user's
own 68 points for that image (:func:`read_landmarks`: iBUG ``.pts``, ``.json``, ``.npy``); a
malformed landmark file is that item's error (raised when the item is read, not here), so one
bad file never stops a run. A malformed manifest (no ``image`` column, a line that is not JSON)
is the run's error, named by line.

Ids are the image path relative to the input root without its suffix, folders joined by ``__``
and every other unsafe character replaced by ``_``; a repeated id (also up to case, for
case-insensitive file systems) gets ``~2``, ``~3``, ... in input order, so ids are stable as long
as the input listing is.

Groups (several photos of one person, fitted to one identity by :mod:`avatar_jax.batch.groups`):
``group_by="person"`` takes a manifest's optional ``person`` column, ``group_by="folder"`` the
image's folder relative to the input root (images directly in the root are not grouped).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from avatar_jax.io.pts import read_pts

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
GROUP_BY = (None, "person", "folder")
LANDMARK_EXTENSIONS = (".pts", ".json", ".npy")
NUM_LANDMARKS = 68
_MAX_ID_CHARS = 160  # file names stay under the 255-byte limit with suffixes and temp markers


@dataclasses.dataclass(frozen=True)
class Item:
    """One image of a run. ``index`` is its position in the full input (before sharding)."""

    index: int
    id: str
    image: str
    landmarks: str | None = None
    group: str | None = None


def list_items(source: str | os.PathLike, *, exclude: str | os.PathLike | None = None,
               group_by: str | None = None) -> list[Item]:
    """The items of a folder (recursive), a glob pattern or a ``.csv`` / ``.jsonl`` manifest.

    ``exclude``: a folder whose files are never items (the run's output folder, so a rerun does
    not fit its own exported textures). ``group_by``: None, ``"person"`` or ``"folder"`` (module
    docstring). Raises ValueError naming the problem when ``source`` is none of these or a
    manifest is malformed.
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    items, root = _list(source, exclude)
    if group_by == "person" and not any(it.group for it in items):
        raise ValueError(f"fit-batch: --group-by person needs a manifest with a 'person' column; "
                         f"{os.fspath(source)} has none")
    if group_by == "folder":
        return [dataclasses.replace(it, group=_folder_of(Path(it.image), root)) for it in items]
    return items if group_by == "person" else [dataclasses.replace(it, group=None) for it in items]


def _folder_of(image: Path, root: Path) -> str | None:
    folder = Path(_relative_stem(image, root)).parent.as_posix()
    return None if folder == "." else folder


def _list(source, exclude) -> tuple[list[Item], Path]:
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        rows = [(str(p), None, None, None) for p in _images_under(path, exclude)]
        return _with_ids(rows, root=path), path
    if path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
        return _with_ids(_read_manifest(path), root=path.parent), path.parent
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return _with_ids([(str(path), None, None, None)], root=path.parent), path.parent
    if glob.has_magic(text):
        files = [p for p in sorted(glob.glob(text, recursive=True)) if _is_image(Path(p), exclude)]
        if not files:
            raise ValueError(f"fit-batch: the pattern {text!r} matches no image files "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        return _with_ids([(p, None, None, None) for p in files], root=_glob_root(text)), _glob_root(text)
    if path.is_file():
        raise ValueError(f"fit-batch: {text} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a "
                         f"manifest ({', '.join(MANIFEST_EXTENSIONS)})")
    raise ValueError(f"fit-batch: input {text!r} not found (expected a folder, a glob pattern, or a "
                     f".csv / .jsonl manifest)")


def shard(items: Sequence[Item], index: int, count: int) -> list[Item]:
    """Every item whose input index % ``count`` == ``index`` (one slice per process or host);
    grouped items by their group's order of first appearance instead, so a group stays whole."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    ordinal: dict[str, int] = {}
    for it in items:
        if it.group is not None:
            ordinal.setdefault(it.group, len(ordinal))
    key = lambda it: it.index if it.group is None else ordinal[it.group]  # noqa: E731
    return [it for it in items if key(it) % count == index]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; ValueError naming the problem otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def read_landmarks(path: str | os.PathLike, pts_index_base: int = 1) -> np.ndarray:
    """The user's 68 landmarks ``[68, 2]`` float32 (0-based pixels; NaN = missing point).

    ``.pts`` (iBUG; ``pts_index_base`` 1 for iBUG/300-W files, 0 for dlib's), ``.json`` (a
    ``[68, 2]`` list, or an object with key ``"landmarks"``; ``null`` marks a missing point or
    coordinate), ``.npy`` (``[68, 2]``). Raises ValueError naming the file and the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LANDMARK_EXTENSIONS:
        raise ValueError(f"{path}: unknown landmark format {suffix!r}; expected one of {LANDMARK_EXTENSIONS}")
    if not path.is_file():
        raise ValueError(f"{path}: landmark file not found")
    try:
        if suffix == ".pts":
            points = read_pts(path, pts_index_base)
        elif suffix == ".json":
            points = _json_points(path)
        else:
            points = np.load(path, allow_pickle=False)
    except ValueError:
        raise
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable landmark file ({type(err).__name__}: {err})") from None
    return _checked_points(path, points)


def _json_points(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict):
        if "landmarks" not in data:
            raise ValueError(f"{path}: a JSON object needs the key 'landmarks' (a [68, 2] list)")
        data = data["landmarks"]
    try:
        return np.array(data, dtype=np.float64)  # None -> nan
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'landmarks' must be a [68, 2] list of numbers or null") from None


def _checked_points(path: Path, points) -> np.ndarray:
    points = np.asarray(points)
    if points.dtype.kind not in "fiu":
        raise ValueError(f"{path}: landmarks must be numbers, got dtype {points.dtype}")
    if points.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"{path}: landmarks must have shape [{NUM_LANDMARKS}, 2], got {list(points.shape)}")
    points = points.astype(np.float32)
    if np.isinf(points).any():
        raise ValueError(f"{path}: landmarks contain infinite values (use NaN / null for a missing point)")
    # a point with one missing coordinate is a missing point
    return np.where(np.isnan(points).any(axis=1, keepdims=True), np.float32(np.nan), points)


# ----------------------------------------------------------------------------- listing

def _is_image(path: Path, exclude) -> bool:
    if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
        return False
    return exclude is None or not _inside(path, Path(exclude))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _images_under(folder: Path, exclude) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        if exclude is not None and _inside(Path(root), Path(exclude)):
            dirs[:] = []
            continue
        files += [Path(root) / n for n in names if _is_image(Path(root) / n, exclude)]
    if not files:
        raise ValueError(f"fit-batch: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())  # by relative path, as a listing


def _glob_root(pattern: str) -> Path:
    """The pattern's longest leading folder without wildcards (ids are relative to it)."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _read_manifest(path: Path) -> list[tuple[str, str | None, str | None, str | None]]:
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    if not rows:
        raise ValueError(f"{path}: the manifest lists no images")
    resolve = lambda p: str(p if Path(p).is_absolute() else path.parent / p)
    return [(resolve(img), resolve(lm) if lm else None, ident, person) for img, lm, ident, person in rows]


def _csv_rows(path: Path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "image" not in [n.strip() for n in reader.fieldnames]:
            raise ValueError(f"{path}: a CSV manifest needs a header line with an 'image' column "
                             f"(optional: 'landmarks', 'id', 'person'), got {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row["image"]:
                raise ValueError(f"{path}: line {line}: empty 'image'")
            rows.append((row["image"], row.get("landmarks") or None, row.get("id") or None,
                         row.get("person") or None))
        return rows


def _jsonl_rows(path: Path):
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line}: not valid JSON ({err})") from None
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
                raise ValueError(f"{path}: line {line}: expected an object with a string 'image'")
            for key in ("landmarks", "id", "person"):
                if row.get(key) is not None and not isinstance(row[key], str):
                    raise ValueError(f"{path}: line {line}: '{key}' must be a string")
            rows.append((row["image"], row.get("landmarks") or None, row.get("id") or None,
                         row.get("person") or None))
    return rows


# ----------------------------------------------------------------------------- ids

def _with_ids(rows, root: Path) -> list[Item]:
    taken: set[str] = set()
    items = []
    for index, (image, landmarks, ident, person) in enumerate(rows):
        base = safe_id(ident) if ident else safe_id(_relative_stem(Path(image), root))
        unique, n = base, 1
        while unique.lower() in taken:
            n += 1
            unique = f"{base}~{n}"
        taken.add(unique.lower())
        items.append(Item(index, unique, image, landmarks, person))
    return items


def _relative_stem(image: Path, root: Path) -> str:
    try:
        rel = image.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(*image.resolve().parts[1:])  # outside the root: the absolute path
    return rel.with_suffix("").as_posix()


def safe_id(text: str) -> str:
    """``text`` as one file name: folders joined by ``__``, characters outside ``[A-Za-z0-9._-]``
    replaced by ``_``, no leading dot, long names shortened with a hash of the full text."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in re.split(r"[\\/]+", text) if p not in ("", ".")]
    ident = "__".join(parts).lstrip(".") or "item"
    if ident.startswith("-"):
        ident = "_" + ident  # not mistaken for an option by shell tools
    if len(ident) > _MAX_ID_CHARS:
        digest = hashlib.sha1(text.encode()).hexdigest()[:12]
        ident = f"{ident[:_MAX_ID_CHARS - 13]}-{digest}"
    return ident
