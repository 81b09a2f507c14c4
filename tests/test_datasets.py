"""Tests of keras_attention_sampling.datasets: folder index, streaming,
augmentation, splits and the synthetic lymphoma generator."""

import os
import time

import keras
import numpy as np
import pytest
from PIL import Image

from keras_attention_sampling.datasets import (
    Augment,
    ImageSequence,
    SyntheticLymphoma,
    fit_to_size,
    index_image_folder,
    make_synthetic_lymphoma,
    read_image,
    read_image_size,
    slide_id_from_path,
    split_by_group,
    split_random,
)

# --------------------------------------------------------------------------
# Generated image folders
# --------------------------------------------------------------------------

# class -> [(file name, fill value)]; the fill value identifies each image.
_FILES = {
    "CLL": [("sj-A_001.tif", 10), ("sj-A_002.tif", 20), ("sj-B_001.tif", 30)],
    "FL": [("sj-C_001.tif", 40), ("sj-C_002.tif", 50), ("sj-D_001.tif", 60)],
    "MCL": [("sj-E_001.tif", 70), ("sj-F_001.tif", 80), ("sj-F_002.tif", 90)],
}


def _write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_folder(root, size=(24, 32)):
    """A small IICBU-like folder with the usual stray files."""
    for cls, files in _FILES.items():
        for name, value in files:
            _write_image(root / cls / name, np.full(size + (3,), value, np.uint8))
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "CLL" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "CLL" / "._sj-A_001.tif").write_bytes(b"AppleDouble")
    (root / "FL" / "Thumbs.db").write_bytes(b"junk")
    (root / "MCL" / "notes.txt").write_text("not an image")
    (root / "MCL" / "subfolder").mkdir()
    return root


@pytest.fixture
def flat_folder(tmp_path):
    return _make_folder(tmp_path / "lymphoma")


@pytest.fixture
def nested_folder(tmp_path):
    _make_folder(tmp_path / "kaggle" / "Malignant Lymphoma Classification")
    return tmp_path / "kaggle"


def _check_lymphoma_index(index):
    assert index.class_names == ("CLL", "FL", "MCL")
    assert index.labels.dtype == np.int32
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    names = [os.path.basename(p) for p in index.paths]
    assert names == [name for files in _FILES.values() for name, _ in files]
    assert index.groups.tolist() == [
        "sj-A",
        "sj-A",
        "sj-B",
        "sj-C",
        "sj-C",
        "sj-D",
        "sj-E",
        "sj-F",
        "sj-F",
    ]
    assert index.class_counts() == {"CLL": 3, "FL": 3, "MCL": 3}
    # Labels follow the folders: each image's fill value is its identity.
    values = [index.load_image(i)[0, 0, 0] for i in range(len(index))]
    assert values == [v for files in _FILES.values() for _, v in files]


def test_index_flat_layout_skips_stray_files(flat_folder):
    index = index_image_folder(flat_folder)
    _check_lymphoma_index(index)
    assert os.path.samefile(index.root, flat_folder)


def test_index_nested_layout(nested_folder):
    index = index_image_folder(nested_folder)
    _check_lymphoma_index(index)
    assert os.path.basename(index.root) == "Malignant Lymphoma Classification"
    # Explicit class names also find the nested root.
    _check_lymphoma_index(index_image_folder(nested_folder, ("CLL", "FL", "MCL")))


def test_index_class_order_and_subset(flat_folder):
    index = index_image_folder(flat_folder, class_names=("MCL", "CLL"))
    assert index.class_names == ("MCL", "CLL")
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert index.load_image(0)[0, 0, 0] == 70


def test_slide_id_from_path():
    assert slide_id_from_path("x/CLL/sj-05-3362-R2_001.tif") == "sj-05-3362-R2"
    assert slide_id_from_path("sj-03-852-R2_013.tif") == "sj-03-852-R2"
    assert slide_id_from_path("plain.tif") == "plain"
    assert slide_id_from_path("no_digits_here.png") == "no_digits_here"
    assert slide_id_from_path("_001.tif") == "_001"  # nothing before the suffix


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        index_image_folder(missing)


def test_missing_class_folder(flat_folder):
    with pytest.raises(FileNotFoundError, match=r"\['DLBCL'\] not found"):
        index_image_folder(flat_folder, class_names=("CLL", "DLBCL"))


