"""Training of the vertex decoder on precomputed encoder features (the encoder stays frozen).

    regressor, history = train_regressor(features [N, D], shapes [N, V, 3], model, TrainConfig())
    shapes = regressor.predict(features)                     # [B, V, 3]

The paper's schedule (section 4.1): Adam with lr 1e-4, beta1 0.5, beta2 0.999, batch 64, 500
epochs; the per-vertex L1 with the face weighted 5 (:mod:`avatar_jax.regress.decoder`). A fixed
fraction of the items is held out; after every epoch the held-out face error (mm) is recorded
beside that of the training mean, the bar any shape source has to beat.

An epoch is one jitted ``lax.scan`` over its minibatches (shuffled by a key folded from the seed
and the epoch, so a resumed run draws the same batches as an uninterrupted one). With
``out_dir`` the state is checkpointed with orbax every ``checkpoint_every`` epochs and a rerun
resumes from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avatar_jax.regress.decoder import (VertexDecoder, face_error_mm, init_decoder, shape_pca, vertex_weights,
                                        weighted_l1)

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The decoder's training schedule (paper defaults) and its held-out split.

    ``keep_best``: the regressor takes the parameters of the epoch with the lowest held-out face
    error (the held-out split then selects the model, so report a separate test set); False:
    the last epoch's. ``weight_decay``: decoupled weight decay (AdamW); 0 is the paper's Adam.
    """

    epochs: int = 500
    batch_size: int = 64
    learning_rate: float = 1e-4
    b1: float = 0.5
    b2: float = 0.999
    face_radius_mm: float = 95.0
    face_weight: float = 5.0
    held_out_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 10
    keep_best: bool = True
    weight_decay: float = 0.0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"TrainConfig.held_out_fraction must be in (0, 1), got {self.held_out_fraction}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("learning_rate", "face_radius_mm", "face_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Regressor:
    """A trained decoder with its input normalisation.

    Attributes:
      params: the decoder's parameters; ``num_vertices``: V.
      feature_mean, feature_std: ``[D]`` input normalisation (training statistics).
      encoder: name of the features it takes (``"mesh"``, ``"dlib"``, ``"both"``).
      extras: arrays the encoder needs at inference (e.g. ``template`` ``[478, 3]`` for "mesh").
    """

    params: dict
    num_vertices: int
    feature_mean: np.ndarray
    feature_std: np.ndarray
    encoder: str
    extras: dict = dataclasses.field(default_factory=dict)

    def predict(self, features) -> jax.Array:
        """``[B, D]`` features -> ``[B, V, 3]`` shapes (mm, model frame)."""
        features = jnp.asarray(features, jnp.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_mean.shape[0]:
            raise ValueError(f"Regressor.predict: features must be [B, {self.feature_mean.shape[0]}], "
                             f"got {features.shape}")
        return _apply(self.num_vertices, self.params, (features - self.feature_mean) / self.feature_std)


@functools.partial(jax.jit, static_argnums=0)
def _apply(num_vertices: int, params, x):
    return VertexDecoder(num_vertices).apply({"params": params}, x)


@dataclasses.dataclass(frozen=True)
class History:
    """Per epoch: training loss (weighted L1, mm), held-out face error (mm, mean over items);
    ``baseline_face_mm``: the training mean's held-out face error; ``chosen_epoch``: the epoch
    whose parameters the regressor has (the best held-out one with ``keep_best``)."""

    train_loss: list
    held_out_face_mm: list
    baseline_face_mm: float
    chosen_epoch: int = 0


def split_indices(n: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) item indices, a seeded permutation."""
    order = np.random.default_rng(config.seed).permutation(n)
    k = max(1, int(round(n * config.held_out_fraction)))
    if n - k < 2:
        raise ValueError(f"train_regressor: {n} items leave fewer than 2 for training")
    return np.sort(order[k:]), np.sort(order[:k])


def train_regressor(features, shapes, model, config: TrainConfig = TrainConfig(), *, encoder: str = "mesh",
                    extras: dict | None = None, out_dir: str | Path | None = None,
                    progress=None) -> tuple[Regressor, History]:
    """Train the decoder on ``features`` ``[N, D]`` -> ``shapes`` ``[N, V, 3]``.

    Items with a non-finite feature (e.g. no face detected) are dropped. ``progress``: an
    ``iterable -> iterable`` wrapper (e.g. tqdm) over the epochs.
    """
    features, shapes = _check_data(features, shapes, model)
    train_idx, held_idx = split_indices(len(features), config)
    mean, std = _feature_stats(features[train_idx])
    x = (features - mean) / std
    pca = shape_pca(shapes[train_idx])
    weights = jnp.asarray(vertex_weights(pca.mean, int(model.nose_tip), config.face_radius_mm, config.face_weight))
    face = weights > 1.0
    decoder = VertexDecoder(model.num_vertices)
    optimiser = optax.adamw(config.learning_rate, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
    key = jax.random.PRNGKey(config.seed)
    params = init_decoder(decoder, key, x.shape[1], pca)
    state = {"params": params, "opt_state": optimiser.init(params), "best": params, "epoch": 0, "best_epoch": 0,
             "train_loss": np.zeros(config.epochs, np.float32), "held_out": np.zeros(config.epochs, np.float32)}
    manager = _checkpoint_manager(out_dir, config, features.shape)
    state = _restore(manager, state, config.epochs)
    run_epoch = _epoch_fn(decoder, optimiser, weights, config.batch_size)
    held_x, held_y = jnp.asarray(x[held_idx]), jnp.asarray(shapes[held_idx])
    train_x, train_y = jnp.asarray(x[train_idx]), jnp.asarray(shapes[train_idx])
    epochs = range(int(state["epoch"]), config.epochs)
    for epoch in (progress(epochs) if progress else epochs):
        state["params"], state["opt_state"], loss = run_epoch(
            state["params"], state["opt_state"], train_x, train_y, jax.random.fold_in(key, epoch))
        pred = decoder.apply({"params": state["params"]}, held_x)
        state["train_loss"][epoch] = float(loss)
        state["held_out"][epoch] = float(jnp.mean(face_error_mm(pred, held_y, face)))
        if state["held_out"][epoch] <= state["held_out"][:epoch + 1].min():
            state["best"], state["best_epoch"] = state["params"], epoch + 1
        state["epoch"] = epoch + 1
        if manager is not None and ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs):
            _save(manager, state)
    if manager is not None:
        manager.wait_until_finished()
    baseline = float(jnp.mean(face_error_mm(jnp.broadcast_to(pca.mean, held_y.shape), held_y, face)))
    chosen = state["best"] if config.keep_best else state["params"]
    regressor = Regressor(jax.tree.map(np.asarray, chosen), model.num_vertices, mean, std, encoder,
                          dict(extras or {}))
    epoch = int(state["best_epoch"]) if config.keep_best else int(state["epoch"])
    return regressor, History(state["train_loss"].tolist(), state["held_out"].tolist(), baseline, epoch)


def _check_data(features, shapes, model):
    features = np.asarray(features, np.float32)
    shapes = np.asarray(shapes, np.float32)
    if features.ndim != 2:
        raise ValueError(f"train_regressor: features must be [N, D], got {features.shape}")
    if shapes.shape != (len(features), model.num_vertices, 3):
        raise ValueError(f"train_regressor: shapes must be [N, V, 3] = ({len(features)}, {model.num_vertices}, 3), "
                         f"got {shapes.shape}")
    if not np.all(np.isfinite(shapes)):
        raise ValueError("train_regressor: shapes contain NaN or inf")
    keep = np.all(np.isfinite(features), 1)
    return features[keep], shapes[keep]


def _feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the training features (constant dimensions keep std 1)."""
    std = x.std(0)
    return x.mean(0).astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _epoch_fn(decoder, optimiser, weights, batch_size):
    def loss_fn(params, xb, yb):
        return weighted_l1(decoder.apply({"params": params}, xb), yb, weights)

    @jax.jit
    def run_epoch(params, opt_state, x, y, key):
        steps = max(1, x.shape[0] // batch_size)
        # a full epoch of whole batches (the remainder waits for the next shuffle); fewer items
        # than one batch make one smaller batch
        order = jax.random.permutation(key, x.shape[0])[: steps * batch_size].reshape(steps, -1)

        def step(carry, idx):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
            updates, opt_state = optimiser.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state, jnp.mean(losses)

    return run_epoch


# ----------------------------------------------------------------------------- checkpoints

def _checkpoint_manager(out_dir, config: TrainConfig, data_shape):
    """An orbax manager under ``out_dir/checkpoints``; ``out_dir/train_config.json`` records the
    run, and resuming with another configuration (other than more epochs) or other data is refused."""
    if out_dir is None:
        return None
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {**dataclasses.asdict(config), "data_shape": list(data_shape)}
    record.pop("epochs")
    path = out_dir / "train_config.json"
    if path.is_file() and json.loads(path.read_text()) != record:
        raise ValueError(f"train_regressor: {out_dir} holds a run with another configuration or data "
                         f"({path}); use a new out_dir")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return ocp.CheckpointManager(out_dir / "checkpoints",
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def _restore(manager, state, epochs: int):
    """The latest checkpoint (histories resized to ``epochs``), or ``state`` when there is none."""
    if manager is None or manager.latest_step() is None:
        return state
    import orbax.checkpoint as ocp

    tensors = {k: state[k] for k in ("params", "opt_state", "best")}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tensors)
    old = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        tensors=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()))
    history = old["history"]

    def resized(values):
        out = np.zeros(epochs, np.float32)
        out[: min(epochs, len(values))] = values[:epochs]
        return out

    return {**old["tensors"], "train_loss": resized(history["train_loss"]),
            "held_out": resized(history["held_out"]), "epoch": min(int(history["epoch"]), epochs),
            "best_epoch": int(history["best_epoch"])}


