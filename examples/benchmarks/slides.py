"""Whole-slide images from disk: time and memory per slide from 1 MP to 10 GP.

Generated JPEG-tiled pyramidal BigTIFFs (`kas.slides.synthetic.write_slide`,
each level 4x smaller, 256x256 tiles) of `--sizes` (square, level-0 side in
pixels) are written to `--data` once (a size whose file would not fit on the
disk is skipped). For each size, three phases run, each in a fresh process:

- `predict`: `model.predict(path)`: open the slide, make its view from the
  pyramid, draw the cells, read their patches, run the model;
- `explain`: `model.explain(path)`, the same plus everything a picture
  needs;
- `train`: one training step on the slide (`SlideDataset` batch of 1 slide,
  the reference notebook's 4 draws, `train_on_batch`);

and, where it fits (`--cnn-max-side`), `full-res CNN`: one training step of
the reference notebook's patch CNN on the whole level 0 read into memory.

Model: `AttentionSamplingModel(3, n_patches=20, patch_size=64,
tissue_mask=True)`, and every slide seen through a `--view` x `--view` view
(`SlideDataset(view_shape=...)`), so a cell covers more of a larger slide
and the cost per slide need not depend on its size. Each phase is timed
once to open and compile, then `--repeats` times (the median is reported)
and its peak RSS is sampled with psutil over the whole process; *above
baseline* subtracts the RSS after imports and the model's build.
Measurements go to `examples/benchmarks/results/slides.json`, merged by
(size, phase); the `slides` section of docs/benchmarks.md and its plot
(`docs/images/slides.png`) are rendered from it.
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("side", "phase")
PHASES = ("predict", "explain", "train", "full-res CNN")
SIZES = (1024, 4096, 16384, 32768, 65536, 100000)
# JPEG at quality 90 of the generated tissue: about 0.23 bytes per pixel.
BYTES_PER_PIXEL = 0.3


def slide_path(args, side):
    return os.path.join(args.data, f"slide-{side}.tif")


def ensure_slide(args, side):
    """The slide of this size, written once; None if the disk is too small."""
    from keras_attention_sampling.slides import synthetic

    path = slide_path(args, side)
    if os.path.exists(path):
        return path
    os.makedirs(args.data, exist_ok=True)
    need = side * side * BYTES_PER_PIXEL * 1.34  # the pyramid adds a third
    free = shutil.disk_usage(args.data).free
    if need > free - args.keep_free_gb * 2**30:
        print(f"skipping {side}x{side}: it needs ~{need / 2**30:.1f} GB of disk")
        return None
    start = time.perf_counter()
    synthetic.write_slide(path + ".part", 1, (side, side), seed=side)
    os.replace(path + ".part", path)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return path


def build(args):
    import keras

    import keras_attention_sampling as kas

    keras.utils.set_random_seed(0)
    model = kas.AttentionSamplingModel(
        3, n_patches=20, patch_size=64, tissue_mask=True, seed=0
    )
    model.compile()
    return model


def timed(call, repeats, result):
    """The first call's time (it opens and compiles), then the median of
    `repeats` more."""
    import numpy as np

    start = time.perf_counter()
    call()
    result["first_s"] = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    result["seconds"] = float(np.median(times))


def worker(args):
    import keras
    import numpy as np

    import keras_attention_sampling as kas

    path = slide_path(args, args.side)
    result = {
        "side": args.side,
        "phase": args.phase,
        "megapixels": args.side**2 / 1e6,
        "file_mb": os.path.getsize(path) / 2**20,
        "backend": keras.backend.backend(),
    }
    with _common.PeakRSS() as peak:
        if args.phase == "full-res CNN":
            model = _common.cnn_baseline((args.side, args.side, 3), 3)
            baseline = result["baseline_mb"] = _common.rss_mb()
            start = time.perf_counter()
            with kas.slides.open_slide(path) as slide:
                image = slide.read_region((0, 0), (args.side, args.side))[None]
            result["read_s"] = time.perf_counter() - start
            label = np.zeros((1,), "int32")

            def call():
                model.train_on_batch(image, label)

            timed(call, args.repeats, result)
        else:
            model = build(args)
            view = (args.view, args.view)
            model.build(
                {
                    "view": (None, *view, 3),
                    "cells": (None, 20),
                    "patches": (None, 20, 64, 64, 3),
                    "proposal_log_probs": (None,),
                }
            )
            baseline = result["baseline_mb"] = _common.rss_mb()

            def call():
                # A fresh dataset every time: the slide is opened, its view
                # made from the pyramid, its patches read, as a new slide is.
                data = kas.slides.SlideDataset(
                    model, [path], labels=[1], view_shape=view
                )
                if args.phase == "predict":
                    model.predict(data, verbose=0)
                elif args.phase == "explain":
                    model.explain(data)
                else:
                    data.training = True
                    data.hold_weights()
                    inputs, labels = data[0]
                    model.train_on_batch(inputs, labels)

            timed(call, args.repeats, result)
    result["peak_mb"] = peak.peak_mb
    result["peak_above_mb"] = peak.peak_mb - baseline
    _common.write_json(args.result, result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--data", default=os.path.join("runs", "benchmark-slides"))
    parser.add_argument("--view", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cnn-max-side", type=int, default=4096)
    parser.add_argument("--keep-free-gb", type=float, default=4.0)
    parser.add_argument("--max-rss-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=int, default=1800)
    _common.add_output_arguments(parser, "slides")
    _common.add_worker_arguments(parser, side=int, phase=str)
    parsed = _common.parse_main(parser, worker, KEY)
    if parsed is None:
        return
    args, backend, results = parsed
    if not args.report_only:
        settings = {
            "view": args.view,
            "repeats": args.repeats,
            "cnn_max_side": args.cnn_max_side,
        }
        results.start([backend], settings, same=("view", "repeats"))
        for side in (int(s) for s in args.sizes.split(",")):
            path = ensure_slide(args, side)
            if path is None:
                continue
            for phase in args.phases.split(","):
                if phase == "full-res CNN" and side > args.cnn_max_side:
                    continue
                record = _common.run_point(
                    __file__,
                    {"side": side, "phase": phase},
                    {"view": args.view, "repeats": args.repeats, "data": args.data},
                    backend=backend,
                    timeout=args.timeout,
                    max_rss_gb=args.max_rss_gb,
                )
                error = record.get("error")
                print(side, phase, record.get("seconds"), record.get("peak_mb"), error)
                results.add(record)
    report(results, args)


def report(results, args):
    records = sorted(
        results.records, key=lambda r: (r["side"], PHASES.index(r["phase"]))
    )
    header = [
        "slide (level 0)",
        "pixels",
        "file",
        "phase",
        "time (warm)",
        "time (first)",
        "peak RSS",
        "peak above baseline",
    ]
    rows = []
    for r in records:
        if "seconds" not in r:
            rows.append(
                [f"{r['side']}²", "", "", r["phase"], r.get("error", "–"), "", "", ""]
            )
            continue
        rows.append(
            [
                f"{r['side']}²",
                _pixels(r["side"]),
                f"{r['file_mb']:.0f} MB",
                r["phase"],
                _common.format_seconds(r["seconds"]),
                _common.format_seconds(r["first_s"]),
                f"{r['peak_mb'] / 1024:.2f} GB",
                f"{r['peak_above_mb']:.0f} MB",
            ]
        )
    _common.print_table(header, rows)
    done = [r for r in records if "seconds" in r and r["phase"] != "full-res CNN"]
    if not done:
        return
    sides = sorted({r["side"] for r in done})
    small, large = sides[0], sides[-1]

    def get(side, phase, key):
        for r in done:
            if (r["side"], r["phase"]) == (side, phase):
                return r.get(key)
        return None

    ratio_rows = []
    for phase in ("predict", "explain", "train"):
        t_small, t_large = get(small, phase, "seconds"), get(large, phase, "seconds")
        m_small, m_large = get(small, phase, "peak_mb"), get(large, phase, "peak_mb")
        if None in (t_small, t_large, m_small, m_large):
            continue
        ratio_rows.append(
            [
                phase,
                f"{t_large / t_small:.2f}x",
                f"{m_large / m_small:.2f}x",
                f"{m_large / 1024:.2f} GB",
            ]
        )
    cnn = [r for r in records if r["phase"] == "full-res CNN" and "seconds" in r]
    cnn_rows = [
        [
            f"{r['side']}²",
            f"{r['seconds'] / get(r['side'], 'train', 'seconds'):.1f}x",
            f"{r['peak_above_mb'] / get(r['side'], 'train', 'peak_above_mb'):.1f}x",
        ]
        for r in cnn
        if get(r["side"], "train", "seconds")
    ]
    ratio_header = [
        "phase",
        f"time {_pixels(large)} / {_pixels(small)}",
        f"peak RSS {_pixels(large)} / {_pixels(small)}",
        f"peak RSS at {_pixels(large)}",
    ]
    print()
    _common.print_table(ratio_header, ratio_rows)
    if args.no_doc:
        return
    plot(done, args)
    settings = results.settings
    lines = [
        "## Whole-slide images from disk",
        "",
        _common.machine_block(results.machine),
        "",
        "Generated JPEG-tiled pyramidal BigTIFFs (`kas.slides.synthetic`, "
        "levels 4x apart, 256x256 tiles), one per size. `AttentionSamplingModel("
        "3, n_patches=20, patch_size=64, tissue_mask=True)` sees each slide "
        f"through a {settings['view']}x{settings['view']} view made from its "
        "pyramid (`SlideDataset(view_shape=...)`); the 20 patches are read from "
        "level 0. Each phase ran in a fresh process: *first* is its first "
        "call, which includes opening the slide and compiling, *warm* the "
        f"median of {settings['repeats']} more calls (each with a new "
        "`SlideDataset`, so the slide is opened, its view made and its "
        "patches read again). *predict*: `model.predict(slide)`; "
        "*explain*: `model.explain(slide)`; *train*: one `train_on_batch` of "
        "one slide with 4 draws (the batch read by the `SlideDataset` "
        "included); *full-res CNN*: one training step of the reference "
        "notebook's patch CNN on the whole level 0 in memory, up to "
        f"{settings['cnn_max_side']}² ({_common.PEAK_TEXT}; *above baseline*: "
        "minus the RSS after imports and the model's build).",
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
        "",
        f"From {_pixels(small)} to {_pixels(large)} (targets: the peak RSS at the "
        "largest size ≤ 1.5 GB; time and memory within 2x of each other):",
        "",
        _common.markdown_table(ratio_header, ratio_rows),
    ]
    if cnn_rows:
        lines += [
            "",
            "The full-resolution CNN against one training step from the slide:",
            "",
            _common.markdown_table(
                [
                    "slide",
                    "CNN / attention (time)",
                    "CNN / attention (memory above baseline)",
                ],
                cnn_rows,
            ),
        ]
    lines += ["", "![time and peak RSS per slide size](images/slides.png)"]
    _common.update_section(args.section, "\n".join(lines), args.doc)


def _pixels(side):
    pixels = side * side
    if pixels >= 1e9:
        return f"{pixels / 1e9:.1f} GP"
    return f"{pixels / 1e6:.0f} MP" if pixels >= 1e6 else f"{pixels / 1e3:.0f} kP"


def plot(done, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for phase in ("predict", "explain", "train"):
        rows = [r for r in done if r["phase"] == phase]
        pixels = [r["side"] ** 2 for r in rows]
        left.plot(pixels, [r["seconds"] for r in rows], marker="o", label=phase)
        right.plot(pixels, [r["peak_mb"] / 1024 for r in rows], marker="o", label=phase)
    for axis, label in ((left, "time per slide (s)"), (right, "peak RSS (GB)")):
        axis.set_xscale("log")
        axis.set_xlabel("slide pixels (level 0)")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    right.axhline(1.5, color="grey", linestyle="--", linewidth=1)
    left.legend()
    figure.tight_layout()
    path = os.path.join(
        os.path.dirname(os.path.abspath(args.doc)), "images", "slides.png"
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
