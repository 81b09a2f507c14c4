"""Where one training step of attention sampling spends its time, part by part,
against the same CNN on the whole full-resolution image.

Each point is a (backend, variant) pair, measured in a fresh process. The
model is `kas.AttentionSamplingModel(3, scale=5, n_patches=20, patch_size=50,
samples_per_image=1)` (the per-image cost; the package's default draws each
image 4 times) on `--size` `uint8` RGB images (1388x1040 by default, the lymphoma images),
batch `--batch`. The same process times:

- the whole step (`train_on_batch`) and `predict_on_batch`, per image;
- each part of the step, compiled the way the backend's trainer compiles a
  step (each part is a `keras.Model` of the model's own sublayers, timed by
  `predict_on_batch` for the forward pass and by `train_on_batch` with SGD at
  learning rate 0 for forward + backward):
  *view* (`model.downsample` + `model.rescaling`, forward only: nothing
  before it is trained), *attention net* (`model.attention_network`),
  *sampling* (`model.sampler.sample`), *gather* (`model.sampler.extract`,
  cutting the patches from the full-resolution batch), *features*
  (`model.rescaling` + `model.feature_network` on the patches) and *pool*
  (`model.pool`); the rest of the step (losses, the policy gradient, the two
  optimisers and the per-step overhead) is the step minus the parts;
- the full-resolution CNN (`kas.patch_backbone()` + Dense on the whole image,
  the feature network run everywhere) under the same dtype policy and
  compile flags, `train_on_batch` and `predict_on_batch`.

The multiply-adds are counted from the convolution kernels (stride 1, same
padding, so one kernel application per pixel); a part's rate is three times
its forward multiply-adds (forward, and the two backward products) per
second of forward + backward. The bound on the ratio is the full-res CNN's
forward multiply-adds over the attention and feature networks': what the
ratio would be if every part ran at the CNN's rate and nothing else cost.

Variants: `defaults` (the package defaults), `reinforce`
(`kas.reference_settings()` with one draw per image: REINFORCE, the mean
baseline, inputs in [0, 1]), `samples_per_image=4`, `mixed_bfloat16` (the
global dtype policy, the CNN too), `jit_compile` (`compile(jit_compile=True)`
for both models; on JAX that is the default), `no batch norm`
(`AttentionMap(batch_norm=False)`).

Run `python examples/benchmarks/profile_step.py` (all backends; `--backends`
and `--variants` to choose). Measurements go to
`examples/benchmarks/results/profile.json`, merged by (backend, variant);
the `profile` section of docs/benchmarks.md is rendered from it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("backend", "variant")
VARIANTS = (
    "defaults",
    "reinforce",
    "samples_per_image=4",
    "mixed_bfloat16",
    "jit_compile",
    "no batch norm",
)
PARTS = ("view", "attention net", "sampling", "gather", "features", "pool")
NUM_CLASSES, N_PATCHES, PATCH, SCALE = 3, 20, 50, 5


def conv_macs_per_pixel(layer):
    """Forward multiply-adds per output pixel of the 2-D convolutions in
    `layer` (stride 1, same padding: one kernel application per pixel)."""
    import keras
    import numpy as np

    return sum(
        int(np.prod(sub.kernel.shape))
        for sub in layer._flatten_layers(include_self=True)
        if isinstance(sub, keras.layers.Conv2D)
    )


def build_model(variant, height, width, jit):
    import keras

    import keras_attention_sampling as kas

    keras.utils.set_random_seed(0)
    # One draw per image (the package's default is 4): the per-image cost.
    kwargs, compile_kwargs = {"samples_per_image": 1}, {}
    if variant == "reinforce":
        reference = kas.reference_settings()
        kwargs = dict(reference["model"], samples_per_image=1)
        compile_kwargs = reference["compile"]
    if variant == "samples_per_image=4":
        kwargs["samples_per_image"] = 4
    if variant == "no batch norm":
        kwargs["attention_network"] = kas.AttentionMap(batch_norm=False)
    model = kas.AttentionSamplingModel(
        NUM_CLASSES,
        scale=SCALE,
        n_patches=N_PATCHES,
        patch_size=PATCH,
        seed=0,
        **kwargs,
    )
    model.build((None, height, width, 3))
    model.compile(jit_compile=jit, **compile_kwargs)
    return model


def part_model(inputs, outputs, jit):
    """A `keras.Model` around one part of the attention model, compiled as
    the backend's trainer compiles a step."""
    import keras
    from keras import ops

    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        # Any loss that reaches every output: the backward pass is the same.
        loss=lambda target, output: ops.mean(ops.cast(output, "float32") * target),
        jit_compile=jit,
    )
    return model


