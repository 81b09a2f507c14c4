"""Cost of one training step and one prediction per image: attention sampling
versus a CNN on the whole full-resolution image and on a 5x-downsampled one.

Models (3 classes, `uint8` RGB input, rescaled by 1/255 inside the model):

- `attention x1`: `kas.AttentionSamplingModel(scale=S, n_patches=20,
  patch_size=50, samples_per_image=1)` (the per-image cost);
- `attention x4`: the same with the seed's `samples_per_image=4` (each image
  of a training batch is drawn 4 times; the attention map is computed once
  per image and only the map is repeated);
- `attention x1 (scale 5)`: `attention x1` with `scale=5` at every size (its
  attention view grows with the image);
- `attention x1 (host view)`: `attention x1` fed
  `kas.datasets.with_views(images, S)`: the loader makes the view, so the
  step never reads every pixel (the loader's time is reported apart).

`S` is set by `--view`: with `fixed` (default) `S = round(5 * W / 1388)`
(5 at 1388x1040, 10 at 2776x2080, 20 at 5552x4160), so the attention network
always reads a ~278x208 view and only the downsampling pass reads every
pixel; with `scale`, `S = 5` at every size.
- `full-res CNN`: the seed's feature CNN (4 x Conv2D 3x3 16 leaky ReLU +
  GlobalMaxPool + Dense softmax) on the whole full-resolution image;
- `downsampled CNN`: the same CNN after an SxS average pooling (in the model,
  by `kas.Downsample`, the attention model's own pass: same `S`).

Every configuration runs in a fresh subprocess: build + compile, one
warm-up training step (tracing), timed `train_on_batch` steps, then timed
`predict_on_batch` calls. Memory: the absolute peak RSS of the worker, and
the peak above the RSS after imports + model build + data (the "baseline"),
read from the kernel's peak-RSS counter (`VmHWM`, reset after the build).
The parent kills a worker whose RSS passes `--max-rss-gb`, so the largest
full-resolution configuration that fits is found without taking the shared
machine down.

With `--profile` the attention model's forward pass is also split into its
parts (low-resolution view, attention network, sampling + extraction,
feature network + pool), each timed eagerly.

Run `python examples/benchmarks/cost.py` (TF by default; `--backend jax` or
KERAS_BACKEND). Rewrites the `cost` section of docs/benchmarks.md (or
`--section`, e.g. `cost-gpu`; on a GPU the memory columns hold the device
allocator's peak).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

SECTION = "cost"
SIZES = {
    "1388x1040": (1040, 1388),
    "2776x2080": (2080, 2776),
    "5552x4160": (4160, 5552),
}
MODELS = (
    "attention x1",
    "attention x4",
    "attention x1 (scale 5)",
    "attention x1 (host view)",
    "full-res CNN",
    "downsampled CNN",
)
REFERENCE_WIDTH = 1388


def view_scale(kind, width, view):
    """Downsampling factor of `kind` at image `width` under `--view`."""
    if kind.endswith("(scale 5)") or view == "scale":
        return 5
    return max(1, int(round(5 * width / REFERENCE_WIDTH)))


NUM_CLASSES = 3


def seed_cnn(keras, num_classes, name):
    """The seed's feature CNN with a softmax head."""
    return [
        keras.layers.Conv2D(
            16, 3, padding="same", activation="leaky_relu", name=f"{name}_conv{i}"
        )
        for i in range(4)
    ] + [
        keras.layers.GlobalMaxPooling2D(name=f"{name}_gmp"),
        keras.layers.Dense(num_classes, activation="softmax", name=f"{name}_dense"),
    ]


