"""End-to-end tests of `examples/lymphoma.py` (the worked example) and of
`examples/lymphoma_study.py` (its runs over seeds).

The scripts are imported from their files and driven through `main(argv)` with
tiny generated images, so the whole command-line path runs: data, training,
checkpoints, resume, the saved model, pictures and the results table.
"""

import csv
import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from keras_attention_sampling import datasets

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")

# Tiny and fast: 104x139 images, 2 patches of 16 px, 2 draws per image.
TINY = [
    "--image-size",
    "104",
    "139",
    "--n-per-class",
    "6",
    "--images-per-slide",
    "2",
    "--cell-scale",
    "0.5",
    "--patch-size",
    "16",
    "--patches",
    "2",
    "--scale",
    "4",
    "--samples-per-image",
    "2",
    "--batch-size",
    "8",
    "--grids",
    "2",
    "--verbose",
    "0",
]


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(EXAMPLES, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tutorial():
    return _load("lymphoma")


@pytest.fixture(scope="module")
def example():
    """The study harness, which takes every flag of the tutorial."""
    return _load("lymphoma_study")


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _pngs(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".png"))


@pytest.fixture(scope="module")
def resumed_run(example, tmp_path_factory):
    """One epoch, then the same command with --epochs 2 (a resume)."""
    output = str(tmp_path_factory.mktemp("lymphoma"))
    argv = TINY + ["--output", output, "--seed", "3"]
    first = example.main(argv + ["--epochs", "1"])
    run_dir = os.path.join(output, "seed-3")
    checkpoint = os.path.join(run_dir, "checkpoints", "epoch-001.keras")
    state = {
        "first": first,
        "checkpoint_mtime": os.stat(checkpoint).st_mtime_ns,
        "history_rows": _csv_rows(os.path.join(run_dir, "history.csv")),
    }
    second = example.main(argv + ["--epochs", "2"])
    return {
        "output": output,
        "run_dir": run_dir,
        "argv": argv,
        "second": second,
        **state,
    }


def test_smoke_writes_table_pictures_and_model(resumed_run, example):
    output, run_dir = resumed_run["output"], resumed_run["run_dir"]
    (summary,) = resumed_run["second"]
    assert summary["epochs"] == 2
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert 0.0 < summary["chance"] <= 1.0

    # The results table: Markdown and CSV, with the split named.
    with open(os.path.join(output, "results.md")) as handle:
        table = handle.read()
    assert "random image-level 70/15/15" in table
    assert "| patch size | patches | train | test |" in table
    assert "| 16 | 2 |" in table
    (row,) = _csv_rows(os.path.join(output, "results.csv"))
    assert row["split"] == "random" and row["patch_size"] == "16"
    assert float(row["test_mean"]) == pytest.approx(summary["test_accuracy"])
    (run,) = _csv_rows(os.path.join(output, "runs.csv"))
    # Generated images know their evidence: how much of the map lies on it.
    assert 0.0 <= summary["attention_on_evidence"] <= 1.0
    assert 0.0 < summary["evidence_share"] < 1.0
    assert float(run["attention_on_evidence"]) == pytest.approx(
        summary["attention_on_evidence"]
    )
    assert f"| {summary['attention_on_evidence']:.1%} (evenly: " in table

    # Pictures: curves, one overlay per test image, patch grids for two.
    assert os.path.getsize(os.path.join(run_dir, "curves.png")) > 1000
    pictures = _pngs(os.path.join(run_dir, "test"))
    grids = [name for name in pictures if name.endswith("_patches.png")]
    overlays = [name for name in pictures if not name.endswith("_patches.png")]
    assert len(overlays) == summary["n_test"] and len(grids) == 2
    for name in overlays:
        assert "_true-" in name and "_pred-" in name
    # The image with its patches outlined, a gap, the attention over it.
    image = datasets.read_image(os.path.join(run_dir, "test", overlays[0]))
    assert image.shape == (104, 2 * 139 + 8, 3)

    # The split is saved by image name; the three parts are disjoint.
    with open(os.path.join(run_dir, "split.json")) as handle:
        split = json.load(handle)
    assert sum(len(part) for part in split.values()) == 18
    assert not set(split["train"]) & set(split["test"])


def test_resume_continues_instead_of_restarting(resumed_run):
    run_dir = resumed_run["run_dir"]
    assert [row["epoch"] for row in resumed_run["history_rows"]] == ["0"]
    # The second command trained epoch 2 only: one more row in the log, and
    # the epoch-1 checkpoint was not rewritten.
    rows = _csv_rows(os.path.join(run_dir, "history.csv"))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    # Each epoch's wall time is logged, and the run's time sums them.
    assert all(float(row["seconds"]) > 0 for row in rows)
    seconds = sum(float(row["seconds"]) for row in rows)
    assert resumed_run["second"][0]["train_seconds"] == pytest.approx(seconds)
    checkpoint = os.path.join(run_dir, "checkpoints", "epoch-001.keras")
    assert os.stat(checkpoint).st_mtime_ns == resumed_run["checkpoint_mtime"]
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "epoch-002.keras"))
    with open(os.path.join(run_dir, "backup", "training_metadata.json")) as handle:
        assert json.load(handle)["epoch"] == 2

    # The final model reloads and predicts.
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    images = np.zeros((2, 104, 139, 3), np.uint8)
    assert model.predict(images, verbose=0).shape == (2, 3)


