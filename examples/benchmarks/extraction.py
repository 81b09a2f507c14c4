"""Patch extraction cost versus image size, per backend, eager and compiled.

Times one call that cuts 2 images x 20 patches of 50x50 out of 1024², 4096²
and 8192² RGB images (uint8 and float32), and reports the ratio of the 8192²
time to the 1024² time. Patch extraction gathers only the B*N*p*p pixels it
needs, so the ratio should stay close to 1 (target: <= 1.5).

Methods timed:

- `gather_patches`: the package's `kas.sampling.gather_patches` (flat pixel
  indices and `ops.take` on the image reshaped to `(B*H*W, C)`; on JAX, one
  window slice per patch).
- `PatchSampler.extract`: the layer's extraction given sampled cells (also
  gathers the cells' attention from a `(H/5, W/5)` map, as in the model).

Modes: `eager`; `compiled` = `tf.function(jit_compile=True)` on TensorFlow,
`jax.jit` on JAX, `torch.compile` on torch.

Run `python examples/benchmarks/extraction.py` (all three backends, each in
its own subprocess with KERAS_BACKEND set) or restrict with
`--backends jax`. Measurements go to
`examples/benchmarks/results/extraction.json`, merged by (backend, method,
mode, dtype, size); the `extraction` section of docs/benchmarks.md is
rendered from it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("backend", "method", "mode", "dtype", "size")


# -- worker (one backend per process) ----------------------------------------


def _compiler(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        return lambda fn: tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit
    if backend == "torch":
        import torch

        return lambda fn: torch.compile(fn, dynamic=False)
    raise ValueError(backend)


def worker(args):
    """Times every method/mode at all sizes, round-robin over the sizes.

    Writes the list of records to `--result` after each (method, mode,
    dtype).

    The sizes of one (method, mode, dtype) are timed in interleaved rounds
    (1024², 4096², 8192², 1024², ...), and the best time of each size is
    kept, so a burst of load from other jobs on the machine hits all sizes
    alike instead of skewing the ratio.
    """
    import time

    import keras
    import numpy as np
    from keras import ops

    import keras_attention_sampling as kas

    backend = keras.backend.backend()
    compile_fn = _compiler(backend)
    p, n, b, scale = args.patch_size, args.patches, args.batch, 5
    modes = ["eager"]
    if not (backend == "torch" and args.no_torch_compile):
        modes.append("compiled")
    methods = ["gather_patches", "PatchSampler.extract"]
    rng = np.random.default_rng(0)
    records = []
    sampler = kas.PatchSampler(n, p)
    functions = {
        "gather_patches": lambda im, pos, at, ce: kas.sampling.gather_patches(
            im, pos, p
        ),
        "PatchSampler.extract": lambda im, pos, at, ce: sampler.extract(at, im, ce)[0],
    }
    for dtype in args.dtypes:
        inputs = {}
        for size in args.sizes:
            map_side = size // scale
            cells_np = rng.integers(0, map_side * map_side, (b, n)).astype("int32")
            cells_np[:, 0] = 0  # exercise both borders
            cells_np[:, 1] = map_side * map_side - 1
            images = ops.convert_to_tensor(
                rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8).astype(dtype)
            )
            attention = ops.convert_to_tensor(
                np.full((b, map_side, map_side), 1.0 / map_side**2, "float32")
            )
            cells = ops.convert_to_tensor(cells_np)
            positions = kas.sampling.cells_to_centres(
                cells, (map_side, map_side), (size, size)
            )
            reference = ops.convert_to_numpy(
                kas.sampling.gather_patches(images, positions, p)
            ).astype("float32")
            inputs[size] = (images, positions, attention, cells, reference)
        for method in methods:
            for mode in modes:
                calls, results = {}, {}
                for size in args.sizes:
                    images, positions, attention, cells, reference = inputs[size]
                    fn = functions[method]
                    if mode == "compiled":
                        fn = compile_fn(fn)

                    def call(fn=fn, a=(images, positions, attention, cells)):
                        return ops.convert_to_numpy(fn(*a))

                    result = {
                        "backend": backend,
                        "method": method,
                        "mode": mode,
                        "dtype": dtype,
                        "size": size,
                    }
                    try:
                        t0 = time.perf_counter()
                        out = call()
                        result["first_call_s"] = time.perf_counter() - t0
                        result["match"] = bool(
                            np.array_equal(out.astype("float32"), reference)
                        )
                        call()  # warm-up
                        calls[size] = call
                        result["times"] = []
                    except Exception as error:  # noqa: BLE001
                        result["error"] = f"{type(error).__name__}: {str(error)[:150]}"
                    results[size] = result
                for _ in range(args.repeats):
                    for size, timed in calls.items():
                        t0 = time.perf_counter()
                        timed()
                        results[size]["times"].append(time.perf_counter() - t0)
                for result in results.values():
                    if "times" in result:
                        result["seconds"] = min(result.pop("times"))
                    records.append(result)
                    print(result, flush=True)
                _common.write_json(args.result, records)
        del inputs


# -- parent ------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--sizes", default="1024,4096,8192")
    parser.add_argument("--dtypes", default="uint8,float32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patches", type=int, default=20)
    parser.add_argument("--patch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-torch-compile", action="store_true")
    _common.add_output_arguments(parser, "extraction")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.dtypes = args.dtypes.split(",")
    if args.worker:
        worker(args)
        return
    results = _common.Results(args, key=KEY)
    if not args.report_only:
        backends = args.backends.split(",")
        settings = {"batch": args.batch, "patches": args.patches}
        settings.update(patch_size=args.patch_size, repeats=args.repeats)
        results.start(backends, settings, same=("batch", "patches", "patch_size"))
        forwarded = ["--sizes", ",".join(map(str, args.sizes))]
        forwarded += ["--dtypes", ",".join(args.dtypes), "--batch", str(args.batch)]
        forwarded += ["--patches", str(args.patches), "--repeats", str(args.repeats)]
        forwarded += ["--patch-size", str(args.patch_size)]
        if args.no_torch_compile:
            forwarded.append("--no-torch-compile")
        for backend in backends:
            print(f"== {backend}", flush=True)
            records, error = _common.run_worker(
                [os.path.abspath(__file__), "--worker", *forwarded], backend=backend
            )
            for record in records or []:
                results.add(record)
            if error:
                print(f"{backend}: {error}", flush=True)
                results.add(
                    dict.fromkeys(KEY, None) | {"backend": backend, "notes": error}
                )
    report(results, args)


def report(results, args):
    settings = results.settings
    measured = [r for r in results.records if r.get("method")]
    sizes = sorted({r["size"] for r in measured})
    if not sizes:
        print("no measurements in", results.path)
        return
    keyed = {}
    for r in measured:
        keyed.setdefault(tuple(r[k] for k in KEY[:-1]), {})[r["size"]] = r
    order = (
        _common.BACKENDS,
        ("gather_patches", "PatchSampler.extract"),
        ("eager", "compiled"),
        ("uint8", "float32"),
    )
    # backend, then dtype, then method, then mode
    keys = sorted(
        keyed,
        key=lambda k: [_common.rank(k[i], order[i]) for i in (0, 3, 1, 2)] + list(k),
    )
    ratio_name = f"{sizes[-1]}²/{sizes[0]}²"
    header = ["backend", "method", "mode", "dtype"] + [f"{s}²" for s in sizes]
    header += [ratio_name, "≤ 1.5", "same patches"]
    rows = []
    for key in keys:
        by_size = keyed[key]
        cells = []
        for s in sizes:
            r = by_size.get(s)
            if r is None:
                cells.append("–")
            elif "error" in r:
                cells.append("error")
                print("error", key, s, r["error"])
            else:
                cells.append(f"{r['seconds'] * 1e3:.1f} ms")
        first, last = by_size.get(sizes[0], {}), by_size.get(sizes[-1], {})
        if "seconds" in first and "seconds" in last:
            ratio = last["seconds"] / first["seconds"]
            ratio_s, ok = f"{ratio:.2f}x", "yes" if ratio <= 1.5 else "**no**"
        else:
            ratio_s, ok = "–", "–"
        match = all(r.get("match", False) for r in by_size.values())
        rows.append([*key, *cells, ratio_s, ok, "yes" if match else "no"])
    _common.print_table(header, rows)
    if args.no_doc:
        return
    lines = [
        "## Patch extraction versus image size",
        "",
        _common.machine_block(results.machine),
        "",
        f"One call cutting {settings['batch']} images x {settings['patches']} "
        f"patches of {settings['patch_size']}x{settings['patch_size']} (RGB) at "
        "fixed random cell centres (two of them in the corners, so reflect "
        f"padding is used), best of {settings['repeats']} calls after one "
        "warm-up, the sizes timed in interleaved rounds (so load from other "
        "jobs hits them alike), output copied to numpy. `compiled` is "
        "`tf.function(jit_compile=True)` (TF), `jax.jit` (JAX) or "
        "`torch.compile` (torch). *same patches* compares every output with "
        f"the package's eager `gather_patches`. Target: {ratio_name} ≤ 1.5.",
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
    ]
    for r in results.records:
        if "notes" in r:
            lines += ["", f"{r['backend']}: {r['notes']}"]
    _common.update_section(args.section, "\n".join(lines), args.doc)


if __name__ == "__main__":
    main()
