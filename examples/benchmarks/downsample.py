"""The low-resolution pass alone: `kas.sampling.downsample` versus the cast
to float32 followed by `ops.average_pool` that it replaced.

Random `uint8` RGB batches already on the backend (the conversion from numpy
is not timed), each pass compiled as the backend compiles a training step on
this machine: `tf.function` (TF, no XLA: Keras does not use XLA on a CPU),
`jax.jit`, plain eager torch. Best of `--repeats` calls after one warm-up,
per image. Each backend runs in its own process. Rewrites the `downsample`
section of docs/benchmarks.md.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

SECTION = "downsample"
CASES = (("1388x1040", 5), ("5552x4160", 20))


def worker(args):
    import keras
    import numpy as np
    from keras import ops

    from keras_attention_sampling import sampling

    def before(images, scale):
        return ops.average_pool(
            ops.cast(images, "float32"), scale, scale, padding="valid"
        )

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    for size, scale in CASES:
        width, height = (int(v) for v in size.split("x"))
        for batch in args.batches:
            images = ops.convert_to_tensor(
                rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
            )
            passes = {"downsample": sampling.downsample, "cast + average_pool": before}
            outputs = {}
            for name, fn in passes.items():
                call = _compiled(backend, lambda x, fn=fn, scale=scale: fn(x, scale))
                outputs[name] = ops.convert_to_numpy(call(images))
                seconds = _common.time_call(
                    lambda call=call, images=images: ops.convert_to_numpy(call(images)),
                    repeats=args.repeats,
                    warmup=0,
                    best=True,
                )
                _common.emit(
                    {
                        "backend": backend,
                        "size": size,
                        "scale": scale,
                        "batch": batch,
                        "pass": name,
                        "seconds": seconds / batch,
                    }
                )
            difference = np.abs(
                outputs["downsample"] - outputs["cast + average_pool"]
            ).max()
            _common.emit(
                {
                    "backend": backend,
                    "size": size,
                    "batch": batch,
                    "max_difference": float(difference),
                }
            )


def _compiled(backend, fn):
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--batches", default="2,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        worker(args)
        return
    results = []
    for backend in args.backends.split(","):
        t0 = time.perf_counter()
        out, error = _common.run_worker(
            [
                os.path.abspath(__file__),
                "--worker",
                "--batches",
                ",".join(map(str, args.batches)),
                "--repeats",
                str(args.repeats),
            ],
            backend=backend,
        )
        print(f"{backend}: {time.perf_counter() - t0:.0f} s", error or "", flush=True)
        results += out
    times = {
        (r["backend"], r["size"], r["batch"], r["pass"]): r["seconds"]
        for r in results
        if "pass" in r
    }
    diffs = {
        (r["backend"], r["size"], r["batch"]): r["max_difference"]
        for r in results
        if "max_difference" in r
    }
    header = [
        "backend",
        "image",
        "S",
        "batch",
        "downsample / image",
        "cast + average_pool / image",
        "speed-up",
        "max difference",
    ]
    rows = []
    for (backend, size, batch), diff in diffs.items():
        new = times[(backend, size, batch, "downsample")]
        old = times[(backend, size, batch, "cast + average_pool")]
        rows.append(
            [
                backend,
                size,
                dict(CASES)[size],
                batch,
                _common.format_seconds(new),
                _common.format_seconds(old),
                f"{old / new:.1f}x",
                f"{diff:.1e}",
            ]
        )
    _common.print_table(header, rows)
    if args.no_doc:
        return
    backends = args.backends.split(",")
    lines = [
        "## The low-resolution pass alone",
        "",
        _common.machine_block(backends=backends),
        "",
        "`kas.sampling.downsample` (sums the S rows of each output row one "
        "uint8 slice at a time) against casting the batch to float32 and "
        "`ops.average_pool`, which the package used before. Random uint8 RGB "
        "batches already converted to tensors; `tf.function` (no XLA, as Keras "
        "runs TF on a CPU), `jax.jit`, eager torch; best of "
        f"{args.repeats} calls after a warm-up, per image.",
        "",
        "Command: `python examples/benchmarks/downsample.py`",
        "",
        _common.markdown_table(header, rows),
    ]
    _common.update_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
