"""Lymphoma subtype classification (CLL / FL / MCL) by attention sampling.

The worked example of `keras_attention_sampling`: it reproduces the seed's
study on the IICBU 2008 malignant lymphoma images (374 RGB ``.tif`` of
1388x1040), or on the package's procedural H&E-like stand-in when no data
folder is given. Images stay ``uint8`` and are streamed from disk one batch
at a time by a ``keras.utils.PyDataset``; the model rescales them itself.

Usage::

    # a few minutes on a laptop CPU, generated data, checks that it learns
    python examples/lymphoma.py --quick

    # the seed's setting on the real images (download them yourself)
    python examples/lymphoma.py --data-dir ~/data/lymphoma

    # the seed's results table: 5 runs, an honest slide-grouped split
    python examples/lymphoma.py --data-dir ~/data/lymphoma --seeds 5 --split slide

    # any backend: KERAS_BACKEND=jax python examples/lymphoma.py --quick

Every hyperparameter of the seed's notebook is a flag whose default is the
notebook's value (``--help`` lists them), except two switches that let the
seed's networks learn much faster and can be turned off: ``--center`` and
``--uniform-start`` (see docs/examples/lymphoma.md). Everything goes to ``--output``
(default ``runs/lymphoma``), one folder per seed::

    runs/lymphoma/
        results.md, results.csv, runs.csv      the results table
        seed-0/
            config.json        settings of the run (checked when resuming)
            history.csv        per-epoch logs (loss, accuracy, entropy, ...)
            backup/            BackupAndRestore state: rerun to resume
            checkpoints/       the model after every epoch (.keras)
            model.keras        the final model
            summary.json       the run's numbers
            curves.png         loss and accuracy, train and validation
            test/              per test image: attention overlay, patch grid

Re-running the same command with the same ``--output`` resumes an
interrupted run where it stopped, skips finished runs, and continues a
finished run when ``--epochs`` is raised.
"""

import argparse
import csv
import json
import math
import os
import shutil
import time

import keras
import numpy as np
from PIL import Image

import keras_attention_sampling as kas
from keras_attention_sampling import datasets, visualize
from keras_attention_sampling.layers.normalized_feature import seed_backbone

CLASS_NAMES = ("CLL", "FL", "MCL")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
# The seed crops 1388x1040 images to 1300x1000; smaller images are cropped
# by the same proportion unless --crop-size is given.
REFERENCE_SIZE = (1040, 1388)
REFERENCE_CROP = (1000, 1300)
# --color-jitter: mild per-image contrast, brightness and per-channel gain
# (a cheap stand-in for stain variation).
COLOR_JITTER = {"contrast": (0.9, 1.1), "brightness": 0.05, "channel_gain": 0.05}
# Attention pictures: at most this wide (two halves and a gap between).
PICTURE_WIDTH = 1600
GAP = 8

# Settings that --quick changes (explicit flags still win). Everything else
# keeps the seed's value. Measured on 2 shared CPU cores: see
# docs/examples/lymphoma.md.
FULL = {
    "image_size": REFERENCE_SIZE,
    "n_per_class": 125,
    "images_per_slide": 12,
    "cell_scale": 1.0,
    "evidence_fraction": 0.15,
    "patch_size": 50,
    "patches": 20,
    "epochs": 30,
    "samples_per_image": 4,
    "crop": True,
    "flip": True,
    "rot90": True,
    "color_jitter": True,
}
# The full setting at half resolution (cells drawn at half size, so a 25 px
# patch sees what a 50 px patch sees at full size), with class evidence on
# 30% instead of 15% of each image, 2 draws per image instead of 4 and no
# augmentation. Measured (seeds 0-2, 10 epochs): test accuracy 93%, 67%, 93%
# against 33% chance; with 15% evidence, or with augmentation, 10 epochs
# mostly stayed below 60%.
QUICK = {
    "image_size": (260, 347),
    "n_per_class": 60,
    "images_per_slide": 4,
    "cell_scale": 0.5,
    "evidence_fraction": 0.3,
    "patch_size": 25,
    "patches": 20,
    "epochs": 10,
    "samples_per_image": 2,
    "crop": False,
    "flip": False,
    "rot90": False,
    "color_jitter": False,
}