def build_model(kind, height, width, scale=5, seed=0):
    import keras

    import keras_attention_sampling as kas

    keras.utils.set_random_seed(seed)
    if kind.startswith("attention"):
        model = kas.AttentionSamplingModel(
            NUM_CLASSES,
            scale=scale,
            n_patches=20,
            patch_size=50,
            samples_per_image=4 if kind.endswith("x4") else 1,
            rescale=1 / 255,
            seed=seed,
        )
        if kind.endswith("(host view)"):
            model.build(
                {
                    "images": (None, height, width, 3),
                    "view": (None, height // scale, width // scale, 3),
                }
            )
        else:
            model.build((None, height, width, 3))
        model.compile()
        return model
    inputs = keras.Input((height, width, 3), dtype="uint8")
    x = inputs
    if kind == "downsampled CNN":
        # The same downsampling pass as the attention model's view.
        x = kas.Downsample(scale, name="downsample")(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    for layer in seed_cnn(keras, NUM_CLASSES, "cnn"):
        x = layer(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def worker(args):
    import keras
    import numpy as np

    if args.height:
        height, width = args.height, args.width
    else:
        height, width = SIZES[args.size]
    batch = args.batch
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, (batch,)).astype("int32")
    scale = args.scale or view_scale(args.model, width, "fixed")
    model = build_model(args.model, height, width, scale=scale)
    host_view_s = None
    if args.model.endswith("(host view)"):
        # The loader's work, timed apart: the step then gets the view ready-made.
        import keras_attention_sampling as kas

        t0 = time.perf_counter()
        x = kas.datasets.with_views(x, scale)
        host_view_s = (time.perf_counter() - t0) / batch
    baseline = _common.rss_mb()
    exact = _common.reset_peak_rss()
    # On a GPU the memory that matters is the device's: the columns "above
    # baseline" then hold the allocator's peak minus what is in use here.
    device = _common.device_memory_mb()
    result = {
        "model": args.model,
        "size": args.size or f"{width}x{height}",
        "batch": batch,
        "backend": keras.backend.backend(),
        "scale": scale if args.model != "full-res CNN" else None,
        "baseline_mb": baseline,
        "params": model.count_params(),
        "exact_peak": exact,
        "host_view_s": host_view_s,
    }
    # Prediction first: memory a step frees stays in the process (allocator
    # caches), so the phase measured second would look free. The training
    # peak (read without a reset) is the max of both phases, and training
    # needs more than prediction.
    model.predict_on_batch(x)
    result["predict_s"] = (
        _common.time_call(
            lambda: model.predict_on_batch(x), repeats=args.repeats, warmup=0
        )
        / batch
    )
    result["predict_peak_above_mb"] = _common.peak_rss_mb() - baseline
    if device:
        result["memory"] = "gpu"
        result["predict_peak_above_mb"] = _common.device_memory_mb()[1] - device[0]
    _common.emit(dict(result, partial=True))
    t0 = time.perf_counter()
    model.train_on_batch(x, y)
    result["first_step_s"] = time.perf_counter() - t0
    result["train_s"] = (
        _common.time_call(
            lambda: model.train_on_batch(x, y), repeats=args.repeats, warmup=0
        )
        / batch
    )
    result["train_peak_mb"] = _common.peak_rss_mb()
    result["train_peak_above_mb"] = result["train_peak_mb"] - baseline
    if device:
        result["train_peak_above_mb"] = _common.device_memory_mb()[1] - device[0]
    if (
        args.profile
        and args.model.startswith("attention")
        and not args.model.endswith("(host view)")
    ):
        result["profile"] = profile(model, x, args.repeats)
    _common.emit(result)


def cast_average_pool(images, scale):
    """The low-resolution view as it was computed before `sampling.downsample`.

    Casts the whole batch to float32, then `ops.average_pool`; timed by
    `--profile` next to the package's pass for comparison.
    """
    from keras import ops

    return ops.average_pool(ops.cast(images, "float32"), scale, scale, padding="valid")


def profile(model, x, repeats):
    """Eager forward time (per image) of each part of the attention model."""
    from keras import ops

    images = ops.convert_to_tensor(x)
    batch = x.shape[0]
    low = model.low_resolution(images)
    log_attention = model.attention_network(low, training=True, return_log_probs=True)
    cells = model.sampler.sample(log_attention, training=True)
    patches, sampled, _ = model.sampler.extract(ops.exp(log_attention), images, cells)
    patches = patches * model.rescale
    parts = {
        "low-res view": lambda: ops.convert_to_numpy(model.low_resolution(images)),
        "low-res view (cast + average_pool, before)": lambda: ops.convert_to_numpy(
            cast_average_pool(images, model.scale) * model.rescale
        ),
        "attention net": lambda: ops.convert_to_numpy(
            model.attention_network(low, training=True, return_log_probs=True)
        ),
        "sample + extract": lambda: ops.convert_to_numpy(
            model.sampler.extract(
                ops.exp(log_attention),
                images,
                model.sampler.sample(log_attention, training=True),
            )[0]
        ),
        "features + pool": lambda: ops.convert_to_numpy(
            model.pool([model.feature_network(patches, training=True), sampled])
        ),
    }
    return {
        name: _common.time_call(fn, repeats=repeats, warmup=1, best=True) / batch
        for name, fn in parts.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        default=None,
        help="keras backend (default: KERAS_BACKEND or tensorflow)",
    )
    parser.add_argument("--sizes", default=",".join(SIZES))
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
    parser.add_argument("--profile", action="store_true", default=True)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--section",
        default=SECTION,
        help="section of docs/benchmarks.md to rewrite (e.g. cost-gpu for a GPU run)",
    )
    parser.add_argument(
        "--command-note",
        default="",
        help="text added after the command line in the doc",
    )
    parser.add_argument("--save-json", help="save the measurements to this file")
    parser.add_argument(
        "--merge-json",
        help="start from the measurements saved "
        "here and re-measure only the selected configurations",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the tables from --merge-json",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    sizes = args.sizes.split(",")
    models = args.models.split(",")
    full_batches = [int(b) for b in args.full_res_batch.split(",")]
    results, errors = [], {}
    machine = None
    if args.merge_json and os.path.exists(args.merge_json):
        with open(args.merge_json) as handle:
            saved = json.load(handle)
        results = saved["results"]
        errors = {tuple(k.split("|")): v for k, v in saved["errors"].items()}
        machine = saved.get("machine")
    if not args.report_only:
        machine = _common.machine_info([backend])

    def save():
        # After every configuration, so a run stopped early keeps what it measured.
        if args.save_json:
            with open(args.save_json, "w") as handle:
                json.dump(
                    {
                        "results": results,
                        "machine": machine,
                        "errors": {"|".join(k): v for k, v in errors.items()},
                    },
                    handle,
                )

    for index, size in enumerate(SIZES):
        if size not in sizes or args.report_only:
            continue
        for kind in models:
            batch, repeats = args.batch, args.repeats
            if kind == "full-res CNN":
                batch = full_batches[min(index, len(full_batches) - 1)]
                repeats = args.full_res_repeats
            results = [r for r in results if (r["model"], r["size"]) != (kind, size)]
            errors.pop((kind, size), None)
            notes = []
            while True:
                scale = view_scale(kind, SIZES[size][1], args.view)
                cmd = [
                    os.path.abspath(__file__),
                    "--worker",
                    "--model",
                    kind,
                    "--size",
                    size,
                    "--batch",
                    str(batch),
                    "--repeats",
                    str(repeats),
                    "--scale",
                    str(scale),
                ]
                if args.profile:
                    cmd.append("--profile")
                print(f"== {kind} {size} batch {batch} scale {scale}", flush=True)
                out, error = _common.run_worker(
                    cmd,
                    backend=backend,
                    timeout=args.timeout,
                    max_rss_gb=args.max_rss_gb,
                )
                final = [r for r in out if not r.get("partial")]
                if out:
                    print(
                        "  ",
                        {k: v for k, v in out[-1].items() if k != "profile"},
                        flush=True,
                    )
                if error:
                    notes.append(f"batch {batch}: {error}")
                    print("  ", error, flush=True)
                # The baseline does not fit: halve its batch down to 1.
                if error and not final and kind == "full-res CNN" and batch > 1:
                    batch //= 2
                    continue
                break
            if final:
                results.append(final[-1])
            elif out:
                results.append(out[-1])
            if notes:
                errors[(kind, size)] = "; ".join(notes)
            save()
    save()
    # Report every configuration measured so far (merged ones included).
    present = {(r["model"], r["size"]) for r in results} | set(errors)
    sizes = [s for s in SIZES if any(p[1] == s for p in present)]
    models = [m for m in MODELS if any(p[0] == m for p in present)]
    report(args, backend, sizes, models, results, errors, machine)


def report(args, backend, sizes, models, results, errors, machine=None):
    by = {(r["model"], r["size"]): r for r in results}
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
    rows = []
    for size in sizes:
        for kind in models:
            r = by.get((kind, size))
            if r is None:
                rows.append(
                    [
                        kind,
                        size,
                        "",
                        "–",
                        errors.get((kind, size), "not run"),
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            rows.append(
                [
                    kind,
                    size,
                    r.get("scale") or "–",
                    r["batch"],
                    _common.format_seconds(r.get("train_s"))
                    if "train_s" in r
                    else errors.get((kind, size), "–"),
                    _common.format_seconds(r.get("predict_s")),
                    f"{r['train_peak_mb'] / 1024:.2f} GB"
                    if "train_peak_mb" in r
                    else "–",
                    f"{r['train_peak_above_mb']:.0f} MB"
                    if "train_peak_above_mb" in r
                    else "–",
                    f"{r['predict_peak_above_mb']:.0f} MB"
                    if "predict_peak_above_mb" in r
                    else "–",
                ]
            )
    _common.print_table(header, rows)

    # Ratios.
    ratio_rows = []

    def get(kind, size, key):
        r = by.get((kind, size))
        return None if r is None else r.get(key)

    small = sizes[0]

    def ratio(a, b, fmt="{:.2f}x"):
        return fmt.format(a / b) if a and b else "–"

    for size in sizes:
        full_t = get("full-res CNN", size, "train_s")
        as_t = get("attention x1", size, "train_s")
        full_m = get("full-res CNN", size, "train_peak_above_mb")
        as_m = get("attention x1", size, "train_peak_above_mb")
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
                ratio(
                    get("attention x1 (host view)", size, "train_s"),
                    get("attention x1 (host view)", small, "train_s"),
                ),
                _common.format_seconds(
                    get("attention x1 (host view)", size, "host_view_s")
                ),
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
    ]
    print()
    _common.print_table(ratio_header, ratio_rows)

    profile_rows = []
    for size in sizes:
        for kind in ("attention x1", "attention x1 (scale 5)"):
            prof = get(kind, size, "profile")
            if not prof:
                continue
            total = sum(v for k, v in prof.items() if "before" not in k)
            profile_rows.append(
                [size, f"{kind}, S={get(kind, size, 'scale')}"]
                + [f"{v * 1e3:.1f} ms ({100 * v / total:.0f}%)" for v in prof.values()]
            )
    profile_header = None
    if profile_rows:
        names = list(next(r for r in results if r.get("profile"))["profile"])
        profile_header = ["image", "model"] + names
        print()
        _common.print_table(profile_header, profile_rows)

    if args.no_doc:
        return
    on_gpu = any(r.get("memory") == "gpu" for r in results)
    gpu_note = (
        (
            " **On the GPU the *peak above baseline* columns are GPU memory**: the "
            "allocator's peak (JAX `peak_bytes_in_use`, torch "
            "`max_memory_allocated`) minus the memory in use after build; *peak "
            "RSS* is still the host process."
        )
        if on_gpu
        else ""
    )
    lines = [
        "## Cost per image: attention sampling versus full-resolution CNN"
        + (" (GPU)" if on_gpu else ""),
        "",
        _common.machine_block(info=machine, backends=[backend]),
        "",
        "One `train_on_batch` / `predict_on_batch` (compiled by Keras' default "
        "for the backend), divided by the batch size; median of the timed "
        f"calls after one warm-up step ({args.repeats} timed calls, "
        f"{args.full_res_repeats} for the full-res CNN). *attention x1/x4*: "
        "`AttentionSamplingModel(scale=S, n_patches=20, patch_size=50, "
        "samples_per_image=1/4, rescale=1/255)` with "
        + (
            "`S = round(5 W / 1388)` (`--view fixed`: 5 at 1388x1040, 10 at "
            "2776x2080, 20 at 5552x4160), so the attention network always "
            "reads a ~278x208 view and only the downsampling pass reads every "
            "pixel; "
            if args.view == "fixed"
            else "`S = 5` at every size (`--view scale`); "
        )
        + "*attention x1 (scale 5)*: attention x1 with `scale=5` at every "
        "size (its attention view grows with the image: 1110x832 at "
        "5552x4160); with `samples_per_image=4` the attention map is computed "
        "once per image and only the map is repeated for the draws; "
        "*attention x1 (host view)*: attention x1 given "
        "`kas.datasets.with_views(images, S)`, so its attention view is made by "
        "the loader (Pillow, on the host) before the step and the step never "
        "reads every pixel; the loader's time per image is the last ratio "
        "column, not part of the step; "
        "*full-res CNN*: the seed's "
        "feature CNN (4 x Conv2D 3x3 16 + GlobalMaxPool + Dense) on the whole "
        "image; *downsampled CNN*: the same after SxS average pooling by "
        "`kas.Downsample`, the attention model's own pass (the "
        "attention view's S). uint8 "
        "RGB input, 3 classes. Each configuration ran in a fresh process; "
        "*peak above baseline* is the peak RSS minus the RSS after imports, "
        "model build and data creation (kernel `VmHWM` reset there); "
        "prediction is measured first, so the training column is the peak "
        "over prediction and training (memory freed by a step stays cached "
        "in the process, so a second phase cannot be isolated). The full-res "
        "CNN ran at the batch shown: a worker "
        f"past {args.max_rss_gb:g} GB RSS is killed and the full-res CNN is "
        "retried at half the batch (see the notes below the tables)." + gpu_note,
        "",
        f"Command: `python examples/benchmarks/cost.py --backend {backend} "
        f"--view {args.view}`"
        + (f" ({args.command_note})" if args.command_note else ""),
        "",
        _common.markdown_table(header, rows),
        "",
        "Ratios (targets: at 1388x1040 full-res / attention ≥ 25x in time and "
        "≥ 10x in memory above baseline; at 5552x4160 attention ≤ 2x its "
        "1388x1040 cost):",
        "",
        _common.markdown_table(ratio_header, ratio_rows),
    ]
    if profile_rows:
        lines += [
            "",
            "Where the attention model's time goes (eager forward pass in "
            "training mode, per image, best of the timed calls; `features + "
            "pool` is the feature network on the 20 patches; percentages of the "
            "four parts of the model; the *before* column, the "
            "cast-then-`ops.average_pool` pass the package used until "
            "`sampling.downsample`, is not counted):",
            "",
            _common.markdown_table(profile_header, profile_rows),
        ]
    extra = [f"{k[0]} {k[1]}: {v}" for k, v in errors.items()]
    if extra:
        lines += ["", "Notes (configurations stopped or retried):", ""] + [
            f"- {e}" for e in extra
        ]
    _common.update_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
