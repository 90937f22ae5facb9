"""Streaming batch fitting: decode + detect on a worker pool, fit in fixed padded batches.

    report = fit_batch("photos/", "out/", BatchConfig(batch_size=64, workers=2))

The pipeline, per run:

1. the worker pool (``workers`` threads, one MediaPipe pipeline each: its LiteRT interpreters
   are not safe to share) decodes each image and detects its largest face, or reads the user's
   landmark file (then only the image header is read, for its size, unless an export needs the
   pixels);
2. the main thread takes the prepared items in input order and groups those with landmarks into
   batches of exactly ``batch_size`` (the last one padded with NaN landmarks), so
   :func:`avatar_jax.fit.fit` compiles once and an item's fit does not depend on which items
   share its batch or where it sits in it -- which makes a resumed or sharded run give the same
   arrays as one uninterrupted run;
3. a writer thread commits each batch as one group (:func:`avatar_jax.batch.store.write_items`),
   or with exports each item (:func:`~avatar_jax.batch.store.write_item`), while the next batch
   is fitted.

At most ``window`` items (default 2 x batch size) are in flight -- submitted to the pool and not
yet committed -- so memory does not grow with the input. An item that cannot be decoded, has no
face, has a malformed landmark file or a failed fit is committed with its status and never
touches the others.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np
from PIL import Image

from avatar_jax import pipeline
from avatar_jax._devices import check_devices
from avatar_jax.batch import store as st
from avatar_jax.batch.inputs import NUM_LANDMARKS, Item, read_landmarks
from avatar_jax.fit import FitConfig, FitResult, fit
from avatar_jax.io.image import ImageLoadError, load_image
from avatar_jax.landmarks.api import FaceLandmarks, detect_faces
from avatar_jax.landmarks.mediapipe import FaceMeshPipeline
from avatar_jax.model import HeadModel, arkit, load_head_model
from avatar_jax.regress import load_regressor
from avatar_jax.status import Status


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Settings of a batch run.

    ``batch_size``, ``fit``, ``backend``, ``route``, ``pts_index_base``, ``exports`` and
    ``texture_size`` decide the results and are stored in ``DIR/run.json``: a resume must use
    the same. ``workers`` and ``window`` (items in flight, default ``2 * batch_size``, at least
    ``batch_size``) only change speed and memory. ``devices``: how many local devices each batch
    is sharded over (None: all of them); stored too, as float rounding differs with the split.
    """

    batch_size: int = 64
    workers: int = 2
    window: int | None = None
    fit: FitConfig = FitConfig()
    backend: str = "mediapipe"
    route: str = "refined"
    pts_index_base: int = 1
    exports: tuple[str, ...] = ()
    texture_size: int = 1024
    blendshape_names: str = "arkit"
    shape_source: str = "landmarks"
    regressor: str | None = None
    landmarks_on_head: str = "calibrated"
    devices: int | None = None

    def __post_init__(self):
        if self.devices is not None and (not isinstance(self.devices, int) or self.devices < 1):
            raise ValueError(f"devices must be a positive int or None (all local devices), got {self.devices!r}")
        if self.landmarks_on_head not in pipeline.LANDMARKS_ON_HEAD:
            raise ValueError(f"landmarks_on_head must be one of {pipeline.LANDMARKS_ON_HEAD}, "
                             f"got {self.landmarks_on_head!r}")
        if self.shape_source not in pipeline.SHAPE_SOURCES:
            raise ValueError(f"shape_source must be one of {pipeline.SHAPE_SOURCES}, got {self.shape_source!r}")
        if self.regressor is not None and self.shape_source != "regressor":
            raise ValueError("a regressor file goes with shape_source 'regressor' only")
        if self.shape_source != "landmarks" and self.backend != "mediapipe":
            raise ValueError(f"shape_source {self.shape_source!r} reads MediaPipe's mesh: use the mediapipe backend")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.window is not None and self.window < self.batch_size:
            raise ValueError(f"window ({self.window}) must be >= batch_size ({self.batch_size}): "
                             "a batch is fitted once it is full")
        unknown = set(self.exports) - set(pipeline.FORMATS)
        if unknown:
            raise ValueError(f"unknown export formats {sorted(unknown)}; expected some of {pipeline.FORMATS}")
        if not 16 <= self.texture_size <= 8192:
            raise ValueError(f"texture_size must be in [16, 8192], got {self.texture_size}")
        if self.blendshape_names not in arkit.NAMINGS:
            raise ValueError(f"blendshape_names must be one of {arkit.NAMINGS}, got {self.blendshape_names!r}")
        if self.pts_index_base not in (0, 1):
            raise ValueError(f"pts_index_base must be 0 or 1, got {self.pts_index_base}")

    @property
    def in_flight(self) -> int:
        return self.window if self.window is not None else 2 * self.batch_size

    def local_devices(self) -> tuple:
        """The devices each batch is sharded over."""
        local = jax.local_devices()
        if self.devices is not None and self.devices > len(local):
            raise ValueError(f"devices: {self.devices} requested, this process has {len(local)} local devices")
        return check_devices(local[:self.devices] if self.devices is not None else local)

    def _regressor_digest(self) -> str | None:
        """The sha256 of the regressor file in use (a resume must use the same weights)."""
        if self.shape_source != "regressor":
            return None
        import hashlib

        from avatar_jax.regress import DEFAULT_REGRESSOR

        path = Path(self.regressor) if self.regressor is not None else DEFAULT_REGRESSOR
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            raise ValueError(f"regressor: cannot read {path}: {err}") from err

    def settings(self) -> dict:
        """The result-deciding settings, JSON-ready (stored in run.json)."""
        return {"batch_size": self.batch_size, "fit": repr(self.fit), "backend": self.backend,
                "route": self.route, "pts_index_base": self.pts_index_base, "exports": sorted(self.exports),
                "texture_size": self.texture_size if self.exports else None,
                "blendshape_names": self.blendshape_names if "glb" in self.exports else None,
                "shape_source": self.shape_source, "regressor_sha256": self._regressor_digest(),
                "landmarks_on_head": self.landmarks_on_head,
                "platform": jax.default_backend(), "devices": len(self.local_devices())}


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """What one :func:`fit_batch` call did. ``max_in_flight`` is the most items that were ever
    submitted and not yet committed at once (never above ``window``)."""

    out_dir: Path
    processed: int
    skipped: int
    counts: dict
    batches: int
    window: int
    max_in_flight: int
    wall_s: float
    summary: dict


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """One item after the worker: landmarks ``[68, 2]`` when it can be fitted."""

    item: Item
    status: Status
    message: str = ""
    landmarks: np.ndarray | None = None
    image_size: tuple[int, int] | None = None  # (height, width)
    image: np.ndarray | None = None  # kept only when an export or the shape source needs the pixels
    face: dict | None = None
    detection: FaceLandmarks | None = None  # kept only for a shape source other than the landmarks
    timings: dict = dataclasses.field(default_factory=dict)


