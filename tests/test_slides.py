"""Training and predicting from slides on disk, on every backend: sampling
made data, the importance weights that keep the gradient on-policy, and the
tissue mask."""

import os

import keras
import numpy as np
import pytest
from keras import ops

pytest.importorskip("tifffile")
pytest.importorskip("zarr")

from layer_testing import run_layer_test  # noqa: E402

import keras_attention_sampling as kas  # noqa: E402
from keras_attention_sampling.slides import synthetic  # noqa: E402


@pytest.fixture(scope="module")
def slide_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("slides"))
    return synthetic.write_slide_folder(folder, n_per_class=2, shape=(512, 768), seed=0)


def slide_model(**kwargs):
    settings = dict(
        scale=16,
        n_patches=4,
        patch_size=24,
        samples_per_image=2,
        seed=0,
        tissue_mask=True,
        attention_network=kas.AttentionMap(blocks=1, filters=4),
        feature_network=kas.NormalizedFeature(
            3,
            backbone=keras.Sequential(
                [
                    keras.layers.Conv2D(4, 3, activation="relu"),
                    keras.layers.GlobalAveragePooling2D(),
                ]
            ),
        ),
    )
    settings.update(kwargs)
    return kas.AttentionSamplingModel(3, **settings)


def test_fit_predict_and_explain_from_slides(slide_folder, tmp_path):
    model = slide_model()
    model.compile(metrics=["accuracy"])
    history = model.fit(slide_folder, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    index = kas.slides.index_slides(slide_folder)
    probabilities = model.predict(index.paths[:3], verbose=0)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    model.inference_sampling = "top_k"
    with kas.slides.open_slide(index.paths[0]) as slide:
        explanation = model.explain(slide)
        # The patches are the slide's pixels at the reported centres.
        for centre, patch in zip(
            explanation["positions"][0], explanation["patches"][0]
        ):
            corner = np.floor(centre).astype(int) - 12
            np.testing.assert_array_equal(patch, slide.read_region(corner, (24, 24)))
        top_k = model.predict(slide, verbose=0)
    np.testing.assert_allclose(
        explanation["probabilities"], top_k, rtol=1e-5, atol=1e-6
    )
    assert explanation["attention"].shape == (1, 32, 48)
    # Saved and reloaded, with its tissue mask: the same predictions.
    path = os.path.join(tmp_path, "slides.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.tissue_mask, kas.TissueMask)
    np.testing.assert_allclose(
        loaded.predict(index.paths[0], verbose=0), top_k, rtol=1e-5, atol=1e-6
    )


def test_patches_read_from_disk_equal_the_in_memory_ones(slide_folder):
    model = slide_model(samples_per_image=1, tissue_mask=None, padding="reflect")
    index = kas.slides.index_slides(slide_folder)
    dataset = kas.slides.SlideDataset(model, index.paths[:2], training=False)
    inputs = dataset[0][0]
    with kas.slides.open_slide(index.paths[0]) as slide:
        image = slide.read_region((0, 0), slide.shape[:2])[None]
    centres = kas.sampling.cells_to_centres(inputs["cells"][:1], (32, 48), (512, 768))
    in_memory = kas.sampling.gather_patches(image, centres, 24, "reflect")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(in_memory), inputs["patches"][:1]
    )


def test_importance_weights_correct_stale_proposals(slide_folder):
    model = slide_model(samples_per_image=1, tissue_mask=None)
    index = kas.slides.index_slides(slide_folder)
    dataset = kas.slides.SlideDataset(model, index.paths[:2], labels=index.labels[:2])
    dataset.training = True
    old_state = model.attention_state() if model.built else None
    inputs, _ = dataset[0]
    outputs = model.policy_forward(inputs, training=True)
    # Drawn with the weights of this step: the ratio is 1.
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs["importance"]), 1.0, rtol=1e-4
    )
    del old_state
    # The weights move on after the cells were drawn: the ratio is
    # p_new(cells) / p_old(cells), computed independently here.
    old_log = ops.convert_to_numpy(
        model.policy_forward(inputs, training=True)["draw_log_probs"]
    ).sum(-1)
    head = model.attention_network.head
    kernel = ops.convert_to_numpy(head.kernel)
    head.kernel.assign(kernel + np.random.default_rng(0).normal(0, 0.5, kernel.shape))
    moved = model.policy_forward(inputs, training=True)
    new_log = ops.convert_to_numpy(moved["draw_log_probs"]).sum(-1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(moved["importance"]), np.exp(new_log - old_log), rtol=1e-4
    )
    assert not np.allclose(new_log, old_log)


def test_the_step_weights_each_image_by_its_importance(slide_folder):
    model = slide_model(samples_per_image=1, tissue_mask=None)
    model.compile()
    index = kas.slides.index_slides(slide_folder)
    dataset = kas.slides.SlideDataset(model, index.paths[:2], labels=index.labels[:2])
    dataset.training = True
    inputs, labels = dataset[0]
    model.policy_forward(inputs, training=True)
    plain = model.policy_step(inputs, labels, training=True)
    shifted = dict(
        inputs, proposal_log_probs=inputs["proposal_log_probs"] - np.log(2.0)
    )
    doubled = model.policy_step(shifted, labels, training=True)
    # q halved, every ratio doubled: the whole per-image loss doubles.
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(doubled)),
        2 * float(ops.convert_to_numpy(plain)),
        rtol=1e-4,
    )


