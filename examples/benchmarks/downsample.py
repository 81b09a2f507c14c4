"""The view pass alone: the layer `kas.Downsample(S)` versus a cast to float32
followed by `ops.average_pool`.

Random `uint8` RGB batches already on the backend (the conversion from numpy
is not timed), each pass compiled as the backend compiles a training step on
this machine: `tf.function` (TF, no XLA: Keras does not use XLA on a CPU),
`jax.jit`, plain eager torch. Best of `--repeats` calls after one warm-up,
per image, and the largest difference between the two views. Each backend
runs in its own process. Measurements go to
`examples/benchmarks/results/downsample.json`, merged by (backend, image,
batch, pass); the `downsample` section of docs/benchmarks.md is rendered from
it.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("backend", "size", "batch", "pass")
PASSES = ("Downsample", "cast + average_pool")


def cast_average_pool(images, scale):
    """The view as a plain float32 cast of the whole batch + `average_pool`."""
    from keras import ops

    return ops.average_pool(ops.cast(images, "float32"), scale, scale, padding="valid")


def _compiled(backend, fn):
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def worker(args):
    """Times both passes for every case and batch; rewrites `--result` each time."""
    import keras
    import numpy as np
    from keras import ops

    import keras_attention_sampling as kas

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    records = []
    for size, scale in args.cases:
        width, height = (int(v) for v in size.split("x"))
        layer = kas.Downsample(scale)
        passes = {
            "Downsample": _compiled(backend, lambda x, layer=layer: layer(x)),
            "cast + average_pool": _compiled(
                backend, lambda x, scale=scale: cast_average_pool(x, scale)
            ),
        }
        for batch in args.batches:
            images = ops.convert_to_tensor(
                rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
            )
            outputs = {}
            for name, call in passes.items():
                outputs[name] = ops.convert_to_numpy(call(images))
                seconds = _common.time_call(
                    lambda call=call, images=images: ops.convert_to_numpy(call(images)),
                    repeats=args.repeats,
                    warmup=0,
                    best=True,
                )
                record = {"backend": backend, "size": size, "scale": scale}
                record.update(
                    {"batch": batch, "pass": name, "seconds": seconds / batch}
                )
                records.append(record)
            difference = np.abs(outputs["Downsample"] - outputs["cast + average_pool"])
            records[-2]["max_difference"] = float(difference.max())
            print(records[-2:], flush=True)
            _common.write_json(args.result, records)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument(
        "--cases",
        default="1388x1040:5,5552x4160:20",
        help="image sizes WxH and their scale S (e.g. 278x208:5 for a smoke run)",
    )
    parser.add_argument("--batches", default="2,8")
    parser.add_argument("--repeats", type=int, default=3)
    _common.add_output_arguments(parser, "downsample")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.cases = [
            (c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")
        ]
        args.batches = [int(b) for b in args.batches.split(",")]
        worker(args)
        return
    results = _common.Results(args, key=KEY)
    if not args.report_only:
        backends = args.backends.split(",")
        results.start(backends, {"repeats": args.repeats})
        for backend in backends:
            t0 = time.perf_counter()
            records, error = _common.run_worker(
                [os.path.abspath(__file__), "--worker", "--cases", args.cases]
                + ["--batches", args.batches, "--repeats", str(args.repeats)],
                backend=backend,
            )
            print(f"{backend}: {time.perf_counter() - t0:.0f} s", error or "")
            for record in records or []:
                results.add(record)
    report(results, args)


def report(results, args):
    times = {tuple(r[k] for k in KEY): r for r in results.records}
    cases = sorted(
        {(r["backend"], r["size"], r["batch"]) for r in results.records},
        key=lambda c: (
            _common.rank(c[0], _common.BACKENDS),
            c[0],
            int(c[1].split("x")[0]),
            c[2],
        ),
    )
    header = [
        "backend",
        "image",
        "S",
        "batch",
        "Downsample / image",
        "cast + average_pool / image",
        "speed-up",
        "max difference",
    ]
    rows = []
    for backend, size, batch in cases:
        new = times.get((backend, size, batch, "Downsample"))
        old = times.get((backend, size, batch, "cast + average_pool"))
        if not (new and old):
            continue
        rows.append(
            [
                backend,
                size,
                new["scale"],
                batch,
                _common.format_seconds(new["seconds"]),
                _common.format_seconds(old["seconds"]),
                f"{old['seconds'] / new['seconds']:.1f}x",
                f"{new['max_difference']:.1e}",
            ]
        )
    _common.print_table(header, rows)
    if args.no_doc:
        return
    lines = [
        "## The view pass alone",
        "",
        _common.machine_block(results.machine),
        "",
        "`kas.Downsample(S)`, the layer that makes the attention model's view "
        "(it sums the S rows of each output row one uint8 slice at a time), "
        "against casting the batch to float32 and `ops.average_pool`. Random "
        "uint8 RGB batches already converted to tensors; `tf.function` (no XLA, "
        "as Keras runs TF on a CPU), `jax.jit`, eager torch; best of "
        f"{results.settings['repeats']} calls after a warm-up, per image.",
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
    ]
    _common.update_section(args.section, "\n".join(lines), args.doc)


if __name__ == "__main__":
    main()