def fit_batch(items: Sequence[Item], out_dir: str | os.PathLike, config: BatchConfig = BatchConfig(), *,
              all_items: Sequence[Item] | None = None, model: HeadModel | None = None,
              progress: Callable[[int], object] | None = None) -> BatchReport:
    """Fit every item not yet committed in ``out_dir``; rebuild results.jsonl and summary.json.

    Args:
      items: this process's items (:func:`avatar_jax.batch.inputs.list_items`, perhaps
        :func:`~avatar_jax.batch.inputs.shard`-ed).
      all_items: the full input, when ``items`` is a shard: results.jsonl lists every committed
        record of it in input order (default: ``items``).
      progress: ``progress(total)`` -> an object with ``update(n)`` (e.g. a tqdm bar) and
        optionally ``close()``; called once, with the number of items left to do.

    Raises:
      avatar_jax.batch.store.SettingsMismatch: ``out_dir`` was started with other settings.
    """
    t0 = time.perf_counter()
    model = model or load_head_model()
    settings = config.settings()
    store = st.open_store(out_dir, settings)
    done = st.done_ids(store, items)
    todo = [it for it in items if it.id not in done]
    bar = progress(len(todo)) if progress else None
    try:
        stats = _Streamer(config, store, model, bar).run(todo)
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()
    wall = time.perf_counter() - t0
    this_run = {"processed": len(todo), "skipped": len(done), "wall_s": wall,
                "images_per_s": len(todo) / wall if wall > 0 else None, "batches": stats["batches"],
                "compile_s": stats["compile_s"], "workers": config.workers, "window": config.in_flight}
    summary = st.rebuild_results(store, all_items if all_items is not None else items, this_run, settings)
    return BatchReport(store.root, len(todo), len(done), stats["counts"], stats["batches"], config.in_flight,
                       stats["max_in_flight"], wall, summary)