# Settings of the generated data only.
SYNTHETIC_KEYS = ("n_per_class", "images_per_slide", "cell_scale", "evidence_fraction")
# Settings a resumed run must share with the run that wrote its backup.
RUN_KEYS = (
    "data_dir",
    "classes",
    "image_size",
    *SYNTHETIC_KEYS,
    "center",
    "uniform_start",
    "patch_size",
    "patches",
    "scale",
    "entropy_weight",
    "temperature",
    "reward",
    "baseline",
    "samples_per_image",
    "lr",
    "attention_lr",
    "attention_beta1",
    "batch_size",
    "replace",
    "inference_sampling",
    "split",
    "crop",
    "crop_size",
    "flip",
    "rot90",
    "color_jitter",
    "zoom",
)


# -- arguments ----------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Settings that --quick changes default to None and say so in their help.
    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    """Parse the command line; `--quick` fills the settings left unset."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        help="IICBU 2008 / Kaggle lymphoma folder "
        "(CLL/ FL/ MCL/ of .tif, possibly one folder deeper). "
        "Default: generated images.",
    )
    data.add_argument(
        "--classes",
        nargs="+",
        default=list(CLASS_NAMES),
        help="class folder names, in label order",
    )
    data.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="generated image size: default {} {}, --quick {} {}. "
        "With --data-dir, images are centre-cropped/padded to it "
        "(default: their own size)".format(*FULL["image_size"], *QUICK["image_size"]),
    )
    data.add_argument(
        "--n-per-class",
        type=int,
        help="generated images per class."
        f" Default {FULL['n_per_class']}, --quick {QUICK['n_per_class']}",
    )
    data.add_argument(
        "--images-per-slide",
        type=int,
        help="generated images per "
        f"synthetic slide. Default {FULL['images_per_slide']}, "
        f"--quick {QUICK['images_per_slide']}",
    )
    data.add_argument(
        "--cell-scale",
        type=float,
        help="size of the generated "
        f"cells. Default {FULL['cell_scale']}, --quick {QUICK['cell_scale']}",
    )
    data.add_argument(
        "--evidence-fraction",
        type=float,
        help="share of each "
        "generated image covered by class-specific cells. Default "
        f"{FULL['evidence_fraction']}, --quick {QUICK['evidence_fraction']}",
    )
    data.add_argument(
        "--split",
        choices=("random", "slide"),
        default="random",
        help="random: stratified 70/15/15 by image (the seed's; "
        "slides leak between splits); slide: 70/15/15 grouped by "
        "slide id, no slide in two splits",
    )
    data.add_argument(
        "--workers",
        type=int,
        default=1,
        help="PyDataset worker threads decoding batches",
    )

    aug = parser.add_argument_group(
        "augmentation (training images only; on by default, off with --quick)"
    )
    aug.add_argument(
        "--crop",
        action=argparse.BooleanOptionalAction,
        help="random crop (--no-crop: none)",
    )
    aug.add_argument(
        "--crop-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="size of the random crop; default 1000 1300 for "
        "1040x1388 images, the same proportion for other sizes",
    )
    aug.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, help="random horizontal flip"
    )
    aug.add_argument(
        "--rot90",
        action=argparse.BooleanOptionalAction,
        help="random rotation by multiples of 90 degrees (only 0 "
        "or 180 for non-square crops)",
    )
    aug.add_argument(
        "--color-jitter",
        action=argparse.BooleanOptionalAction,
        help="random contrast (0.9-1.1), brightness (+-5%%) and "
        "per-channel gain (+-5%%)",
    )
    aug.add_argument(
        "--zoom",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="random zoom range, Keras RandomZoom convention (the "
        "seed used 0 0.6); off by default, as it changes nucleus size",
    )

    model = parser.add_argument_group("model (defaults: the seed's notebook)")
    model.add_argument(
        "--patch-size",
        type=int,
        help="patch side in pixels. "
        f"Default {FULL['patch_size']}, --quick {QUICK['patch_size']}",
    )
    model.add_argument(
        "--patches",
        type=int,
        help="patches per image. "
        f"Default {FULL['patches']}, --quick {QUICK['patches']}",
    )
    model.add_argument(
        "--scale",
        type=int,
        default=5,
        help="downsampling of the attention network's view",
    )
    model.add_argument(
        "--entropy-weight",
        type=float,
        default=0.05,
        help="weight of the attention entropy regulariser",
    )
    model.add_argument(
        "--temperature",
        type=float,
        default=3.0,
        help="scale of the pooled unit-norm logits",
    )
    model.add_argument(
        "--reward",
        choices=kas.policy_gradient.REWARDS,
        default="bounded",
        help="REINFORCE reward: exp(-loss) or -loss",
    )
    model.add_argument(
        "--baseline",
        choices=kas.policy_gradient.BASELINES,
        default="mean",
        help="reward baseline",
    )
    model.add_argument(
        "--samples-per-image",
        type=int,
        help="independent patch "
        f"draws per image. Default {FULL['samples_per_image']}, "
        f"--quick {QUICK['samples_per_image']}",
    )
    model.add_argument(
        "--replace",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sample patches with replacement",
    )
    model.add_argument(
        "--center",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="feed the feature network patches in "
        "[-0.5, 0.5] instead of the seed's [0, 1] (the seed's "
        "network then learns much faster; see the docs)",
    )
    model.add_argument(
        "--uniform-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start from a uniform attention map "
        "(zero-initialised attention head) instead of the seed's "
        "random one, which can start peaked on a few cells",
    )
    model.add_argument(
        "--inference-sampling",
        choices=("sample", "top_k"),
        default="sample",
        help="how predict/evaluate pick patches",
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="Adam learning rate of the feature network",
    )
    train.add_argument(
        "--attention-lr",
        type=float,
        default=1e-3,
        help="Adam learning rate of the attention network",
    )
    train.add_argument(
        "--attention-beta1",
        type=float,
        default=0.999,
        help="Adam first-moment decay of the attention network",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per batch (each drawn --samples-per-image times)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        help=f"training epochs. Default {FULL['epochs']}, --quick {QUICK['epochs']}",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the first run")
    train.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="number of runs (seeds seed, seed+1, ...); each run draws its own split",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--output",
        default=os.path.join("runs", "lymphoma"),
        help="output folder; rerun with the same one to resume",
    )
    out.add_argument(
        "--grids",
        type=int,
        help="patch-grid pictures for N test "
        "images spread over the test set (default: all)",
    )
    out.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras fit verbosity (1: progress bar per epoch)",
    )
    out.add_argument(
        "--quick",
        action="store_true",
        help="half-size generated images with more evidence, 10 "
        "epochs, no augmentation: a few minutes on 2 CPU cores",
    )

    args = parser.parse_args(argv)
    if args.crop_size and args.crop is None:
        args.crop = True
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if args.data_dir and key in ("image_size",) + SYNTHETIC_KEYS:
            continue  # real images keep their own size unless asked
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.image_size is not None:
        args.image_size = tuple(args.image_size)
    return args


# -- data ---------------------------------------------------------------------


def load_source(args):
    """The image source: an indexed folder, or the synthetic generator."""
    if args.data_dir:
        source = datasets.index_image_folder(args.data_dir, args.classes)
        counts = ", ".join(f"{k} {v}" for k, v in source.class_counts().items())
        description = (
            f"{args.data_dir} ({len(source)} images: {counts}; "
            f"{len(set(source.groups))} slides)"
        )
    else:
        source = datasets.SyntheticLymphoma(
            args.n_per_class,
            args.image_size,
            seed=2024,  # the data set is the same for every run
            images_per_slide=args.images_per_slide,
            cell_scale=args.cell_scale,
            evidence_fraction=args.evidence_fraction,
        )
        height, width = args.image_size
        description = f"synthetic {height}x{width} ({len(source)} images)"
    return source, description


def split_indices(source, args, seed):
    """Train / validation / test positions in `source`."""
    if args.split == "slide":
        return datasets.split_by_group(
            source.labels, source.groups, SPLIT_FRACTIONS, seed=seed
        )
    return datasets.split_random(source.labels, SPLIT_FRACTIONS, seed=seed)


def split_description(args):
    if args.split == "slide":
        return "slide-grouped 70/15/15 (no slide in two splits)"
    return "random image-level 70/15/15, stratified (slides leak between splits)"


def crop_size(args, image_size):
    """The training crop: the flag, or the seed's crop scaled to the images."""
    if not args.crop:
        return None
    if args.crop_size:
        return tuple(args.crop_size)
    return tuple(
        min(size, round(size * crop / ref))
        for size, crop, ref in zip(image_size, REFERENCE_CROP, REFERENCE_SIZE)
    )