def _save(manager, state):
    """Parameters and optimiser state as tensors, the epoch and histories as JSON (so a resumed
    run may ask for more epochs than the first)."""
    import orbax.checkpoint as ocp

    epoch = int(state["epoch"])
    history = {"epoch": epoch, "best_epoch": int(state["best_epoch"]),
               "train_loss": state["train_loss"][:epoch].tolist(), "held_out": state["held_out"][:epoch].tolist()}
    manager.save(epoch, args=ocp.args.Composite(
        tensors=ocp.args.StandardSave({k: state[k] for k in ("params", "opt_state", "best")}),
        history=ocp.args.JsonSave(history)))


# ----------------------------------------------------------------------------- shipping

def save_regressor(path: str | Path, regressor: Regressor, card: dict | None = None) -> Path:
    """The regressor as one ``.npz`` (float32 parameters, normalisation, extras, a JSON header)."""
    flat = {f"param/{'/'.join(k)}": np.asarray(v) for k, v in _flatten(regressor.params).items()}
    extras = {f"extra/{k}": np.asarray(v) for k, v in regressor.extras.items()}
    header = dict(version=FORMAT_VERSION, encoder=regressor.encoder, num_vertices=regressor.num_vertices,
                  card=card or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, header=np.array(json.dumps(header)), feature_mean=regressor.feature_mean,
                        feature_std=regressor.feature_std, **flat, **extras)
    tmp.replace(path)
    return path


DEFAULT_REGRESSOR = Path(__file__).resolve().parent / "data" / "shape_regressor_dlib.npz"


def load_regressor(path: str | Path | None = None) -> Regressor:
    """A regressor written by :func:`save_regressor` (None: the shipped default,
    ``data/shape_regressor_dlib.npz``, whose model card is ``data/MODEL_CARD.md``)."""
    path = Path(path) if path is not None else DEFAULT_REGRESSOR
    if not path.is_file():
        raise ValueError(f"load_regressor: no such file {path}")
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        header = json.loads(str(arrays.pop("header")))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"load_regressor: {path} is not a regressor file ({err})") from err
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"load_regressor: {path} has format version {header.get('version')}, "
                         f"this avatar-jax reads {FORMAT_VERSION}")
    params: dict = {}
    for key, value in arrays.items():
        if key.startswith("param/"):
            node = params
            *parents, leaf = key.removeprefix("param/").split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
    extras = {k.removeprefix("extra/"): v for k, v in arrays.items() if k.startswith("extra/")}
    return Regressor(params, int(header["num_vertices"]), arrays["feature_mean"], arrays["feature_std"],
                     header["encoder"], extras)


def _flatten(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out