def test_empty_class_folder(flat_folder):
    (flat_folder / "EMPTY").mkdir()
    (flat_folder / "EMPTY" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"EMPTY' contains no image files"):
        index_image_folder(flat_folder)
    with pytest.raises(ValueError, match=r"EMPTY' contains no image files"):
        index_image_folder(flat_folder, class_names=("CLL", "EMPTY"))


def test_no_class_folders(tmp_path):
    (tmp_path / "data" / "docs").mkdir(parents=True)
    (tmp_path / "data" / "docs" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="no class folders with images"):
        index_image_folder(tmp_path / "data")
    # Pointing at a class folder itself gets a hint.
    _write_image(tmp_path / "CLL" / "sj-A_001.tif", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="point it at the folder above"):
        index_image_folder(tmp_path / "CLL")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Corrupt EXIF data"
def test_corrupt_image_raises_when_read_naming_the_file(flat_folder):
    (flat_folder / "FL" / "sj-Z_001.tif").write_bytes(b"II*\x00 this is not a tiff")
    good = flat_folder / "FL" / "sj-C_001.tif"
    truncated = flat_folder / "FL" / "sj-Y_001.png"
    Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    ).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    index = index_image_folder(flat_folder)  # indexing never decodes
    assert len(index) == 11
    assert read_image(good).shape == (24, 32, 3)
    with pytest.raises(ValueError, match=r"sj-Z_001\.tif.*corrupt"):
        read_image(flat_folder / "FL" / "sj-Z_001.tif")
    with pytest.raises(ValueError, match=r"sj-Y_001\.png"):
        read_image(truncated)
    sequence = ImageSequence(index, batch_size=11)
    with pytest.raises(ValueError, match=r"sj-[YZ]_001"):
        sequence[0]
    with pytest.raises(FileNotFoundError, match="gone.tif"):
        read_image(flat_folder / "gone.tif")


def test_read_image_converts_modes(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.tif")
    out = read_image(tmp_path / "grey.tif")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.stack([grey] * 3, -1))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 10, 20, 255)  # opaque: colour kept
    rgba[1, 1] = (200, 10, 20, 0)  # transparent: white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [200, 10, 20]
    assert out[1, 1].tolist() == [255, 255, 255]

    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    out = read_image(tmp_path / "palette.png")
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 255]

    deep = np.arange(6, dtype=np.uint16).reshape(2, 3) * 10000
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit greyscale PNG
    out = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(out[..., 0], deep >> 8)

    assert read_image_size(tmp_path / "grey.tif") == (3, 4)


def test_fit_to_size_centre_crops_and_pads():
    image = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6)
    cropped = fit_to_size(image, (3, 2))
    np.testing.assert_array_equal(cropped, image[1:4, 2:4])
    padded = fit_to_size(image, (7, 9), pad_value=255)
    assert padded.shape == (7, 9)
    np.testing.assert_array_equal(padded[1:6, 1:7], image)
    assert (padded[0] == 255).all() and (padded[:, -2:] == 255).all()
    mixed = fit_to_size(image[..., None], (3, 8))  # crop rows, pad columns
    assert mixed.shape == (3, 8, 1)
    np.testing.assert_array_equal(mixed[:, 1:7, 0], image[1:4])
    with pytest.raises(ValueError, match="fit_to_size"):
        fit_to_size(image, (0, 3))


def test_sequence_mixed_modes_and_sizes(tmp_path):
    root = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (20, 30, 3), np.uint8)
    _write_image(root / "a" / "s_001.tif", first)  # sets the size: 20 x 30
    big = rng.integers(0, 255, (26, 40), np.uint8)
    _write_image(root / "a" / "s_002.tif", big)  # greyscale, larger
    small = np.zeros((10, 12, 4), np.uint8)
    small[..., 0], small[..., 3] = 100, 255
    _write_image(root / "b" / "t_001.png", small)  # RGBA, smaller
    index = index_image_folder(root)
    sequence = ImageSequence(index, batch_size=3, pad_value=7)
    assert sequence.image_size == (20, 30)
    images, labels = sequence[0]
    assert images.shape == (3, 20, 30, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1] and labels.dtype == np.int32
    np.testing.assert_array_equal(images[0], first)
    np.testing.assert_array_equal(images[1, ..., 1], big[3:23, 5:35])  # centre crop
    assert images[2, 5:15, 9:21].tolist() == [[[100, 0, 0]] * 12] * 10  # centred
    assert (images[2, :5] == 7).all() and (images[2, :, :9] == 7).all()  # padding