def make_augment(args, image_size):
    jitter = COLOR_JITTER if args.color_jitter else {}
    return datasets.Augment(
        crop_size=crop_size(args, image_size),
        horizontal_flip=args.flip,
        rotate90=args.rot90,
        zoom=tuple(args.zoom) if args.zoom else None,
        **jitter,
    )


def make_sequences(source, splits, args, seed):
    """`PyDataset`s streaming uint8 batches: train (shuffled, augmented),
    train without augmentation (to measure train accuracy), val and test."""
    train, val, test = splits
    image_size = args.image_size or source.image_size(int(train[0]))
    common = {
        "batch_size": args.batch_size,
        "image_size": image_size,
        "workers": args.workers,
    }
    return {
        "train": datasets.ImageSequence(
            source,
            indices=train,
            shuffle=True,
            seed=seed,
            augment=make_augment(args, image_size),
            **common,
        ),
        "train_eval": datasets.ImageSequence(source, indices=train, **common),
        "val": datasets.ImageSequence(source, indices=val, **common),
        "test": datasets.ImageSequence(source, indices=test, **common),
    }


# -- model --------------------------------------------------------------------


def feature_network(num_classes, center):
    """The seed's feature network; with `center`, its input is shifted from
    [0, 1] to [-0.5, 0.5] first (the model's `rescale` has no offset)."""
    if not center:
        return None  # the model's default: kas.NormalizedFeature(num_classes)
    backbone = keras.Sequential(
        [keras.layers.Rescaling(1.0, offset=-0.5), seed_backbone()],
        name="centered_backbone",
    )
    return kas.NormalizedFeature(
        num_classes, backbone=backbone, name="normalized_feature"
    )


