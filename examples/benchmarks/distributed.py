"""Data-parallel training on 1 and 2 devices: step time, images per second and
the gradient volume each step exchanges.

`kas.AttentionSamplingModel` with its defaults on `--size` x `--size` `uint8`
RGB images (`--scale`, 20 patches of 50x50, 4 draws per image), a global
batch of `--batch` images, one training step (`train_on_batch`) timed after warm-up steps (median
of `--repeats`). Two devices are simulated on the CPU, as the tests do:
JAX with `XLA_FLAGS=--xla_force_host_platform_device_count=2` and
`keras.distribution.DataParallel`; TensorFlow with two logical CPUs and
`tf.distribute.MirroredStrategy`. On one CPU the two devices share its cores,
so the two-device rows measure the overhead of data parallelism, not a
speed-up. The communication per step is the size of the gradients, which the
replicas all-reduce (a ring all-reduce moves about 2 (n - 1) / n of it in
and out of each of n devices). Each configuration runs in a fresh process;
measurements go to `examples/benchmarks/results/distributed.json`, merged by
(backend, devices), and the `distributed` section of docs/benchmarks.md is
rendered from it.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("backend", "devices")


def worker(args):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax" and args.devices > 1:
        os.environ["XLA_FLAGS"] = (
            f"--xla_force_host_platform_device_count={args.devices}"
        )
    scope = None
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices
        )
        names = [f"CPU:{i}" for i in range(args.devices)]
        scope = (
            tf.distribute.MirroredStrategy(names).scope() if args.devices > 1 else None
        )
    import keras
    import numpy as np

    import keras_attention_sampling as kas

    if backend == "jax" and args.devices > 1:
        import jax

        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices())
        )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    y = rng.integers(0, 3, args.batch)
    if scope is not None:
        scope.__enter__()
    model = kas.AttentionSamplingModel(3, scale=args.scale, seed=0)
    model.compile()
    model.build(x.shape)
    gradient_bytes = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for v in model.trainable_variables
    )
    for _ in range(2):  # compile and warm up
        model.train_on_batch(x, y)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    step = float(np.median(times))
    _common.write_json(
        args.result,
        {
            "backend": backend,
            "devices": args.devices,
            "step_s": step,
            "images_per_s": args.batch / step,
            "gradient_bytes": gradient_bytes,
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--scale", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=1800)
    _common.add_output_arguments(parser, "distributed")
    _common.add_worker_arguments(parser, devices=int)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    backends = args.backends.split(",")
    results = _common.Results(args, KEY)
    if not args.report_only:
        settings = {k: getattr(args, k) for k in ("size", "scale", "batch", "repeats")}
        results.start(backends, settings, same=("size", "scale", "batch"))
        for backend in backends:
            for devices in (1, 2):
                record = _common.run_point(
                    __file__,
                    {"devices": devices},
                    settings,
                    backend=backend,
                    timeout=args.timeout,
                )
                record.setdefault("backend", backend)
                print(record, flush=True)
                results.add(record)
    report(results, args)


def report(results, args):
    header = [
        "backend",
        "devices",
        "step (global batch)",
        "images / s",
        "vs 1 device",
        "gradient all-reduced / step",
    ]
    rows, single = [], {}
    for r in sorted(results.records, key=lambda r: (r["backend"], r["devices"])):
        if "error" in r:
            rows.append([r["backend"], r["devices"], r["error"], "", "", ""])
            continue
        single.setdefault(
            r["backend"], r["images_per_s"] if r["devices"] == 1 else None
        )
        base = single[r["backend"]]
        rows.append(
            [
                r["backend"],
                r["devices"],
                _common.format_seconds(r["step_s"]),
                f"{r['images_per_s']:.1f}",
                f"{r['images_per_s'] / base:.2f}x" if base else "–",
                f"{r['gradient_bytes'] / 1024:.1f} KiB",
            ]
        )
    _common.print_table(header, rows)
    s = results.settings
    description = (
        "One training step (`train_on_batch`) of `AttentionSamplingModel` "
        f"(defaults, scale {s['scale']}, "
        f"20 patches of 50x50, 4 draws per image) on a global batch of {s['batch']} "
        f"`uint8` {s['size']}x{s['size']} images, median of {s['repeats']} steps "
        "after two warm-up steps. The two devices are simulated on the CPU (two "
        "forced host devices for JAX's `DataParallel`, two logical CPUs for "
        "TensorFlow's `MirroredStrategy`) and share its cores, so the "
        "two-device rows show the overhead of data parallelism, not a speed-up. "
        "The last column is the size of the gradients, which the replicas "
        "all-reduce every step."
    )
    _common.write_section(
        args, results, "Data-parallel training", description, header, rows
    )


if __name__ == "__main__":
    main()
