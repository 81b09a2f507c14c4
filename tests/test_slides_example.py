"""End-to-end test of `examples/slides.py`: generated slides written on the
first run, training on slide-level labels, the saved model, a picture per
test slide and the explained demo slide."""

import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("tifffile")
pytest.importorskip("zarr")

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def load_example():
    spec = importlib.util.spec_from_file_location(
        "slides_example", os.path.join(EXAMPLES, "slides.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trains_on_generated_slides_and_draws_each(tmp_path):
    example = load_example()
    output = tmp_path / "run"
    # A generated slide stands in for the demo slide (no download here).
    demo = example.synthetic.write_slide(
        str(tmp_path / "demo.tif"), 0, (512, 768), seed=9
    )
    argv = ["--quick", "--epochs", "2", "--output", str(output), "--demo-slide", demo]
    result = example.main(argv)
    assert result["n_test"] == 6 and 0.0 <= result["test_accuracy"] <= 1.0
    pictures = sorted(os.listdir(output / "test"))
    assert len(pictures) == 6 and all(name.endswith(".png") for name in pictures)
    assert os.path.getsize(output / "demo.png") > 0
    assert (output / "model.keras").exists()

    # The data set is written once: a second run reuses the same files.
    data = output / "data"
    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*.tif")}
    example.main([*argv, "--epochs", "1"])
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*.tif")} == stamps
    assert len(stamps) == 18


def test_the_example_reports_a_bad_slide_and_trains_on_the_rest(tmp_path, capsys):
    example = load_example()
    output = tmp_path / "run"
    folder = example.synthetic.write_slide_folder(
        str(tmp_path / "slides"), n_per_class=3, shape=(512, 768), seed=2
    )
    broken = os.path.join(folder, example.synthetic.CLASSES[0], "broken.svs")
    with open(broken, "wb") as handle:
        handle.write(b"not a slide")
    demo = os.path.join(folder, example.synthetic.CLASSES[1])
    demo = os.path.join(demo, sorted(os.listdir(demo))[0])
    with pytest.warns(UserWarning, match="(?s)skipped 1 slide.*broken.svs"):
        result = example.main(
            [
                "--slides",
                folder,
                "--epochs",
                "1",
                "--output",
                str(output),
                "--demo-slide",
                demo,
                "--scale",
                "16",
            ]
        )
    assert result["n_test"] == 3
    assert np.isfinite(result["test_accuracy"])