def build_model(args, num_classes, input_shape, seed):
    """The seed's model, compiled with its two optimisers, built for resuming."""
    model = kas.AttentionSamplingModel(
        num_classes,
        feature_network=feature_network(num_classes, args.center),
        scale=args.scale,
        n_patches=args.patches,
        patch_size=args.patch_size,
        replace=args.replace,
        inference_sampling=args.inference_sampling,
        temperature=args.temperature,
        reward=args.reward,
        baseline=args.baseline,
        entropy_weight=args.entropy_weight,
        samples_per_image=args.samples_per_image,
        rescale=1 / 255,
        seed=seed,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        attention_optimizer=keras.optimizers.Adam(
            args.attention_lr, beta_1=args.attention_beta1
        ),
        metrics=["accuracy"],
    )
    model.build((None,) + tuple(input_shape) + (3,))  # BackupAndRestore needs it
    if args.uniform_start:
        head = model.attention_network.head
        head.kernel.assign(np.zeros(head.kernel.shape, head.kernel.dtype))
    return model


def with_top_k(model, input_shape):
    """A copy of `model` (same weights) that picks the top-k cells at inference."""
    config = model.get_config()
    config["inference_sampling"] = "top_k"
    copy = type(model).from_config(config)
    copy.build(input_shape)
    copy.set_weights(model.get_weights())
    return copy


# -- one run ------------------------------------------------------------------