class _Streamer:
    """The run's moving parts: worker pool, in-order batching, writer thread, in-flight bound."""

    def __init__(self, config: BatchConfig, store: st.Store, model: HeadModel, bar):
        self.config, self.store, self.model, self.bar = config, store, model, bar
        devices = config.local_devices()
        self.devices = devices if len(devices) > 1 else None
        self.regressor = load_regressor(config.regressor) if config.shape_source == "regressor" else None
        # A dlib-reading regressor needs the photo itself beside the detected points.
        self.keep_image = bool(config.exports) or (self.regressor is not None and self.regressor.encoder != "mesh")
        self.local = threading.local()
        self.cond = threading.Condition()
        self.in_flight = self.max_in_flight = self.batches = 0
        self.compile_s = 0.0
        self.counts: dict[str, int] = {}
        self.errors: list[BaseException] = []

    def run(self, todo: Sequence[Item]) -> dict:
        if not todo:
            return {"counts": {}, "batches": 0, "max_in_flight": 0, "compile_s": 0.0}
        size = self.config.batch_size
        pending = collections.deque(todo)
        futures: collections.deque[Future] = collections.deque()
        batch: list[_Prepared] = []
        writers = max(1, self.config.workers) if self.config.exports else 1
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="fit-batch-prepare") as pool, \
                ThreadPoolExecutor(writers, thread_name_prefix="fit-batch-write") as writer:
            self._admit(pool, pending, futures)
            self._warm_up()  # compiles while the workers decode the first window
            while pending or futures:
                self._admit(pool, pending, futures)
                prepared = futures.popleft().result()
                if prepared.landmarks is None:
                    writer.submit(self._commit_failed, prepared)
                else:
                    batch.append(prepared)
                if len(batch) == size or (batch and not pending and not futures):
                    fitted = [(p, r, base) for p, (r, base) in zip(batch, self._fit(batch))]
                    if self.config.exports:  # each item's export is its own commit (seconds each)
                        for item in fitted:
                            writer.submit(self._commit_fit, *item)
                    else:
                        writer.submit(self._commit_batch, fitted)
                    batch = []
                self._raise_writer_errors()
        self._raise_writer_errors()
        return {"counts": self.counts, "batches": self.batches, "max_in_flight": self.max_in_flight,
                "compile_s": self.compile_s}

    # --- the in-flight bound

    def _admit(self, pool, pending, futures) -> None:
        """Submit items while fewer than ``window`` are in flight; with nothing submitted to wait
        on, wait for the writer to commit some first."""
        limit = self.config.in_flight
        with self.cond:
            if not futures:
                self.cond.wait_for(lambda: self.in_flight < limit or bool(self.errors))
            while pending and self.in_flight < limit:
                futures.append(pool.submit(self._prepare, pending.popleft()))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _release(self, status: Status) -> None:
        with self.cond:
            self.in_flight -= 1
            self.counts[status.label] = self.counts.get(status.label, 0) + 1
            self.cond.notify_all()
        if self.bar is not None:
            self.bar.update(1)

    def _raise_writer_errors(self) -> None:
        if self.errors:
            raise self.errors[0]

    # --- stage 1 (workers): pixels / size and landmarks

    def _prepare(self, item: Item) -> _Prepared:
        try:
            if item.landmarks is not None:
                return self._prepare_user_landmarks(item)
            return self._prepare_detected(item)
        except ImageLoadError as err:
            return _Prepared(item, Status.UNREADABLE, str(err))

    def _prepare_user_landmarks(self, item: Item) -> _Prepared:
        if self.config.shape_source != "landmarks":
            return _Prepared(item, Status.FAILED, f"{item.image}: shape source {self.config.shape_source!r} needs "
                                                  "a detected face (MediaPipe's mesh), not a landmark file")
        timings = {}
        t = time.perf_counter()
        try:
            points = read_landmarks(item.landmarks, self.config.pts_index_base)
        except ValueError as err:
            return _Prepared(item, Status.UNREADABLE, f"{item.image}: landmarks: {err}")
        timings["landmarks_s"] = time.perf_counter() - t
        t = time.perf_counter()
        image = load_image(item.image) if self.config.exports else None
        size = image.shape[:2] if image is not None else image_size(item.image)
        timings["decode_s"] = time.perf_counter() - t
        return _Prepared(item, Status.OK, landmarks=points, image_size=tuple(size), image=image, timings=timings)

    def _prepare_detected(self, item: Item) -> _Prepared:
        t = time.perf_counter()
        image = load_image(item.image)
        timings = {"decode_s": time.perf_counter() - t}
        t = time.perf_counter()
        try:
            faces = self._detect(image)
        except (ValueError, RuntimeError) as err:  # keep the run going
            return _Prepared(item, Status.FAILED, f"{item.image}: detection failed: {type(err).__name__}: {err}",
                             timings=timings)
        timings["detect_s"] = time.perf_counter() - t
        if not faces:
            return _Prepared(item, Status.NO_FACE, f"{item.image}: no face found", timings=timings)
        face = faces[0]
        info = {"box": np.asarray(face.box).tolist(), "score": float(face.score), "backend": face.backend}
        return _Prepared(item, Status.OK, landmarks=np.asarray(face.landmarks68, np.float32),
                         image_size=tuple(image.shape[:2]), image=image if self.keep_image else None,
                         face=info, timings=timings,
                         detection=face if self.config.shape_source != "landmarks" else None)

    def _detect(self, image: np.ndarray):
        """The largest face, with this worker thread's own MediaPipe pipeline."""
        route = pipeline.FITTED_ROUTES.get(self.config.route, self.config.route)
        if self.config.backend != "mediapipe":
            return detect_faces(image, backend=self.config.backend, max_faces=1)
        if not hasattr(self.local, "detector"):
            self.local.detector = FaceMeshPipeline(num_threads=1)
        return detect_faces(image, backend="mediapipe", max_faces=1, route=route, small_faces=None,
                            pipeline=self.local.detector)

    # --- stage 2 (main thread): one fit per batch

    def _warm_up(self) -> None:
        """Fit one all-NaN batch, so the compile is not charged to the first batch's items."""
        t = time.perf_counter()
        size = self.config.batch_size
        fit(np.full((size, NUM_LANDMARKS, 2), np.nan, np.float32), np.ones((size, 2), np.float32),
            self._padded_bases([], size), config=self.config.fit, model=self.model, landmark_set=self._landmark_set(),
            devices=self.devices)
        self.compile_s = time.perf_counter() - t

    def _fit(self, batch: list[_Prepared]) -> list[tuple[FitResult, np.ndarray | None]]:
        """The batch's fits, each with its base shape ``[V, 3]`` (None for the landmarks source)."""
        landmarks, sizes = padded_batch([p.landmarks for p in batch], [p.image_size for p in batch],
                                        self.config.batch_size)
        t = time.perf_counter()
        bases = self._padded_bases(batch, self.config.batch_size)
        result = jax.tree.map(np.asarray, fit(landmarks, sizes, bases, config=self.config.fit, model=self.model,
                                              landmark_set=self._landmark_set(), devices=self.devices))
        share = (time.perf_counter() - t) / len(batch)
        self.batches += 1
        for p in batch:
            p.timings["fit_s"] = share
        return [(pipeline.face_fit(result, i), None if bases is None else bases[i]) for i in range(len(batch))]

    def _landmark_set(self):
        return pipeline.head_landmark_set(self.model, self.config.landmarks_on_head)

    def _padded_bases(self, batch: list[_Prepared], size: int) -> np.ndarray | None:
        """Base shapes ``[size, V, 3]`` of the batch's faces (the mean head in the padding), or None
        for the landmarks source. A face the source cannot read gets NaN: only its own fit fails."""
        if self.config.shape_source == "landmarks":
            return None
        bases = np.broadcast_to(np.asarray(self.model.neutral, np.float32), (size,) + self.model.neutral.shape).copy()
        images = [p.image if p.image is not None else np.zeros(p.image_size + (3,), np.uint8) for p in batch]
        faces = [p.detection for p in batch]
        try:
            bases[:len(batch)] = self._bases(images, faces)
        except ValueError:  # one unreadable face: find it, so that the others keep their shapes
            for i in range(len(batch)):
                try:
                    bases[i] = self._bases(images[i:i + 1], faces[i:i + 1])[0]
                except ValueError:
                    bases[i] = np.nan
        return bases

    def _bases(self, images, faces) -> np.ndarray:
        if not faces:
            return np.zeros((0,) + self.model.neutral.shape, np.float32)
        return pipeline.batch_base_shapes(images, faces, self.config.shape_source, regressor=self.regressor,
                                          model=self.model)

    # --- stage 3 (writer): commit

    def _commit_failed(self, p: _Prepared) -> None:
        self._guarded(lambda: st.write_item(self.store, p.item.id, {"status": np.int32(p.status)},
                                            lambda: _record(p, p.status, p.message, None)))

    def _fit_outcome(self, p: _Prepared, result: FitResult, base: np.ndarray | None) -> tuple[dict, Status, str]:
        """The item's npz arrays, record status and message after its fit."""
        arrays = item_arrays(result, p.landmarks, p.image_size, self.model, base)
        fit_status = Status.of(result.status)
        if fit_status == Status.OK:
            return arrays, Status.OK, ""
        arrays["status"] = np.int32(Status.FIT_FAILED)
        return arrays, Status.FIT_FAILED, f"{p.item.image}: fit failed ({fit_status.label}: {fit_status.message})"

    def _commit_batch(self, fitted: list[tuple[_Prepared, FitResult, np.ndarray | None]]) -> None:
        """Commit a batch's fits (no exports) as one group, :func:`avatar_jax.batch.store.write_items`."""
        def write():
            entries = []
            for p, result, base in fitted:
                arrays, status, message = self._fit_outcome(p, result, base)
                entries.append((p.item.id, arrays, _record(p, status, message, result)))
            return st.write_items(self.store, entries)

        self._guarded(write, len(fitted))

    def _commit_fit(self, p: _Prepared, result: FitResult, base: np.ndarray | None = None) -> None:
        """Commit one fit with its exports (a batch without exports goes by :meth:`_commit_batch`)."""
        arrays, status, message = self._fit_outcome(p, result, base)
        if status != Status.OK:
            return self._guarded(lambda: st.write_item(self.store, p.item.id, arrays,
                                                       lambda: _record(p, status, message, result)))
        export = self._exporter(p, result)

        def write():
            try:
                return st.write_item(self.store, p.item.id, arrays, lambda: _record(p, Status.OK, "", result),
                                     export)
            except (ValueError, RuntimeError, OSError) as err:  # an export error marks this item only
                arrays["status"] = np.int32(Status.FAILED)
                message = f"{p.item.image}: export failed: {type(err).__name__}: {err}"
                return st.write_item(self.store, p.item.id, arrays,
                                     lambda: _record(p, Status.FAILED, message, result))

        self._guarded(write)

    def _exporter(self, p: _Prepared, result: FitResult):
        def export(stem: Path):
            t = time.perf_counter()
            avatar = pipeline.texture_avatar(p.image, result, model=self.model, texture_size=self.config.texture_size)
            p.timings["texture_s"] = time.perf_counter() - t
            t = time.perf_counter()
            files = pipeline.export_avatar(avatar, stem, self.config.exports,
                                           blendshape_names=self.config.blendshape_names)
            p.timings["export_s"] = time.perf_counter() - t
            return files
        return export

    def _guarded(self, write, count: int = 1) -> None:
        """Run one commit of ``count`` items (``write()`` returns the record, or the list of
        records); an error that is not an item's own (disk full) stops the run."""
        statuses = [Status.FAILED] * count
        try:
            records = write()
            statuses = [Status.from_label(r["status"]) for r in (records if isinstance(records, list) else [records])]
        except BaseException as err:  # re-raised on the main thread
            with self.cond:
                self.errors.append(err)
                self.cond.notify_all()
        for status in statuses:
            self._release(status)


