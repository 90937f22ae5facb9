"""Two scene choices of the renders, each against the same baseline: backgrounds cropped from
real photos, and the paper's eye masking instead of rendered eyes.

    python experiments/ablation_scene.py --root /tmp/ablation [--n 1024] [--epochs 40] [--arms ...]

Arms (DR identities, de-identified skins, ``make-dataset --detect``, seed 0, ``--n`` renders):

- ``dr-deid``: plain + noise backgrounds, rendered eyes (the same folder and run as
  ``experiments/ablation_aug.py``'s DR / de-identified arm, so a shared ``--root`` reuses it);
- ``dr-deid-photobg``: plain + noise + photo-crop backgrounds;
- ``dr-deid-eyemask``: the ``dr-deid`` renders, the encoder trained and run with both eyes painted
  over (``train-regressor --mask-eyes``), as the paper did because its renders had no eyes.

The ``--encoder`` regressor of each arm is scored on two 512-render test sets of seed 1 (other
identities and skins) that differ only in their backgrounds: plain + noise (``test``) and photo
crops only (``test-photobg``). Face-region vertex error (mm) of the regressed shape beside the
training mean shape's; writes ``scene_ablation.json`` into ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from ablation_aug import cpu_train_config, schedule_parser  # noqa: E402  the shared CPU schedule
ARMS = {  # name -> (training set folder, its backgrounds, eye masking)
    "dr-deid": ("dr-deid", ("plain", "noise"), False),
    "dr-deid-photobg": ("dr-deid-photobg", ("plain", "noise", "photo"), False),
    "dr-deid-eyemask": ("dr-deid", ("plain", "noise"), True),
}
TESTS = {"test": ("plain", "noise"), "test-photobg": ("photo",)}


def _config(n: int, seed: int, backgrounds):
    from avatar_jax.dataset.make import DatasetConfig
    from avatar_jax.dataset.scenes import SceneConfig

    return DatasetConfig(n=n, detect=True, seed=seed, scene=dataclasses.replace(SceneConfig(), backgrounds=backgrounds))


def main(argv=None) -> None:
    from avatar_jax.dataset.make import make_dataset
    from avatar_jax.model import load_head_model
    from avatar_jax.regress import load_regressor
    from avatar_jax.regress.command import dataset_features, evaluate, train

    ap = schedule_parser(__doc__)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "dataset")
    args = ap.parse_args(argv)
    model = load_head_model()
    for name, kinds in TESTS.items():
        make_dataset(_config(args.test_n, 1, kinds), args.root / name)
    config = cpu_train_config(args.epochs)
    rows = {}
    for arm in args.arms:
        folder, kinds, mask_eyes = ARMS[arm]
        data = args.root / folder
        make_dataset(_config(args.n, 0, kinds), data)
        run = args.root / f"run-{arm}-{args.encoder}"
        if not (run / "regressor.npz").is_file():
            train(data, args.encoder, run, config, progress=False, mask_eyes=mask_eyes)
        _, shapes, _ = dataset_features(data, args.encoder, mask_eyes=mask_eyes)
        regressor = load_regressor(run / "regressor.npz")
        rows[arm] = {test: evaluate(regressor, args.root / test, model, shapes) for test in TESTS}
        print(arm, json.dumps(rows[arm]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scene_ablation.json").write_text(json.dumps(
        {"n": args.n, "epochs": args.epochs, "encoder": args.encoder,
         "arms": {arm: dict(zip(("data", "backgrounds", "mask_eyes"), ARMS[arm])) for arm in args.arms},
         "test_backgrounds": TESTS, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