class EpochSeconds(keras.callbacks.Callback):
    """Adds the epoch's wall time to the logs (so history.csv keeps it)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def read_history(path):
    """history.csv as {column: list}, one row per epoch (the last write wins)."""
    if not os.path.exists(path):
        return {}
    rows = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value) if value else math.nan)
    return history


def check_run_config(run_dir, args):
    """Refuse to resume a run that was started with other settings."""
    path = os.path.join(run_dir, "config.json")
    config = {key: getattr(args, key) for key in RUN_KEYS}
    config = json.loads(json.dumps(config))  # tuples -> lists, as stored
    if os.path.exists(path):
        with open(path) as handle:
            stored = json.load(handle)
        changed = {
            k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v
        }
        if changed:
            details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise SystemExit(
                f"{run_dir} holds a run with other settings ({details}). "
                "Use another --output, or delete that folder to start over."
            )
    else:
        os.makedirs(run_dir, exist_ok=True)
        with open(path, "w") as handle:
            json.dump(config, handle, indent=2)


def make_callbacks(run_dir, history_path):
    """Per-epoch wall time, backup for resuming, a checkpoint every epoch and
    the CSV log (appended to, so it spans resumed runs)."""
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    return [
        EpochSeconds(),
        keras.callbacks.BackupAndRestore(
            os.path.join(run_dir, "backup"), delete_checkpoint=False
        ),
        keras.callbacks.ModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "epoch-{epoch:03d}.keras")
        ),
        keras.callbacks.CSVLogger(history_path, append=True),
    ]


def train_one_run(args, source, seed, run_dir):
    """Train (or resume) one seed; return its summary dict."""
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as handle:
            summary = json.load(handle)
        if summary["epochs"] == args.epochs:
            print(f"seed {seed}: finished earlier, reusing {summary_path}")
            return summary
    check_run_config(run_dir, args)

    keras.utils.set_random_seed(seed)
    splits = split_indices(source, args, seed)
    save_split(source, splits, os.path.join(run_dir, "split.json"))
    sequences = make_sequences(source, splits, args, seed)
    train_shape = sequences["train"].augment.output_size(sequences["train"].image_size)
    model = build_model(args, len(args.classes), train_shape, seed)

    history_path = os.path.join(run_dir, "history.csv")
    model.fit(
        sequences["train"],
        validation_data=sequences["val"],
        epochs=args.epochs,
        callbacks=make_callbacks(run_dir, history_path),
        verbose=args.verbose,
    )
    history = read_history(history_path)
    train_seconds = float(np.nansum(history.get("seconds", [])))

    model_path = os.path.join(run_dir, "model.keras")
    model.save(model_path)
    reloaded = keras.models.load_model(model_path)
    difference = check_reload(model, reloaded, sequences["test"])
    print(
        f"seed {seed}: {model_path} reloaded; its top-k predictions match "
        f"the trained model's (largest difference {difference:.1e})"
    )

    # Train accuracy: the training images without augmentation, evaluated as
    # the test images are. Test accuracy: from the same forward pass that
    # draws the pictures, so they agree even when patches are sampled.
    train_metrics = reloaded.evaluate(
        sequences["train_eval"], return_dict=True, verbose=0
    )
    test_labels, test_predictions = explain_test_images(
        reloaded, sequences["test"], source, args, os.path.join(run_dir, "test")
    )
    summary = {
        "seed": seed,
        "split": args.split,
        "patch_size": args.patch_size,
        "patches": args.patches,
        "epochs": len(history.get("epoch", [])),
        "train_accuracy": float(train_metrics["accuracy"]),
        "test_accuracy": float(np.mean(test_labels == test_predictions)),
        "chance": chance_level(test_labels, len(args.classes)),
        "train_seconds": train_seconds,
        "n_train": len(splits[0]),
        "n_val": len(splits[1]),
        "n_test": len(splits[2]),
        "backend": keras.backend.backend(),
    }
    plot_curves(history, os.path.join(run_dir, "curves.png"), seed)
    with open(summary_path, "w") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def save_split(source, splits, path):
    """Which image went where, by name (the split is also fixed by the seed)."""
    names = {
        part: [image_name(source, int(i)) for i in indices]
        for part, indices in zip(("train", "val", "test"), splits)
    }
    with open(path, "w") as handle:
        json.dump(names, handle, indent=1)


def check_reload(model, reloaded, sequence):
    """The reloaded .keras file must predict exactly as the trained model
    (compared with top-k patch choice, which draws nothing at random)."""
    images, _ = sequence[0]
    before = with_top_k(model, images.shape).predict(images, verbose=0)
    after = with_top_k(reloaded, images.shape).predict(images, verbose=0)
    difference = float(np.max(np.abs(before - after)))
    if difference > 1e-5:
        raise RuntimeError(
            f"the reloaded model predicts differently (max difference {difference})"
        )
    return difference


def chance_level(labels, num_classes):
    """Accuracy of always answering the test set's most frequent class."""
    return float(np.bincount(labels, minlength=num_classes).max() / len(labels))