def padded_batch(landmarks: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], batch_size: int):
    """``([batch_size, 68, 2], [batch_size, 2])``: the items, then NaN landmarks (image size of
    the first item) up to ``batch_size``, so every batch has one compiled shape."""
    n = len(landmarks)
    if not 1 <= n <= batch_size:
        raise ValueError(f"padded_batch: need 1..{batch_size} items, got {n}")
    lms = np.full((batch_size, NUM_LANDMARKS, 2), np.nan, np.float32)
    lms[:n] = np.stack(landmarks)
    hw = np.repeat(np.asarray(sizes[:1], np.float32), batch_size, axis=0)
    hw[:n] = np.asarray(sizes, np.float32)
    return lms, hw


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`load_image` returns it (EXIF orientation
    applied), from its header; a file Pillow cannot identify is decoded by :func:`load_image`."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError):
        return tuple(load_image(path).shape[:2])  # raises ImageLoadError when unreadable
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def item_arrays(result: FitResult, landmarks: np.ndarray, size, model: HeadModel, base=None) -> dict:
    """One item's npz arrays (float32 unless noted).

    ``camera_rotvec [3]``, ``camera_translation [3]`` (mm), ``camera_focal_px []``,
    ``camera_log_focal_scale []``, ``camera_principal [2]`` (px), ``identity [Ki]``,
    ``expression [Ke]``, ``corrective [V, 3]`` (mm), ``landmarks2d [68, 2]`` (fitted),
    ``landmarks_input [68, 2]`` (detected or the user's; NaN = missing), ``image_size [2]``
    (h, w), ``reprojection_error []`` (px), ``energy []``, ``energy_<term> []``, ``status []``
    int32 (the record's :class:`Status`), ``fit_status []`` int32 (the fit's own code), and with a
    shape source other than the landmarks ``base_shape [V, 3]`` (mm; the fitted mesh is
    ``base_shape + expression shapes + corrective``, ``identity`` is then zero).
    """
    cam = result.camera
    f32 = lambda a: np.asarray(a, np.float32)
    arrays = {
        "camera_rotvec": f32(cam.rotvec), "camera_translation": f32(cam.translation),
        "camera_focal_px": f32(np.exp(cam.log_fs) * cam.focal), "camera_log_focal_scale": f32(cam.log_fs),
        "camera_principal": f32(cam.principal), "identity": f32(result.identity),
        "expression": f32(result.expression), "corrective": f32(result.corrective),
        "landmarks2d": f32(result.landmarks2d), "landmarks_input": f32(landmarks),
        "image_size": np.asarray(size, np.int32), "reprojection_error": f32(result.reprojection_error),
        "energy": f32(result.energy), "status": np.int32(result.status), "fit_status": np.int32(result.status),
    }
    arrays.update({f"energy_{k}": f32(v) for k, v in result.energy_terms.items()})
    if base is not None:
        arrays["base_shape"] = f32(base)
    return arrays


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _record(p: _Prepared, status: Status, message: str, result: FitResult | None) -> dict:
    return {
        "id": p.item.id, "index": p.item.index, "image": p.item.image, "landmarks": p.item.landmarks,
        "landmark_source": None if p.landmarks is None else ("file" if p.item.landmarks else "detected"),
        "status": status.label, "message": message, "image_size": list(p.image_size) if p.image_size else None,
        "face": p.face, "timings_s": dict(p.timings),
        "reprojection_error_px": None if result is None else _finite_or_none(result.reprojection_error),
    }