def test_finished_run_is_reused_and_changed_settings_refused(resumed_run, example):
    run_dir = resumed_run["run_dir"]
    model_path = os.path.join(run_dir, "model.keras")
    before = os.stat(model_path).st_mtime_ns
    (again,) = example.main(resumed_run["argv"] + ["--epochs", "2"])
    assert again == resumed_run["second"][0]
    assert os.stat(model_path).st_mtime_ns == before
    with pytest.raises(SystemExit, match="other settings"):
        example.main(resumed_run["argv"] + ["--epochs", "3", "--patches", "3"])


def _write_kaggle_folder(root):
    """Tiny TIFFs in the Kaggle layout: one folder deeper, 3 slides a class."""
    tifffile = pytest.importorskip("tifffile")
    nested = os.path.join(root, "Malignant Lymphoma Classification")
    source = datasets.SyntheticLymphoma(
        6, image_size=(104, 139), seed=5, images_per_slide=2, cell_scale=0.5
    )
    for index in range(len(source)):
        name = source.class_names[source.labels[index]]
        folder = os.path.join(nested, name)
        os.makedirs(folder, exist_ok=True)
        slide = f"sj-{index // 2:02d}-{name}"
        tifffile.imwrite(
            os.path.join(folder, f"{slide}_{index % 2 + 1:03d}.tif"),
            source.load_image(index),
        )
    with open(os.path.join(nested, "CLL", ".DS_Store"), "wb") as handle:
        handle.write(b"\0\1junk")
    return source


def test_kaggle_tiff_folder_with_slide_split(example, tmp_path):
    _write_kaggle_folder(str(tmp_path / "data"))
    output = str(tmp_path / "out")
    argv = [arg for arg in TINY if arg not in ("--image-size", "104", "139")]
    (summary,) = example.main(
        argv
        + [
            "--data-dir",
            str(tmp_path / "data"),
            "--split",
            "slide",
            "--epochs",
            "1",
            "--output",
            output,
            "--grids",
            "0",
        ]
    )
    assert summary["split"] == "slide"
    assert summary["n_train"] + summary["n_val"] + summary["n_test"] == 18
    # Real images carry no evidence mask, so there is nothing to measure.
    assert summary["attention_on_evidence"] is None
    with open(os.path.join(output, "results.md")) as handle:
        table = handle.read()
    assert "slide-grouped" in table
    assert table.rstrip().endswith("| – |")

    # No slide in two parts of the split.
    with open(os.path.join(output, "seed-0", "split.json")) as handle:
        split = json.load(handle)
    slides = {
        part: {datasets.slide_id_from_path(name) for name in names}
        for part, names in split.items()
    }
    assert not slides["train"] & slides["val"]
    assert not slides["train"] & slides["test"]
    assert not slides["val"] & slides["test"]
    overlays = _pngs(os.path.join(output, "seed-0", "test"))
    assert len(overlays) == summary["n_test"]
    assert all(name.split("_")[1].startswith("sj-") for name in overlays)


def test_tutorial_trains_saves_reloads_and_draws(tutorial, tmp_path, capsys):
    output = str(tmp_path / "tutorial")
    result = tutorial.main(TINY + ["--epochs", "1", "--output", output, "--seed", "2"])
    run_dir = os.path.join(output, "seed-2")
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["n_train"] + result["n_val"] + result["n_test"] == 18
    printed = capsys.readouterr().out
    assert "| split | patch size | patches | train | test | chance |" in printed
    assert f"| random | 16 | 2 | {result['train_accuracy']:.1%} |" in printed
    # The model reloads; its backup and checkpoint are there to resume from.
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    assert model.predict(np.zeros((1, 104, 139, 3), np.uint8), verbose=0).shape == (
        1,
        3,
    )
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "epoch-001.keras"))
    assert os.path.isdir(os.path.join(run_dir, "backup"))
    pictures = _pngs(os.path.join(run_dir, "test"))
    grids = [name for name in pictures if name.endswith("_patches.png")]
    assert len(pictures) - len(grids) == result["n_test"] and len(grids) == 2
    with open(os.path.join(run_dir, "split.json")) as handle:
        assert sorted(json.load(handle)) == ["test", "train", "val"]


def test_attention_on_evidence_weighs_each_cell_by_its_evidence(tutorial):
    source = datasets.SyntheticLymphoma(2, (104, 139), seed=0, evidence_fraction=0.3)
    scale, indices = 4, [0, 3]
    masks = [source.generate(i).evidence_mask for i in indices]
    h, w = 104 // scale, 139 // scale
    cells = np.stack(
        [
            m[: h * scale, : w * scale].reshape(h, scale, w, scale).mean(axis=(1, 3))
            for m in masks
        ]
    )
    inside, outside = (cells == 1).astype("float32"), (cells == 0).astype("float32")
    assert inside.sum(axis=(1, 2)).min() > 0 and outside.sum(axis=(1, 2)).min() > 0

    on, share = tutorial.attention_on_evidence(source, indices, inside, scale)
    assert on == pytest.approx(1.0) and share == pytest.approx(cells.mean())
    assert tutorial.attention_on_evidence(source, indices, outside, scale)[0] == 0.0
    # A map spread evenly puts the evidence's share of the image on it; the
    # maps need not sum to one.
    even = np.full((2, h, w), 3.0)
    on, share = tutorial.attention_on_evidence(source, indices, even, scale)
    assert on == pytest.approx(share)
    # Half the weight on evidence, half off it.
    half = inside / inside.sum(axis=(1, 2), keepdims=True)
    half += outside / outside.sum(axis=(1, 2), keepdims=True)
    on, _ = tutorial.attention_on_evidence(source, indices, half, scale)
    assert on == pytest.approx(0.5)