def test_sequence_batches_shuffle_and_epochs():
    source = SyntheticLymphoma(n_per_class=3, image_size=(32, 40), seed=0)

    class CountingSource:
        labels = source.labels
        loads = 0

        def __len__(self):
            return len(source)

        def load_image(self, i):
            CountingSource.loads += 1
            return source.load_image(i)

    counting = CountingSource()
    sequence = ImageSequence(
        counting,
        batch_size=4,
        shuffle=True,
        seed=5,
        dtype="float32",
        workers=2,
        use_multiprocessing=False,
        max_queue_size=3,
    )
    assert (
        sequence.workers,
        sequence.use_multiprocessing,
        sequence.max_queue_size,
    ) == (2, False, 3)
    assert counting.loads == 1  # image size probe
    assert len(sequence) == 3
    x, y = sequence[1]
    assert counting.loads == 5  # one batch decoded, nothing more
    assert x.shape == (4, 32, 40, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sequence[2][0].shape == (1, 32, 40, 3)
    with pytest.raises(IndexError):
        sequence[3]

    epoch0 = sequence.indices.copy()
    assert sorted(epoch0.tolist()) == list(range(9))
    batches = [sequence[i][1] for i in range(len(sequence))]
    np.testing.assert_array_equal(np.concatenate(batches), sequence.labels)
    sequence.on_epoch_end()
    assert not np.array_equal(sequence.indices, epoch0)
    assert sorted(sequence.indices.tolist()) == list(range(9))
    # Same seed, same epoch -> same order; the order does not drift.
    again = ImageSequence(source, batch_size=4, shuffle=True, seed=5)
    np.testing.assert_array_equal(again.indices, epoch0)

    dropped = ImageSequence(
        source, batch_size=4, indices=[8, 0, 4, 2, 6], drop_remainder=True
    )
    assert len(dropped) == 1
    assert dropped.indices.tolist() == [8, 0, 4, 2]
    assert dropped[0][1].tolist() == source.labels[[8, 0, 4, 2]].tolist()

    with pytest.raises(ValueError, match="dtype"):
        ImageSequence(source, dtype="float16")
    with pytest.raises(ValueError, match="indices"):
        ImageSequence(source, indices=[0, 99])


def test_sequence_augmentation_is_reproducible():
    source = SyntheticLymphoma(n_per_class=2, image_size=(32, 48), seed=1)
    augment = Augment(
        crop_size=(24, 24),
        horizontal_flip=True,
        rotate90=True,
        contrast=(0.8, 1.2),
        brightness=0.1,
    )
    a = ImageSequence(source, batch_size=6, augment=augment, seed=3)
    b = ImageSequence(source, batch_size=6, augment=augment, seed=3)
    first = a[0][0]
    assert first.shape == (6, 24, 24, 3)
    np.testing.assert_array_equal(first, b[0][0])
    np.testing.assert_array_equal(first, a[0][0])  # re-reading a batch: same
    a.on_epoch_end()
    assert not np.array_equal(first, a[0][0])  # new epoch: new draws


def test_sequence_trains_with_fit():
    source = SyntheticLymphoma(n_per_class=2, image_size=(16, 16), seed=0)
    sequence = ImageSequence(
        source, batch_size=3, shuffle=True, seed=0, dtype="float32", workers=2
    )
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(sequence, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    # fit calls on_epoch_end after each epoch (and, on some backends, once
    # more before the first one), so the order was reshuffled.
    assert sequence.epoch >= 2


# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------


def _ramp_batch(batch=4, height=6, width=8):
    values = np.arange(batch * height * width * 3) % 251
    return values.reshape(batch, height, width, 3).astype(np.uint8)


def test_augment_geometry_is_a_permutation_of_a_crop():
    batch = _ramp_batch()
    out = Augment(horizontal_flip=True, vertical_flip=True)(batch, rng=0)
    assert out.shape == batch.shape and out.dtype == np.uint8
    seen = set()
    for image, original in zip(out, batch):
        variants = {
            "id": original,
            "h": original[:, ::-1],
            "v": original[::-1],
            "hv": original[::-1, ::-1],
        }
        matches = [k for k, v in variants.items() if np.array_equal(image, v)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1  # flips actually happen

    crop = Augment(crop_size=(4, 5))(batch, rng=1)
    assert crop.shape == (4, 4, 5, 3)
    for image, original in zip(crop, batch):
        hits = [
            (top, left)
            for top in range(3)
            for left in range(4)
            if np.array_equal(original[top : top + 4, left : left + 5], image)
        ]
        assert hits


def test_augment_rotation_keeps_shape():
    square = _ramp_batch(8, 5, 5)
    out = Augment(rotate90=True)(square, rng=2)
    assert out.shape == square.shape
    turns = {
        next(k for k in range(4) if np.array_equal(np.rot90(o, k), r))
        for o, r in zip(square, out)
    }
    assert len(turns) > 1
    wide = _ramp_batch(8, 4, 6)
    out = Augment(rotate90=True)(wide, rng=2)  # only 0 / 180 degrees
    assert out.shape == wide.shape
    for o, r in zip(wide, out):
        assert np.array_equal(o, r) or np.array_equal(np.rot90(o, 2), r)


def test_augment_colour_and_zoom():
    rng = np.random.default_rng(0)
    batch = rng.integers(60, 200, (6, 16, 16, 3), np.uint8)
    assert np.array_equal(Augment()(batch, rng=0), batch)  # everything off
    assert np.array_equal(Augment(zoom=(0.0, 0.0))(batch, rng=0), batch)
    flat = Augment(contrast=(0.0, 0.0))(batch, rng=0)  # contrast 0: the mean
    np.testing.assert_allclose(flat.std(axis=(1, 2)), 0, atol=0.6)
    np.testing.assert_allclose(
        flat.mean(axis=(1, 2)), batch.mean(axis=(1, 2)), atol=0.6
    )
    bright = Augment(brightness=0.2)(batch, rng=0).astype(int) - batch
    shifts = bright.mean(axis=(1, 2, 3))
    assert np.all(np.abs(shifts) <= 0.2 * 255 + 1) and np.ptp(shifts) > 5
    gains = Augment(channel_gain=0.3)(batch, rng=0).astype(float) / batch
    assert np.ptp(gains.mean(axis=(1, 2)), axis=1).max() > 0.05  # channels differ
    # Zooming out by 1 (the view spans twice the image) keeps the centre
    # pixel and mirrors content into the border: output pixel 0 (centre 0.5)
    # maps to 7.5 + (0.5 - 7.5) * 2 = -6.5, i.e. pixel -7, mirrored to 6.
    odd = batch[:, :15, :15]
    zoomed = Augment(zoom=(1.0, 1.0))(odd, rng=0)
    assert zoomed.shape == odd.shape
    np.testing.assert_array_equal(zoomed[:, 7, 7], odd[:, 7, 7])
    np.testing.assert_array_equal(zoomed[:, 0, 0], odd[:, 6, 6])
    np.testing.assert_array_equal(zoomed[:, 7, 8], odd[:, 7, 9])  # 2x stride
    assert not np.array_equal(
        Augment(contrast=(0.5, 1.5))(batch, rng=1),
        Augment(contrast=(0.5, 1.5))(batch, rng=2),
    )


def test_augment_validation():
    with pytest.raises(ValueError, match="crop_size"):
        Augment(crop_size=(0, 4))
    with pytest.raises(ValueError, match="contrast"):
        Augment(contrast=(1.2, 0.8))
    with pytest.raises(ValueError, match="zoom"):
        Augment(zoom=(-1.5, 0.0))
    with pytest.raises(ValueError, match="larger than the images"):
        Augment(crop_size=(10, 10))(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        Augment()(np.zeros((1, 8, 8, 3), np.float32))


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def _slide_layout(seed=0):
    """An IICBU-like layout: 10 slides per class with 10-19 images each."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for cls in range(3):
        for slide in range(10):
            n = int(rng.integers(10, 20))
            labels += [cls] * n
            groups += [f"c{cls}-s{slide}"] * n
    return np.array(labels), np.array(groups)


def test_split_random_is_stratified_and_complete():
    labels = np.repeat([0, 1, 2], [113, 139, 122])
    train, val, test = split_random(labels, (0.7, 0.15, 0.15), seed=0)
    everything = np.concatenate([train, val, test])
    assert sorted(everything.tolist()) == list(range(len(labels)))
    for part, fraction in zip((train, val, test), (0.7, 0.15, 0.15)):
        counts = np.bincount(labels[part], minlength=3)
        np.testing.assert_allclose(counts, fraction * np.bincount(labels), atol=1)
    again = split_random(labels, (0.7, 0.15, 0.15), seed=0)
    other = split_random(labels, (0.7, 0.15, 0.15), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(train, other[0])


@pytest.mark.parametrize("seed", range(5))
def test_split_by_group_never_leaks_a_slide(seed):
    labels, groups = _slide_layout(seed)
    splits = split_by_group(labels, groups, (0.7, 0.15, 0.15), seed=seed)
    assert sorted(np.concatenate(splits).tolist()) == list(range(len(labels)))
    group_sets = [set(groups[s]) for s in splits]
    assert not (group_sets[0] & group_sets[1])
    assert not (group_sets[0] & group_sets[2])
    assert not (group_sets[1] & group_sets[2])
    sizes = np.array([len(s) for s in splits]) / len(labels)
    np.testing.assert_allclose(sizes, (0.7, 0.15, 0.15), atol=0.07)
    for part in splits:  # stratified: every class in every split
        assert set(labels[part].tolist()) == {0, 1, 2}


def test_split_by_group_fills_every_split():
    labels = np.array([0] * 8 + [1] * 8)
    groups = np.repeat(["a", "b", "c", "d"], 4)
    splits = split_by_group(labels, groups, (0.5, 0.25, 0.25), seed=0)
    assert all(len(s) > 0 for s in splits)
    with pytest.raises(ValueError, match="2 group"):
        split_by_group([0, 0, 1, 1], ["a", "a", "b", "b"], (0.7, 0.15, 0.15))


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.2), (0.8, 0.3, -0.1), (), (float("nan"), 1.0)]
)
def test_split_fraction_validation(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_random([0, 1, 0, 1], fractions)
    with pytest.raises(ValueError, match="fractions"):
        split_by_group([0, 1, 0, 1], ["a", "b", "c", "d"], fractions)


def test_split_by_group_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        split_by_group([0, 1], ["a"], (0.5, 0.5))


# --------------------------------------------------------------------------
# Synthetic lymphoma
# --------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_seed_dependent():
    a = SyntheticLymphoma(n_per_class=2, image_size=(96, 128), seed=7, cell_scale=0.6)
    b = SyntheticLymphoma(n_per_class=2, image_size=(96, 128), seed=7, cell_scale=0.6)
    c = SyntheticLymphoma(n_per_class=2, image_size=(96, 128), seed=8, cell_scale=0.6)
    late = b.generate(5)  # generating out of order changes nothing
    for i in range(len(a)):
        sample = a.generate(i)
        assert sample.image.dtype == np.uint8 and sample.image.shape == (96, 128, 3)
        np.testing.assert_array_equal(sample.image, b.load_image(i))
        assert not np.array_equal(sample.image, c.load_image(i))
    np.testing.assert_array_equal(late.image, a.load_image(5))
    np.testing.assert_array_equal(late.evidence_mask, a.generate(5).evidence_mask)
    # Different images of one source differ too.
    assert not np.array_equal(a.load_image(0), a.load_image(1))


def test_synthetic_labels_groups_and_evidence():
    source = SyntheticLymphoma(
        n_per_class=5,
        image_size=(96, 128),
        seed=0,
        images_per_slide=2,
        evidence_fraction=0.2,
    )
    assert source.class_names == ("CLL", "FL", "MCL")
    assert np.bincount(source.labels).tolist() == [5, 5, 5]
    assert source.labels.dtype == np.int32
    # Each slide holds images of one class, at most images_per_slide of them.
    for group in np.unique(source.groups):
        members = source.labels[source.groups == group]
        assert len(set(members.tolist())) == 1 and 1 <= len(members) <= 2
    assert len(np.unique(source.groups)) == 9  # 3 slides per class: 2 + 2 + 1
    for i in (0, 7, 14):
        sample = source.generate(i)
        assert abs(sample.evidence_mask.mean() - 0.2) < 0.03
        for cy, cx, r in sample.regions:
            assert (
                0 <= cy - r + 1
                and cy + r - 1 <= 96
                and 0 <= cx - r + 1
                and cx + r - 1 <= 128
            )
        # Evidence regions are dense with nuclei (dark in the red channel).
        nuclei = sample.image[..., 0] < 185
        assert (
            nuclei[sample.evidence_mask].mean()
            > 2 * nuclei[~sample.evidence_mask].mean()
        )


def test_make_synthetic_lymphoma_and_streaming():
    data = make_synthetic_lymphoma(2, image_size=(40, 48), seed=3, images_per_slide=1)
    assert data["images"].shape == (6, 40, 48, 3) and data["images"].dtype == np.uint8
    assert data["evidence_masks"].shape == (6, 40, 48)
    assert data["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(set(data["groups"].tolist())) == 6
    source = SyntheticLymphoma(2, image_size=(40, 48), seed=3, images_per_slide=1)
    images, labels = ImageSequence(source, batch_size=6)[0]
    np.testing.assert_array_equal(images, data["images"])
    np.testing.assert_array_equal(labels, data["labels"])


def test_synthetic_full_size_image():
    source = SyntheticLymphoma(n_per_class=1, seed=0)  # 1040 x 1388
    start = time.perf_counter()
    image = source.load_image(0)
    assert image.shape == (1040, 1388, 3) and image.dtype == np.uint8
    # Printed, not asserted: speed belongs to the benchmarks.
    print(f"a full-size synthetic image in {time.perf_counter() - start:.2f} s")


def test_synthetic_validation():
    with pytest.raises(ValueError, match="evidence_fraction"):
        SyntheticLymphoma(1, evidence_fraction=0.0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticLymphoma(1, image_size=(8, 8))
    with pytest.raises(IndexError):
        SyntheticLymphoma(1, image_size=(32, 32)).generate(3)


# Features for the separability test --------------------------------------


def _nuclei(image):
    # Haematoxylin-stained nuclei are purple/blue: low red, unlike the pink
    # stroma and pale gaps. The threshold sits between the two for every
    # slide stain the generator draws.
    return image[..., 0] < 185


def _erode(mask):
    out = np.zeros_like(mask)
    out[1:-1, 1:-1] = (
        mask[1:-1, 1:-1]
        & mask[:-2, 1:-1]
        & mask[2:, 1:-1]
        & mask[1:-1, :-2]
        & mask[1:-1, 2:]
    )
    return out


def _morphology_features(image, region):
    """Nucleus size and clustering statistics inside ``region``."""
    nuclei = _nuclei(image)
    total = max(1, np.count_nonzero(nuclei & region))
    features, eroded = [], nuclei
    for _ in range(3):  # granulometry: how much survives 1, 2, 3 erosions
        eroded = _erode(eroded)
        features.append(np.count_nonzero(eroded & region) / total)
    # Clustering: spread of nucleus density over 8x8 blocks inside the region.
    h, w = (nuclei.shape[0] // 8) * 8, (nuclei.shape[1] // 8) * 8
    blocks = nuclei[:h, :w].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))
    inside = region[:h, :w].reshape(h // 8, 8, w // 8, 8).all(axis=(1, 3))
    features.append(blocks[inside].std() if inside.sum() > 1 else 0.0)
    return features


def _colour_histogram(image):
    return (
        np.concatenate(
            [np.histogram(image[..., c], bins=8, range=(0, 256))[0] for c in range(3)]
        )
        / image[..., 0].size
    )


def _nearest_centroid_accuracy(features, labels, train, test):
    mean, std = features[train].mean(0), features[train].std(0) + 1e-9
    z = (features - mean) / std
    centroids = np.stack([z[train][labels[train] == c].mean(0) for c in range(3)])
    predicted = np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((predicted == labels[test]).mean())


def test_synthetic_classes_separable_only_by_evidence_morphology():
    # One image per slide, so each image has its own stain and the colour
    # baseline is not judged on a handful of correlated slides.
    source = SyntheticLymphoma(
        n_per_class=20,
        image_size=(160, 192),
        seed=0,
        evidence_fraction=0.2,
        images_per_slide=1,
    )
    samples = [source.generate(i) for i in range(len(source))]
    labels = source.labels
    train, test = split_by_group(labels, source.groups, (0.5, 0.5), seed=0)

    evidence = np.array(
        [_morphology_features(s.image, s.evidence_mask) for s in samples]
    )
    # Control: the same features on tissue away from the evidence regions.
    away = []
    for s in samples:
        grown = s.evidence_mask.copy()
        for _ in range(8):
            grown = ~_erode(~grown)
        away.append(_morphology_features(s.image, ~grown))
    colour = np.array([_colour_histogram(s.image) for s in samples])

    evidence_acc = _nearest_centroid_accuracy(evidence, labels, train, test)
    away_acc = _nearest_centroid_accuracy(np.array(away), labels, train, test)
    colour_acc = _nearest_centroid_accuracy(colour, labels, train, test)
    assert evidence_acc >= 0.9, (evidence_acc, away_acc, colour_acc)
    assert away_acc <= 0.55, (evidence_acc, away_acc, colour_acc)
    assert colour_acc <= 0.5, (evidence_acc, away_acc, colour_acc)
    assert evidence_acc - colour_acc >= 0.35