# -- report -------------------------------------------------------------------


def format_duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) if values.size > 1 else 0.0)


def print_run(summary):
    print(
        f"seed {summary['seed']}: train acc {summary['train_accuracy']:.1%}, "
        f"test acc {summary['test_accuracy']:.1%} (chance {summary['chance']:.1%}, "
        f"{summary['n_test']} test images), {summary['epochs']} epochs in "
        f"{format_duration(summary['train_seconds'])}"
    )


def write_report(summaries, args, data_description, output):
    """Print and save the seed's results table (results.md, results.csv) and
    the per-run numbers (runs.csv). Returns the Markdown text."""
    train_mean, train_std = mean_std([s["train_accuracy"] for s in summaries])
    test_mean, test_std = mean_std([s["test_accuracy"] for s in summaries])
    chance = float(np.mean([s["chance"] for s in summaries]))
    seconds = float(np.mean([s["train_seconds"] for s in summaries]))
    epochs = summaries[0]["epochs"]
    seeds = ", ".join(str(s["seed"]) for s in summaries)

    def pm(mean, std):  # one run has no spread to show
        return f"{mean:.1%} ± {std:.1%}" if len(summaries) > 1 else f"{mean:.1%}"

    header = (
        f"Split: {split_description(args)}. Data: {data_description}. "
        f"{len(summaries)} run(s) (seeds {seeds}), {epochs} epochs, "
        f"backend {keras.backend.backend()}; accuracy mean ± std over runs; "
        "time = training time per run."
    )
    lines = [
        "# Lymphoma results",
        "",
        header,
        "",
        "| patch size | patches | train | test | chance | time |",
        "|---|---|---|---|---|---|",
        f"| {args.patch_size} | {args.patches} | {pm(train_mean, train_std)} "
        f"| {pm(test_mean, test_std)} | {chance:.1%} "
        f"| {format_duration(seconds)} |",
        "",
        "Per run:",
        "",
        "| seed | train | test | chance | train / val / test images | time |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['seed']} | {s['train_accuracy']:.1%} | {s['test_accuracy']:.1%} "
            f"| {s['chance']:.1%} | {s['n_train']} / {s['n_val']} / {s['n_test']} "
            f"| {format_duration(s['train_seconds'])} |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(output, "results.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(output, "results.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "split",
                "patch_size",
                "patches",
                "runs",
                "epochs",
                "train_mean",
                "train_std",
                "test_mean",
                "test_std",
                "chance",
                "train_seconds",
            ]
        )
        writer.writerow(
            [
                args.split,
                args.patch_size,
                args.patches,
                len(summaries),
                epochs,
                train_mean,
                train_std,
                test_mean,
                test_std,
                chance,
                seconds,
            ]
        )
    with open(os.path.join(output, "runs.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summaries[0]))
        writer.writeheader()
        writer.writerows(summaries)
    print()
    print(text)
    return text


# -- pictures -----------------------------------------------------------------


def plot_curves(history, path, seed):
    """Loss, accuracy and attention entropy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = np.asarray(history.get("epoch", []), dtype=int) + 1
    panels = [
        ("loss", "classification loss"),
        ("accuracy", "accuracy"),
        ("entropy", "attention entropy (nats)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 3.6))
    for axis, (key, title) in zip(axes, panels):
        for prefix, label, style in (("", "train", "-o"), ("val_", "validation", "-s")):
            if prefix + key in history:
                axis.plot(
                    epochs, history[prefix + key], style, label=label, markersize=3
                )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if key == "accuracy":
            axis.set_ylim(0, 1)
    axes[0].legend()
    figure.suptitle(f"seed {seed}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def image_name(source, position):
    if hasattr(source, "paths"):
        return os.path.splitext(os.path.basename(source.paths[position]))[0]
    return f"{source.groups[position]}_{position:03d}"


def overlay_picture(image, attention, positions, patch_size, left, right):
    """The image with the sampled patches outlined, next to the attention map
    blended over it; captions under each half. At most PICTURE_WIDTH wide."""
    scale = min(1.0, PICTURE_WIDTH / (2 * image.shape[1] + GAP))
    box_width = max(2, round(2 / scale))  # still 2 px after downscaling
    halves = [
        visualize.attention_overlay(
            image,
            attention,
            positions,
            patch_size,
            alpha=alpha,
            box_width=box_width,
            caption=text,
        )
        for alpha, text in ((0.0, left), (0.5, right))
    ]
    gap = np.full((image.shape[0], GAP, 3), 255, np.uint8)
    picture = np.concatenate([halves[0], gap, halves[1]], axis=1)
    if scale < 1.0:
        size = (round(picture.shape[1] * scale), round(picture.shape[0] * scale))
        picture = np.asarray(Image.fromarray(picture).resize(size, Image.LANCZOS))
    return picture


def explain_test_images(model, sequence, source, args, folder):
    """One attention picture and (for `--grids` of them) one patch grid per
    test image; returns the true and the predicted labels.

    File names carry the true and the predicted class, e.g.
    `003_sj-05-3362-R2_001_true-CLL_pred-FL.png`.
    """
    if os.path.isdir(folder):  # pictures of an earlier, shorter training
        shutil.rmtree(folder)
    os.makedirs(folder)
    names = args.classes
    count = len(sequence.indices)
    grids = count if args.grids is None else min(args.grids, count)
    with_grid = set(np.linspace(0, count - 1, grids).round().astype(int).tolist())
    true_labels, predictions = [], []
    done = 0
    for batch in range(len(sequence)):
        images, labels = sequence[batch]
        positions = sequence.indices[batch * args.batch_size :][: len(images)]
        details = model.explain(images, batch_size=args.batch_size)
        for i, (image, label) in enumerate(zip(images, labels)):
            probabilities = details["probabilities"][i]
            predicted = int(np.argmax(probabilities))
            name = image_name(source, int(positions[i]))
            verdict = "correct" if predicted == label else "wrong"
            stem = f"{done:03d}_{name}_true-{names[label]}_pred-{names[predicted]}"
            picture = overlay_picture(
                image,
                details["attention"][i],
                details["positions"][i],
                args.patch_size,
                left=f"{name}  true: {names[label]}",
                right=f"predicted: {names[predicted]} "
                f"({probabilities[predicted]:.0%}, {verdict})",
            )
            visualize.save_png(picture, os.path.join(folder, stem + ".png"))
            if done in with_grid:
                patch_classes = np.argmax(details["patch_logits"][i], axis=-1)
                grid = visualize.patch_grid(
                    details["patches"][i],
                    details["sampled_attention"][i],
                    labels=[names[c] for c in patch_classes],
                )
                visualize.save_png(grid, os.path.join(folder, stem + "_patches.png"))
            true_labels.append(int(label))
            predictions.append(predicted)
            done += 1
    return np.asarray(true_labels), np.asarray(predictions)


# -- main ---------------------------------------------------------------------


def main(argv=None):
    """Train `--seeds` runs, write pictures and the results table.

    Returns:
        The list of per-run summary dicts.
    """
    args = parse_args(argv)
    source, data_description = load_source(args)
    if not args.data_dir:
        args.classes = list(source.class_names)
    os.makedirs(args.output, exist_ok=True)
    print(f"data: {data_description}; split: {split_description(args)}")
    print(
        f"backend {keras.backend.backend()}; {args.patches} patches of "
        f"{args.patch_size}x{args.patch_size}, scale {args.scale}, "
        f"{args.epochs} epochs, batch {args.batch_size} x "
        f"{args.samples_per_image} draws; output {args.output}"
    )

    summaries = []
    for seed in range(args.seed, args.seed + args.seeds):
        run_dir = os.path.join(args.output, f"seed-{seed}")
        summary = train_one_run(args, source, seed, run_dir)
        print_run(summary)
        summaries.append(summary)
    write_report(summaries, args, data_description, args.output)
    return summaries


if __name__ == "__main__":
    main()
