"""Cost of one training step and one prediction per image: attention sampling
versus a CNN on the whole full-resolution image and on a downsampled one.

Models (3 classes, `uint8` RGB input in 0..255, normalised inside each model
as `x / 255 - 0.5`):

- `attention x1`: `kas.AttentionSamplingModel(scale=S, n_patches=20,
  patch_size=50, samples_per_image=1)` (the per-image cost);
- `attention x4`: the same with the reference notebook's
  `samples_per_image=4` (each image of a training batch is drawn 4 times;
  the attention map is computed once per image and only the map is
  repeated);
- `attention x1 (scale 5)`: `attention x1` with `scale=5` at every size (its
  attention view grows with the image);
- `attention x1 (host view)`: `attention x1` fed
  `kas.datasets.with_views(images, S)`: the loader makes the view, so the
  step never reads every pixel (the loader's time is reported apart);
- `attention x1 (host patches)`: `attention x1` fed by
  `kas.slides.SlideDataset` over the in-memory images: the loader makes the
  view, draws the cells (`model.propose`) and cuts their patches, so the
  step receives the view and the patches only, never the full-resolution
  batch (the loader's time is reported apart);
- `full-res CNN`: the reference notebook's patch CNN (`kas.patch_backbone()`:
  4 x Conv2D 3x3 16 leaky ReLU + GlobalMaxPool) + Dense softmax on the whole
  full-resolution image, after `keras.layers.Rescaling(1 / 255, offset=-0.5)`;
- `downsampled CNN`: the same CNN on the view of `kas.Downsample(S)`, the
  attention model's own pass.

`S` is set by `--view`: with `fixed` (default) `S = round(5 * W / 1388)`
(5 at 1388x1040, 10 at 2776x2080, 20 at 5552x4160), so the attention network
always reads a ~278x208 view and only the downsampling pass reads every
pixel; with `scale`, `S = 5` at every size.

Every configuration runs in a fresh subprocess: build + compile, a warm-up
and timed `predict_on_batch` calls, then one warm-up training step (tracing)
and timed `train_on_batch` steps. Memory: the peak RSS of the worker
(sampled with psutil) and that peak minus the RSS after imports + model
build + data (the "baseline"); on a GPU, the device allocator's peak. The
parent kills a worker whose RSS passes `--max-rss-gb` and retries the
full-res CNN at half the batch, so the largest full-resolution configuration
that fits is found without taking the shared machine down.

Unless `--no-profile`, the attention model's eager forward pass is also
split into its sublayers: the view (`model.downsample` + `model.rescaling`),
`model.attention_network`, sampling + extraction (`model.sampler`), and the
features (`model.rescaling` of the patches, `model.feature_network`,
`model.pool`).

Run `python examples/benchmarks/cost.py` (TF by default; `--backend jax` or
KERAS_BACKEND). Measurements go to `examples/benchmarks/results/cost.json`
(or `--section`, e.g. `cost-gpu`), merged by (model, image size); the `cost`
section of docs/benchmarks.md is rendered from it.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

SIZES = ("1388x1040", "2776x2080", "5552x4160")
MODELS = (
    "attention x1",
    "attention x4",
    "attention x1 (scale 5)",
    "attention x1 (host view)",
    "attention x1 (host patches)",
    "full-res CNN",
    "downsampled CNN",
)
REFERENCE_WIDTH = 1388
NUM_CLASSES = 3


def parse_size(size):
    """`"WxH"` -> `(height, width)`."""
    width, height = (int(v) for v in size.split("x"))
    return height, width


def view_scale(kind, width, view):
    """Downsampling factor of `kind` at image `width` under `--view`."""
    if kind.endswith("(scale 5)") or view == "scale":
        return 5
    return max(1, int(round(5 * width / REFERENCE_WIDTH)))


def build_model(kind, height, width, scale=5, seed=0):
    import keras

    import keras_attention_sampling as kas

    keras.utils.set_random_seed(seed)
    if kind == "full-res CNN":
        return _common.cnn_baseline((height, width, 3), NUM_CLASSES)
    if kind == "downsampled CNN":
        return _common.cnn_baseline((height, width, 3), NUM_CLASSES, scale=scale)
    model = kas.AttentionSamplingModel(
        NUM_CLASSES,
        scale=scale,
        n_patches=20,
        patch_size=50,
        samples_per_image=4 if kind.endswith("x4") else 1,
        seed=seed,
    )
    if kind.endswith("(host patches)"):
        model.build(
            {
                "view": (None, height // scale, width // scale, 3),
                "cells": (None, 20),
                "patches": (None, 20, 50, 50, 3),
                "proposal_log_probs": (None,),
            }
        )
    elif kind.endswith("(host view)"):
        view = (None, height // scale, width // scale, 3)
        model.build({"images": (None, height, width, 3), "view": view})
    else:
        model.build((None, height, width, 3))
    model.compile()
    return model


def worker(args):
    """Measures one configuration, rewriting `--result` after each phase."""
    import keras
    import numpy as np

    height, width, batch = args.height, args.width, args.batch
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, (batch,)).astype("int32")
    model = build_model(args.model, height, width, scale=args.scale)
    result = {
        "model": args.model,
        "size": f"{width}x{height}",
        "batch": batch,
        "repeats": args.repeats,
        "backend": keras.backend.backend(),
        "scale": args.scale if args.model != "full-res CNN" else None,
        "params": model.count_params(),
    }
    if args.model.endswith("(host view)"):
        # The loader's work, timed apart: the step then gets the view ready-made.
        import keras_attention_sampling as kas

        t0 = time.perf_counter()
        x = kas.datasets.with_views(x, args.scale)
        result["host_view_s"] = (time.perf_counter() - t0) / batch
    if args.model.endswith("(host patches)"):
        # The loader's work, timed apart: views, draws and patch cuts.
        import keras_attention_sampling as kas

        t0 = time.perf_counter()
        loader = kas.slides.SlideDataset(model, list(x), labels=y, batch_size=batch)
        loader.training = True
        x, y = loader[0]
        result["host_patches_s"] = (time.perf_counter() - t0) / batch
    baseline = result["baseline_mb"] = _common.rss_mb()
    # On a GPU the memory that matters is the device's: the columns "above
    # baseline" then hold the allocator's peak minus what is in use here.
    device = _common.device_memory_mb()
    if device:
        result["memory"] = "gpu"
    _common.write_json(args.result, result)

    def timed(fn):
        return _common.time_call(fn, repeats=args.repeats, warmup=0) / batch

    # Prediction first: memory a step frees stays in the process (allocator
    # caches), so the phase measured second would look free. The training
    # peak is the max of both phases, and training needs more than prediction.
    with _common.PeakRSS() as peak:
        model.predict_on_batch(x)
        result["predict_s"] = timed(lambda: model.predict_on_batch(x))
        result["predict_peak_above_mb"] = peak.peak_mb - baseline
        if device:
            result["predict_peak_above_mb"] = _common.device_memory_mb()[1] - device[0]
        _common.write_json(args.result, result)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        result["first_step_s"] = time.perf_counter() - t0
        result["train_s"] = timed(lambda: model.train_on_batch(x, y))
        result["train_peak_mb"] = peak.peak_mb
    result["train_peak_above_mb"] = result["train_peak_mb"] - baseline
    if device:
        result["train_peak_above_mb"] = _common.device_memory_mb()[1] - device[0]
    _common.write_json(args.result, result)
    if args.profile and isinstance(x, np.ndarray) and "attention" in args.model:
        result["profile"] = profile(model, x, args.repeats)
        _common.write_json(args.result, result)


def profile(model, x, repeats):
    """Eager forward time (per image) of each part of the attention model."""
    from keras import ops

    images = ops.convert_to_tensor(x)
    view = model.rescaling(model.downsample(images))
    log_attention = model.attention_network(view, training=True, return_log_probs=True)
    attention = ops.exp(log_attention)
    cells = model.sampler.sample(log_attention, training=True)
    patches, sampled, _ = model.sampler.extract(attention, images, cells)

    def sample_and_extract():
        drawn = model.sampler.sample(log_attention, training=True)
        return model.sampler.extract(attention, images, drawn)[0]

    def features():
        logits = model.feature_network(model.rescaling(patches), training=True)
        return model.pool([logits, sampled])

    parts = {
        "view": lambda: model.rescaling(model.downsample(images)),
        "attention net": lambda: model.attention_network(
            view, training=True, return_log_probs=True
        ),
        "sample + extract": sample_and_extract,
        "features + pool": features,
    }
    return {
        name: _common.time_call(
            lambda fn=fn: ops.convert_to_numpy(fn()), repeats=repeats, best=True
        )
        / x.shape[0]
        for name, fn in parts.items()
    }


def measure(args, results):
    backend = results.settings["backend"]
    full_batches = [int(b) for b in args.full_res_batch.split(",")]
    sizes = sorted(args.sizes.split(","), key=lambda s: parse_size(s)[1])
    for index, size in enumerate(sizes):
        height, width = parse_size(size)
        for kind in args.models.split(","):
            batch, repeats = args.batch, args.repeats
            if kind == "full-res CNN":
                batch = full_batches[min(index, len(full_batches) - 1)]
                repeats = args.full_res_repeats
            scale = view_scale(kind, width, args.view)
            notes = []
            while True:
                print(f"== {kind} {size} batch {batch} scale {scale}", flush=True)
                cmd = [os.path.abspath(__file__), "--worker", "--model", kind]
                cmd += ["--height", str(height), "--width", str(width)]
                cmd += ["--batch", str(batch), "--repeats", str(repeats)]
                cmd += ["--scale", str(scale)]
                if not args.profile:
                    cmd.append("--no-profile")
                result, error = _common.run_worker(
                    cmd, backend, timeout=args.timeout, max_rss_gb=args.max_rss_gb
                )
                if result:
                    print("  ", {k: v for k, v in result.items() if k != "profile"})
                if error:
                    notes.append(f"batch {batch}: {error}")
                    print("  ", error, flush=True)
                # The baseline does not fit: halve its batch down to 1.
                measured = result is not None and "train_s" in result
                if error and not measured and kind == "full-res CNN" and batch > 1:
                    batch //= 2
                    continue
                break
            record = result or {"model": kind, "size": size, "batch": batch}
            if notes:
                record["notes"] = "; ".join(notes)
            results.add(record)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        default=None,
        help="keras backend (default: KERAS_BACKEND or tensorflow)",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(SIZES),
        help="image sizes WxH (any; a tiny one such as 278x208 for a smoke run)",
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--view",
        choices=("fixed", "scale"),
        default="fixed",
        help="fixed: scale = round(5 W / 1388), a ~278x208 "
        "attention view at every size; scale: scale 5",
    )
    parser.add_argument(
        "--full-res-batch",
        default="8,2,1",
        help="first batch tried for the full-res CNN at each size; "
        "halved down to 1 while it does not fit --max-rss-gb",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-res-repeats", type=int, default=1)
    parser.add_argument("--max-rss-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="do not time the attention model's parts",
    )
    _common.add_output_arguments(parser, "cost")
    worker_options = parser.add_argument_group("worker (internal)")
    worker_options.add_argument("--worker", action="store_true")
    worker_options.add_argument("--result", help="JSON file the worker writes")
    for name in ("model", "height", "width", "scale"):
        worker_options.add_argument(
            f"--{name}", type=str if name == "model" else int, help=argparse.SUPPRESS
        )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = _common.Results(args, key=("model", "size"))
    if not args.report_only:
        backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
        settings = {"backend": backend, "view": args.view, "repeats": args.repeats}
        settings.update(
            full_res_repeats=args.full_res_repeats, max_rss_gb=args.max_rss_gb
        )
        results.start([backend], settings)
        measure(args, results)
    report(results, args)


def report(results, args):
    settings = results.settings
    by = {(r["model"], r["size"]): r for r in results.records}
    sizes = sorted({r["size"] for r in results.records}, key=lambda s: parse_size(s)[1])
    models = [m for m in MODELS if any(r["model"] == m for r in results.records)]
    header = [
        "model",
        "image",
        "S",
        "batch",
        "train step / image",
        "predict / image",
        "peak RSS",
        "peak above baseline (train)",
        "peak above (predict)",
    ]

    def megabytes(r, key):
        return f"{r[key]:.0f} MB" if key in r else "–"

    rows = []
    for size in sizes:
        for kind in models:
            r = by.get((kind, size), {"notes": "not run"})
            if "train_s" not in r and "predict_s" not in r:
                rows.append([kind, size, "", "–", r.get("notes", "–")] + [""] * 4)
                continue
            peak = r.get("train_peak_mb")
            rows.append(
                [
                    kind,
                    size,
                    r.get("scale") or "–",
                    r["batch"],
                    _common.format_seconds(r["train_s"])
                    if "train_s" in r
                    else r.get("notes", "–"),
                    _common.format_seconds(r.get("predict_s")),
                    f"{peak / 1024:.2f} GB" if peak else "–",
                    megabytes(r, "train_peak_above_mb"),
                    megabytes(r, "predict_peak_above_mb"),
                ]
            )
    _common.print_table(header, rows)
    if not sizes:
        return

    def get(kind, size, key):
        return by.get((kind, size), {}).get(key)

    def ratio(a, b, fmt="{:.2f}x"):
        return fmt.format(a / b) if a and b else "–"

    small = sizes[0]
    ratio_rows = []
    for size in sizes:
        full_t = get("full-res CNN", size, "train_s")
        as_t = get("attention x1", size, "train_s")
        full_m = get("full-res CNN", size, "train_peak_above_mb")
        as_m = get("attention x1", size, "train_peak_above_mb")
        host = "attention x1 (host view)"
        patches = "attention x1 (host patches)"
        ratio_rows.append(
            [
                size,
                get("attention x1", size, "scale") or "–",
                ratio(full_t, as_t, "{:.0f}x"),
                ratio(full_m, as_m, "{:.2f}x"),
                ratio(as_t, get("attention x1", small, "train_s")),
                ratio(as_m, get("attention x1", small, "train_peak_above_mb")),
                ratio(
                    get("attention x1 (scale 5)", size, "train_s"),
                    get("attention x1 (scale 5)", small, "train_s"),
                ),
                ratio(full_t, get("full-res CNN", small, "train_s"), "{:.1f}x"),
                ratio(get("attention x4", size, "train_s"), as_t),
                ratio(get(host, size, "train_s"), get(host, small, "train_s")),
                _common.format_seconds(get(host, size, "host_view_s")),
                ratio(
                    get(patches, size, "train_peak_above_mb"),
                    get(patches, small, "train_peak_above_mb"),
                ),
                ratio(get(patches, size, "train_s"), get(patches, small, "train_s")),
                _common.format_seconds(get(patches, size, "host_patches_s")),
            ]
        )
    ratio_header = [
        "image",
        "scale S",
        "full-res / attention x1 (train time)",
        "full-res / attention x1 (train memory above baseline)",
        f"attention x1 time vs {small}",
        f"attention x1 memory above baseline vs {small}",
        f"attention x1 (scale 5) time vs {small}",
        f"full-res time vs {small}",
        "attention x4 / x1 (time per image)",
        f"attention x1 (host view) time vs {small}",
        "host view made by the loader / image",
        f"attention x1 (host patches) memory above baseline vs {small}",
        f"attention x1 (host patches) time vs {small}",
        "views, draws and patches by the loader / image",
    ]
    print()
    _common.print_table(ratio_header, ratio_rows)

    parts = ("view", "attention net", "sample + extract", "features + pool")
    profile_header = ["image", "model"] + list(parts)
    profile_rows = []
    for size in sizes:
        for kind in ("attention x1", "attention x1 (scale 5)"):
            prof = get(kind, size, "profile")
            if prof:
                total = sum(prof.values())
                profile_rows.append(
                    [size, f"{kind}, S={get(kind, size, 'scale')}"]
                    + [
                        f"{prof[p] * 1e3:.1f} ms ({100 * prof[p] / total:.0f}%)"
                        for p in parts
                    ]
                )
    if profile_rows:
        print()
        _common.print_table(profile_header, profile_rows)
    if args.no_doc:
        return
    on_gpu = any(r.get("memory") == "gpu" for r in results.records)
    view_text = (
        "`S = round(5 W / 1388)` (`--view fixed`: 5 at 1388x1040, 10 at "
        "2776x2080, 20 at 5552x4160), so the attention network always reads a "
        "~278x208 view and only the downsampling pass reads every pixel; "
        if settings["view"] == "fixed"
        else "`S = 5` at every size (`--view scale`); "
    )
    lines = [
        "## Cost per image: attention sampling versus full-resolution CNN"
        + (" (GPU)" if on_gpu else ""),
        "",
        _common.machine_block(results.machine),
        "",
        "One `train_on_batch` / `predict_on_batch` (compiled by Keras' default "
        "for the backend), divided by the batch size; median of the timed "
        f"calls after one warm-up call ({settings['repeats']} timed calls, "
        f"{settings['full_res_repeats']} for the full-res CNN). *attention "
        "x1/x4*: `AttentionSamplingModel(scale=S, n_patches=20, patch_size=50, "
        "samples_per_image=1/4)` (its default normalisation, `x / 255 - 0.5`) "
        "with " + view_text + "*attention x1 (scale 5)*: attention x1 with "
        "`scale=5` at every size (its attention view grows with the image: "
        "1110x832 at 5552x4160); with `samples_per_image=4` the attention map "
        "is computed once per image and only the map is repeated for the "
        "draws; *attention x1 (host view)*: attention x1 given "
        "`kas.datasets.with_views(images, S)`, so its attention view is made by "
        "the loader (`Downsample.host_view`, Pillow, on the host) before the "
        "step and the step never reads every pixel; the loader's time per "
        "image is a ratio column, not part of the step; *attention x1 (host "
        "patches)*: attention x1 fed by `kas.slides.SlideDataset` over the "
        "in-memory images, which makes the view, draws the cells "
        "(`model.propose`) and cuts their patches on the host, so the step "
        "receives only the view and the patches (the loader's time per image "
        "is the last ratio column); *full-res CNN*: "
        "the reference notebook's patch CNN (`kas.patch_backbone()`: 4 x Conv2D "
        "3x3 16 + GlobalMaxPool) + Dense on the whole image, after "
        "`Rescaling(1 / 255, offset=-0.5)`; *downsampled CNN*: the same on the "
        "view of `kas.Downsample(S)`, the attention model's own pass. uint8 RGB "
        "input, 3 classes. Each configuration ran in a fresh process; *peak "
        "above baseline* is the peak RSS minus the RSS after imports, model "
        f"build and data creation ({_common.PEAK_TEXT}); prediction is "
        "measured first, so the training column is the peak over prediction "
        "and training (memory freed by a step stays cached in the process, so "
        "a second phase cannot be isolated). The full-res CNN ran at the batch "
        f"shown: a worker past {settings['max_rss_gb']:g} GB RSS is killed and "
        "the full-res CNN is retried at half the batch (see the notes below "
        "the tables)."
        + (
            " **On the GPU the *peak above baseline* columns are GPU memory**: "
            "the allocator's peak (JAX `peak_bytes_in_use`, torch "
            "`max_memory_allocated`) minus the memory in use after build; "
            "*peak RSS* is still the host process."
            if on_gpu
            else ""
        ),
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
        "",
        "Ratios (targets: at 1388x1040 full-res / attention ≥ 25x in time and "
        "≥ 10x in memory above baseline; at 5552x4160 attention ≤ 2x its "
        "1388x1040 cost, in memory too once the patches are cut on the host):",
        "",
        _common.markdown_table(ratio_header, ratio_rows),
    ]
    if profile_rows:
        lines += [
            "",
            "Where the attention model's time goes (eager forward pass in "
            "training mode through the model's sublayers, per image, best of "
            "the timed calls; *view*: `model.downsample` + `model.rescaling`; "
            "*attention net*: `model.attention_network`; *sample + extract*: "
            "`model.sampler.sample` + `model.sampler.extract`; *features + "
            "pool*: `model.rescaling` of the 20 patches, `model.feature_network` "
            "and `model.pool`; percentages of the sum of the four):",
            "",
            _common.markdown_table(profile_header, profile_rows),
        ]
    notes = [
        f"{r['model']} {r['size']}: {r['notes']}"
        for r in results.records
        if "notes" in r
    ]
    if notes:
        lines += ["", "Notes (configurations stopped or retried):", ""]
        lines += [f"- {note}" for note in notes]
    _common.update_section(args.section, "\n".join(lines), args.doc)


if __name__ == "__main__":
    main()