def worker(args):
    import keras
    import numpy as np
    from keras import ops

    import keras_attention_sampling as kas

    if args.variant == "mixed_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    jit = True if args.variant == "jit_compile" else "auto"
    width, height = (int(v) for v in args.size.split("x"))
    batch, repeats = args.batch, args.repeats
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (batch,)).astype("int32")
    model = build_model(args.variant, height, width, jit)
    record = {
        "backend": args.backend,
        "variant": args.variant,
        "batch": batch,
        "size": args.size,
        "dtype_policy": keras.config.dtype_policy().name,
    }

    def per_image(fn, calls=repeats):
        return _common.time_call(fn, repeats=calls, warmup=1) / batch

    # The whole step and prediction first, before any part model exists.
    record["predict_s"] = per_image(lambda: model.predict_on_batch(images))
    record["train_s"] = per_image(lambda: model.train_on_batch(images, labels))
    _common.write_json(args.result, record)

    # The parts, each on the inputs the step gives it.
    view_size = (height // SCALE, width // SCALE)
    sampler = model.sampler
    view = ops.convert_to_numpy(model.rescaling(model.downsample(images)))
    log_attention = model.attention_network(view, return_log_probs=True)
    cells = sampler.sample(log_attention, training=True)
    attention = ops.exp(log_attention)
    patches, sampled, _ = sampler.extract(attention, images, cells)
    logits = model.feature_network(model.rescaling(patches), training=True)
    data = {
        "images": images,
        "view": view,
        "log_attention": ops.convert_to_numpy(log_attention),
        "attention": ops.convert_to_numpy(attention),
        "cells": ops.convert_to_numpy(cells),
        "patches": ops.convert_to_numpy(patches),
        "sampled": ops.convert_to_numpy(sampled),
        "logits": ops.convert_to_numpy(logits),
    }
    inputs = {
        name: keras.Input(value.shape[1:], dtype=str(value.dtype), name=name)
        for name, value in data.items()
    }

    def pool(logits, sampled, training=None):
        if isinstance(model.pool, kas.ExpectationPool):
            return model.pool([logits, sampled], replace=sampler.replace)
        return model.pool([logits, sampled])

    def extract(attention, images, cells, training=None):
        return sampler.extract(attention, images, cells)[0]

    def features(patches, training=None):
        return model.feature_network(model.rescaling(patches), training=training)

    def view_fn(images, training=None):
        return model.rescaling(model.downsample(images))

    def attention_fn(view, training=None):
        return model.attention_network(view, training=training, return_log_probs=True)

    def sample(log_attention, training=None):
        return sampler.sample(log_attention, training=True)

    class Fn(keras.layers.Layer):
        # Tracks the sublayers it calls, so their variables (and a sampler's
        # seed state) travel with the part model on every backend.
        def __init__(self, fn, owners, **kwargs):
            super().__init__(**kwargs)
            self.fn, self.owners = fn, owners

        def call(self, *tensors, training=None):
            return self.fn(*tensors, training=training)

    parts = {
        "view": (view_fn, ["images"], [model.downsample, model.rescaling], False),
        "attention net": (attention_fn, ["view"], [model.attention_network], True),
        "sampling": (sample, ["log_attention"], [sampler], False),
        "gather": (extract, ["attention", "images", "cells"], [sampler], False),
        "features": (
            features,
            ["patches"],
            [model.rescaling, model.feature_network],
            True,
        ),
        "pool": (pool, ["logits", "sampled"], [model.pool], True),
    }
    record["parts"] = {}
    for name, (fn, names, owners, trained) in parts.items():
        outputs = Fn(fn, owners, name=name.replace(" ", "_"))(
            *[inputs[n] for n in names]
        )
        part = part_model([inputs[n] for n in names], outputs, jit)
        x = [data[n] for n in names]
        times = {"forward_s": per_image(lambda m=part, x=x: m.predict_on_batch(x))}
        if trained:
            y = np.ones((batch,) + tuple(outputs.shape[1:]), "float32")
            times["train_s"] = per_image(
                lambda m=part, x=x, y=y: m.train_on_batch(x, y)
            )
        record["parts"][name] = times
        _common.write_json(args.result, record)
    record["macs"] = {
        "attention net": conv_macs_per_pixel(model.attention_network)
        * view_size[0]
        * view_size[1],
        "features": conv_macs_per_pixel(model.feature_network) * N_PATCHES * PATCH**2,
    }

    # The same CNN on the whole image, after the same parts are gone.
    cnn = _common.cnn_baseline((height, width, 3), NUM_CLASSES)
    if jit is True:
        cnn.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True
        )
    record["macs"]["full-res CNN"] = conv_macs_per_pixel(cnn) * height * width
    calls = args.full_res_repeats
    record["full_res_predict_s"] = per_image(
        lambda: cnn.predict_on_batch(images), calls
    )
    record["full_res_train_s"] = per_image(
        lambda: cnn.train_on_batch(images, labels), calls
    )
    _common.write_json(args.result, record)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(_common.BACKENDS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", default="1388x1040", help="image size WxH")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-res-repeats", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--max-rss-gb", type=float, default=16.0)
    _common.add_output_arguments(parser, "profile")
    _common.add_worker_arguments(parser, backend=str, variant=str)
    parsed = _common.parse_main(parser, worker, KEY)
    if parsed is None:
        return
    args, _, results = parsed
    if not args.report_only:
        backends = args.backends.split(",")
        task = {"size": args.size, "batch": args.batch, "repeats": args.repeats}
        task["full_res_repeats"] = args.full_res_repeats
        results.start(backends, task, same=("size", "batch"))
        for backend in backends:
            for variant in args.variants.split(","):
                if variant == "jit_compile" and backend != "tensorflow":
                    continue  # JAX compiles with XLA already; torch has no XLA
                point = {"backend": backend, "variant": variant}
                print(f"== {backend} {variant}", flush=True)
                record = _common.run_point(
                    __file__,
                    point,
                    task,
                    backend=backend,
                    timeout=args.timeout,
                    max_rss_gb=args.max_rss_gb,
                )
                print("  ", record.get("error") or summary(record), flush=True)
                results.add(record)
    report(results, args)


def summary(record):
    if "train_s" not in record:
        return "no step measured"
    text = f"step {record['train_s'] * 1e3:.1f} ms/image"
    if "full_res_train_s" in record:
        text += f", full-res {record['full_res_train_s'] * 1e3:.0f} ms/image"
        text += f", {record['full_res_train_s'] / record['train_s']:.1f}x"
    return text


def report(results, args):
    order = lambda r: (  # noqa: E731
        _common.rank(r["backend"], _common.BACKENDS),
        _common.rank(r["variant"], VARIANTS),
    )
    records = sorted(results.records, key=order)
    header = [
        "backend",
        "variant",
        "step / image",
        "predict / image",
        "full-res CNN step / image",
        "full-res CNN predict / image",
        "full-res / attention (step)",
        "bound (multiply-adds)",
        "predict ≤ step",
    ]
    rows, part_rows, notes = [], [], []
    for r in records:
        if r.get("error"):
            rows.append([r["backend"], r["variant"], r["error"]] + [""] * 6)
            continue
        full, step = r.get("full_res_train_s"), r.get("train_s")
        macs = r.get("macs", {})
        bound = (
            macs["full-res CNN"] / (macs["attention net"] + macs["features"])
            if "full-res CNN" in macs
            else None
        )
        rows.append(
            [
                r["backend"],
                r["variant"],
                _common.format_seconds(step),
                _common.format_seconds(r.get("predict_s")),
                _common.format_seconds(full),
                _common.format_seconds(r.get("full_res_predict_s")),
                f"{full / step:.1f}x" if full and step else "–",
                f"{bound:.1f}x" if bound else "–",
                "yes" if r["predict_s"] <= step else "no",
            ]
        )
        parts = r.get("parts", {})
        if not parts or r["variant"] == "samples_per_image=4":
            # Its parts are timed at one draw per image: only the step counts.
            continue
        spent = 0.0
        cnn_rate = (
            3 * macs["full-res CNN"] / full if full and "full-res CNN" in macs else None
        )
        for name in PARTS:
            if name not in parts:
                continue
            times = parts[name]
            cost = times.get("train_s", times["forward_s"])
            spent += cost
            rate = 3 * macs[name] / cost if name in macs else None
            part_rows.append(
                [
                    r["backend"],
                    r["variant"],
                    name,
                    _common.format_seconds(times["forward_s"]),
                    _common.format_seconds(times.get("train_s")),
                    f"{100 * cost / step:.0f}%",
                    f"{macs[name] / 1e6:.0f} M" if name in macs else "",
                    f"{rate / 1e9:.1f}" if rate else "",
                    f"{rate / cnn_rate:.2f}" if rate and cnn_rate else "",
                ]
            )
        part_rows.append(
            [
                r["backend"],
                r["variant"],
                "rest of the step",
                "",
                _common.format_seconds(step - spent),
                f"{100 * (step - spent) / step:.0f}%",
                "",
                "",
                "",
            ]
        )
        if cnn_rate:
            notes.append(
                f"{r['backend']}, {r['variant']}: the full-res CNN runs at "
                f"{cnn_rate / 1e9:.1f} G multiply-adds per second (3 x "
                f"{macs['full-res CNN'] / 1e9:.2f} G per image, forward + backward)"
            )
    part_header = [
        "backend",
        "variant",
        "part",
        "forward / image",
        "forward + backward / image",
        "share of the step",
        "forward multiply-adds / image",
        "G multiply-adds / s (3 x forward, over forward + backward)",
        "rate / full-res CNN's",
    ]
    _common.print_table(header, rows)
    print()
    _common.print_table(part_header, part_rows)
    for line in notes:
        print(line)
    if args.no_doc:
        return
    s = results.settings
    description = (
        "`AttentionSamplingModel(3, scale=5, n_patches=20, patch_size=50, "
        "samples_per_image=1)` on "
        f"{s['size']} `uint8` RGB images, batch {s['batch']}; per image, median "
        f"of {s['repeats']} timed calls after one warm-up "
        f"({s['full_res_repeats']} for the full-res CNN), every (backend, "
        "variant) in a fresh process that times the step, its parts and the "
        "full-res CNN (`kas.patch_backbone()` + Dense on the whole image, same "
        "dtype policy and compile flags). Parts are `keras.Model`s of the "
        "model's own sublayers, compiled as the backend compiles a step; "
        "*forward + backward* is a `train_on_batch` at learning rate 0; the "
        "view, sampling and gather have nothing to train before them and are "
        "forward only; the *share of the step* uses forward + backward where "
        "there is one; the *rest of the step* (losses, policy gradient, "
        "optimisers, per-step overhead) is the step minus the parts. The "
        "*bound* is the full-res CNN's forward multiply-adds over the attention "
        "and feature networks'. The parts are timed at one draw per image, so "
        "the `samples_per_image=4` variant has no rows of its own in the parts "
        "table. See the script's docstring for the variants."
    )
    text = [
        "## Where the training step's time goes",
        "",
        _common.machine_block(results.machine),
        "",
        description,
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
        "",
        "Per part:",
        "",
        _common.markdown_table(part_header, part_rows),
        "",
        *[f"- {line}" for line in notes],
    ]
    _common.update_section(args.section, "\n".join(text), args.doc)


if __name__ == "__main__":
    main()
