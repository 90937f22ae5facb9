"""``avatar-jax train-regressor --data DIR --encoder mesh|dlib|both --out RUN [--test DIR]``.

Features come from a make-dataset folder (``avatar_jax.io.shards``): ``"mesh"`` reads the
MediaPipe mesh detected on each render (``mesh478``, so the dataset must be made with
``--detect``), ``"dlib"`` runs dlib's descriptor on the render at the *detected* 68 points
(``detected68``: as at inference, not the true ones). The target is each item's neutral
identity shape. Renders where the detector found no face are dropped.

Writes into RUN: ``checkpoints/`` (orbax; a rerun resumes), ``regressor.npz`` (the shippable
decoder with its model card), ``history.json`` and ``loss.png``, and with ``--test`` (another
seed's dataset: identities and skins never seen in training) ``metrics.json``: the held-out face
error of the regressor beside the training mean's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def add_parser(subparsers) -> None:
    """Add the ``train-regressor`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "train-regressor", help="train the shape regressor's decoder on a make-dataset folder",
        description="Train the FC vertex decoder (the paper's 128 -> 200 -> 3V) on frozen encoder features of a "
                    "make-dataset folder; resumable orbax checkpoints, loss curves, held-out evaluation. "
                    "See docs/regress.md.")
    p.add_argument("--data", required=True, help="training dataset folder (avatar-jax make-dataset --detect)")
    p.add_argument("--test", default=None, help="a dataset made with another seed, for the final evaluation")
    p.add_argument("--encoder", default="mesh", choices=["mesh", "dlib", "both"])
    p.add_argument("--mask-eyes", action="store_true",
                   help="the paper's eye masking: the dlib encoder sees both eyes painted over with skin colour")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields (e.g. experiments/regress_*.json)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--no-progress", action="store_true")


def dataset_features(data_dir, encoder: str, template=None, dlib_params=None, mask_eyes: bool = False):
    """``(features [N, D], shapes [N, V, 3], template)`` of a dataset folder for ``encoder``.

    ``template``: the mesh encoder's Procrustes template (None: built from this data).
    ``mask_eyes``: the dlib part sees the eyes painted over (:mod:`avatar_jax.regress.encode`)."""
    import numpy as np

    from avatar_jax.regress import encode as enc
    from avatar_jax.regress.features import mesh_template

    wanted = ["shapes"] + (["mesh478"] if encoder in ("mesh", "both") else []) \
        + (["detected68"] if encoder in ("dlib", "both") else [])
    data = _read(data_dir, wanted)
    parts = []
    if encoder in ("dlib", "both"):
        parts.append(_dlib_descriptors(data_dir, dlib_params, mask_eyes))
    if encoder in ("mesh", "both"):
        if template is None:
            template = mesh_template(data["mesh478"])
        parts.append(enc.encode("mesh", mesh478=data["mesh478"], template=template))
    x = np.concatenate(parts, 1)
    return x, data["shapes"], template


def _read(data_dir, fields) -> dict:
    import numpy as np

    from avatar_jax.io.shards import iter_shards

    parts = {k: [] for k in fields}
    try:
        for shard in iter_shards(data_dir, fields):
            for k in fields:
                parts[k].append(shard[k])
    except KeyError as err:
        raise ValueError(f"{data_dir}: the shards have no {err} (make the dataset with --detect)") from None
    if not parts["shapes"]:
        raise ValueError(f"{data_dir}: no finished shards")
    return {k: np.concatenate(v) for k, v in parts.items()}


def _dlib_descriptors(data_dir, params=None, mask_eyes: bool = False):
    """``[N, 128]`` dlib descriptors at the detected points, cached in ``DIR/.cache/dlib.npz``
    (``dlib_eyemask.npz`` with ``mask_eyes``; the descriptors of a whole dataset take minutes;
    the cache is keyed on the shard files)."""
    import numpy as np

    from avatar_jax.io.shards import read_manifest
    from avatar_jax.regress import encode as enc

    shards = [Path(data_dir) / n for n in read_manifest(data_dir)["shards"]]
    key = json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shards if p.is_file()])
    cache = Path(data_dir) / ".cache" / ("dlib_eyemask.npz" if mask_eyes else "dlib.npz")
    if cache.is_file():
        with np.load(cache) as found:
            if str(found["key"]) == key:
                return found["descriptors"]
    from avatar_jax.io.shards import iter_shards
    from avatar_jax.regress.dlib_resnet import load_dlib_resnet

    params = params if params is not None else load_dlib_resnet()
    descriptors = np.concatenate([  # shard by shard: a whole dataset's images would not fit
        enc.encode("dlib", images=list(s["images"]), landmarks68=s["detected68"], dlib_params=params,
                   mask_eyes=mask_eyes)
        for s in iter_shards(data_dir, ["images", "detected68"])])
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_name(f".dlib.{os.getpid()}.tmp.npz")
    np.savez(tmp, key=np.array(key), descriptors=descriptors)
    os.replace(tmp, cache)
    return descriptors


def run(args) -> int:
    """Run ``train-regressor`` from parsed arguments; returns the exit status."""
    try:
        config = _config(args)
        summary = train(args.data, args.encoder, args.out, config, test=args.test, progress=not args.no_progress,
                        mask_eyes=args.mask_eyes)
    except ValueError as err:
        print(f"avatar-jax train-regressor: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(summary))
    return 0


def _config(args):
    from avatar_jax.regress.train import TrainConfig

    fields = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config: no such file {path}")
        fields = json.loads(path.read_text())
        unknown = set(fields) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"--config {path}: unknown TrainConfig fields {sorted(unknown)}")
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    return TrainConfig(**fields)


def train(data, encoder: str, out, config, *, test=None, progress: bool = True, mask_eyes: bool = False) -> dict:
    """Train on ``data``, write the run folder ``out`` (see the module docstring), return a summary.
    ``mask_eyes``: the dlib part sees the eyes painted over, here and wherever the regressor runs."""
    import numpy as np
    from tqdm import tqdm

    from avatar_jax.model import load_head_model
    from avatar_jax.regress.train import save_regressor, train_regressor

    out = Path(out)
    model = load_head_model()
    if mask_eyes and encoder == "mesh":
        raise ValueError("mask_eyes is for the dlib part of the encoder; 'mesh' sees no image")
    x, shapes, template = dataset_features(data, encoder, mask_eyes=mask_eyes)
    extras = ({"template": template} if template is not None else {}) | ({"mask_eyes": True} if mask_eyes else {})
    bar = (lambda epochs: tqdm(epochs, desc="train-regressor", unit="epoch")) if progress else None
    regressor, history = train_regressor(x, shapes, model, config, encoder=encoder, extras=extras,
                                         out_dir=out, progress=bar)
    summary = {"encoder": encoder, "mask_eyes": mask_eyes, "items": int(np.all(np.isfinite(x), 1).sum()),
               "epochs": config.epochs,
               "chosen_epoch": history.chosen_epoch,
               "held_out_face_mm": history.held_out_face_mm[history.chosen_epoch - 1] if history.chosen_epoch else None,
               "held_out_mean_shape_mm": history.baseline_face_mm}
    if test is not None:
        summary["test"] = evaluate(regressor, test, model, shapes)
    card = {"data": str(data), "encoder": encoder, "train_config": dataclasses.asdict(config), **summary}
    save_regressor(out / "regressor.npz", regressor, card)
    (out / "history.json").write_text(json.dumps(dataclasses.asdict(history)) + "\n")
    _plot(history, out / "loss.png")
    if test is not None:
        (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def evaluate(regressor, data, model, train_shapes) -> dict:
    """Face error (mm) on another dataset: the regressor vs the training shapes' mean."""
    import numpy as np

    from avatar_jax.regress.decoder import face_error_mm, vertex_weights

    x, shapes, _ = dataset_features(data, regressor.encoder, regressor.extras.get("template"),
                                    mask_eyes=bool(regressor.extras.get("mask_eyes", False)))
    ok = np.all(np.isfinite(x), 1)
    mean = np.asarray(train_shapes, np.float32).mean(0)
    face = vertex_weights(mean, int(model.nose_tip)) > 1.0
    pred = np.asarray(regressor.predict(x[ok]))
    err = np.asarray(face_error_mm(pred, shapes[ok], face))
    base = np.asarray(face_error_mm(np.broadcast_to(mean, shapes[ok].shape), shapes[ok], face))
    return {"items": int(ok.sum()), "dropped_no_face": int((~ok).sum()), "face_mm": float(err.mean()),
            "mean_shape_face_mm": float(base.mean()), "improvement": float(1.0 - err.mean() / base.mean())}


def _plot(history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history.train_loss, label="train: face-weighted L1 (mm)")
    ax.plot(history.held_out_face_mm, label="held out: face RMS (mm)")
    ax.axhline(history.baseline_face_mm, color="grey", ls="--", label="held out: training mean shape")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mm")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