def test_the_tissue_mask_keeps_attention_on_tissue(tmp_path):
    view = np.full((2, 8, 8, 3), 240, np.uint8)
    view[:, 2:5, 3:6] = (200, 90, 160)
    run_layer_test(
        kas.TissueMask,
        {"glass_chroma": 0.2},
        view,
        (2, 8, 8),
        tmp_path,
        trainable=False,
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
    )
    mask = ops.convert_to_numpy(kas.TissueMask()(view))
    assert mask.sum() == 2 * 9 and mask[:, 2:5, 3:6].all()
    model = kas.AttentionSamplingModel(
        3, scale=2, n_patches=6, patch_size=4, tissue_mask=True, seed=0
    )
    images = np.repeat(np.repeat(view, 2, axis=1), 2, axis=2)
    details = model.policy_forward(images, training=True)
    attention = np.exp(ops.convert_to_numpy(details["log_attention"]))
    np.testing.assert_allclose(attention.sum((1, 2)), 1.0, rtol=1e-5)
    assert attention[:, ~mask[0]].max() < 1e-30
    cells = ops.convert_to_numpy(details["cells"])
    assert mask[0].reshape(-1)[cells].all()
    assert np.isfinite(ops.convert_to_numpy(details["draw_log_probs"])).all()
    # All glass: nothing to keep off, the whole map stays.
    glass = np.full((1, 8, 8, 3), 240, np.uint8)
    assert ops.convert_to_numpy(kas.TissueMask()(glass)).all()
    with pytest.raises(
        ValueError, match="tissue_mask must be None, True or a kas.TissueMask"
    ):
        kas.AttentionSamplingModel(3, tissue_mask="otsu")


def test_drawn_inputs_with_the_wrong_geometry(slide_folder):
    model = slide_model()
    index = kas.slides.index_slides(slide_folder)
    inputs = kas.slides.SlideDataset(model, index.paths[:1])[0][0]
    wrong = dict(inputs, patches=inputs["patches"][:, :, :20, :20])
    with pytest.raises(ValueError, match=r"drawn patches must be \(B, 4, 24, 24, C\)"):
        slide_model()(wrong)
    with pytest.raises(ValueError, match="AutoregressiveSampler chooses each cell"):
        kas.AttentionSamplingModel(
            3, sampler=kas.AutoregressiveSampler(4, 24), scale=16
        )(inputs)


def test_a_slide_smaller_than_a_patch(tmp_path):
    import tifffile

    path = str(tmp_path / "tiny.tif")
    tifffile.imwrite(
        path, np.zeros((40, 20, 3), np.uint8), tile=(16, 16), photometric="rgb"
    )
    model = slide_model(scale=4, tissue_mask=None)
    expected = "tiny.tif: level 0 is 40x20, smaller than a 24x24 patch"
    with pytest.raises(kas.slides.SlideError, match=expected):
        model.predict(path, verbose=0)


class CountingSlide(kas.slides.ArraySlide):
    """An in-memory slide that counts the pixel reads made from it."""

    reads = 0

    def _read(self, level, rows, cols):
        self.reads += 1
        return super()._read(level, rows, cols)


def test_workers_share_the_slides_and_read_only_their_own():
    rng = np.random.default_rng(0)
    sizes = [(160, 240), (192, 256), (160, 240), (224, 224), (160, 288)]
    slides = [
        CountingSlide(rng.integers(0, 256, (*size, 3), dtype="uint8")) for size in sizes
    ]
    model = slide_model(samples_per_image=1, tissue_mask=None)
    shards = [
        kas.slides.SlideDataset(
            model, slides, labels=[0, 1, 2, 0, 1], shard=(worker, 2), training=False
        )
        for worker in range(2)
    ]
    # The same number of steps and one view shape (over all slides) on both.
    assert [len(dataset) for dataset in shards] == [3, 3]
    assert shards[0].view_shape == shards[1].view_shape == (224 // 16, 288 // 16)
    assert [int(v) for v in shards[1].labels] == [1, 0, 1]  # 1, 3, then 1 again
    owned = [{id(slide) for slide in dataset.slides} for dataset in shards]
    assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == 5
    for worker, dataset in enumerate(shards):
        for slide in slides:
            slide.reads = 0
        for batch in range(len(dataset)):
            dataset[batch]
        read = {i for i, slide in enumerate(slides) if slide.reads}
        assert read == {i for i in range(5) if i % 2 == worker}
    with pytest.raises(ValueError, match=r"shard must be \(index, count\)"):
        kas.slides.SlideDataset(model, slides, shard=(2, 2))
    with pytest.raises(kas.slides.SlideError, match="5 slides cannot be shared by 8"):
        kas.slides.SlideDataset(model, slides, shard=(0, 8))
