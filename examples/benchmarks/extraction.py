"""Patch extraction cost versus image size, per backend, eager and compiled.

Times one call that cuts 2 images x 20 patches of 50x50 out of 1024², 4096²
and 8192² RGB images (uint8 and float32), and reports the ratio of the 8192²
time to the 1024² time. Patch extraction gathers only the B*N*p*p pixels it
needs, so the ratio should stay close to 1 (target: <= 1.5).

Methods timed:

- `gather_patches`: the package's `kas.sampling.gather_patches` (flat pixel
  indices, `ops.take` on the image reshaped to `(B*H*W, C)`).
- `PatchSampler.extract`: the layer's extraction given sampled cells (also
  gathers the cells' attention from a `(H/5, W/5)` map, as in the model).
- `windows` (alternative, here only): `windows_gather_patches` below, which
  never reshapes the full image: one `ops.slice` window per patch through
  `ops.vectorized_map`, then the reflect/constant border handled by a small
  `take_along_axis` inside the window. It gives identical patches.
  (`torch.vmap` cannot batch `narrow`, so it is not timed on torch.)

Modes: `eager`; `compiled` = `tf.function(jit_compile=True)` on TensorFlow,
`jax.jit` on JAX, `torch.compile` on torch.

Run `python examples/benchmarks/extraction.py` (all three backends, each in
its own subprocess with KERAS_BACKEND set) or restrict with
`--backends jax`. Rewrites the `extraction` section of docs/benchmarks.md.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

SECTION = "extraction"


# -- the alternative (standalone, ready to move into sampling.py) -----------


def windows_gather_patches(
    images, positions, patch_size, padding="reflect", fill_value=0
):
    """`gather_patches` without reshaping (hence, on JAX, copying) the image.

    Each patch is cut as one `p x p` window with `ops.slice` at the patch
    corner clamped into the image; `ops.vectorized_map` batches the windows
    (a single gather under JAX). Pixels that fall outside the image are then
    mapped (mirrored, or clamped and masked) to pixels of the same window:
    for a patch centre inside the image, the mirrored row `|r|` of a row
    `r < 0` is at most `p // 2`, so it lies in the clamped window (likewise at
    the far border). Same results as `kas.sampling.gather_patches` for centres
    inside the image.
    """
    from keras import ops

    batch, height, width, channels = ops.shape(images)
    n_patches = ops.shape(positions)[1]
    offsets = ops.arange(patch_size, dtype="int32")
    corner = ops.cast(ops.floor(positions), "int32") - patch_size // 2
    start_r = ops.clip(corner[..., 0], 0, height - patch_size)
    start_c = ops.clip(corner[..., 1], 0, width - patch_size)
    index = ops.broadcast_to(
        ops.arange(batch, dtype="int32")[:, None], (batch, n_patches)
    )
    starts = ops.stack([index, start_r, start_c, ops.zeros_like(index)], axis=-1)
    starts = ops.reshape(starts, (-1, 4))
    size = (1, patch_size, patch_size, channels)
    windows = ops.vectorized_map(lambda s: ops.slice(images, s, size)[0], starts)
    windows = ops.reshape(windows, (batch, n_patches, patch_size, patch_size, channels))
    rows = corner[..., 0:1] + offsets  # (B, N, p) image rows of each patch
    cols = corner[..., 1:2] + offsets
    inside = None
    if padding == "reflect":
        rows = (height - 1) - ops.abs((height - 1) - ops.abs(rows))
        cols = (width - 1) - ops.abs((width - 1) - ops.abs(cols))
    else:
        inside = ops.logical_and(
            ops.logical_and(rows >= 0, rows < height)[..., :, None],
            ops.logical_and(cols >= 0, cols < width)[..., None, :],
        )
        rows = ops.clip(rows, 0, height - 1)
        cols = ops.clip(cols, 0, width - 1)
    rows = rows - start_r[..., None]  # window-local, in [0, p)
    cols = cols - start_c[..., None]
    patches = ops.take_along_axis(windows, rows[:, :, :, None, None], axis=2)
    patches = ops.take_along_axis(patches, cols[:, :, None, :, None], axis=3)
    if inside is not None:
        patches = ops.where(
            inside[..., None], patches, ops.cast(fill_value, patches.dtype)
        )
    return patches


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
    if backend != "torch":
        methods.append("windows")
    rng = np.random.default_rng(0)
    sampler = kas.PatchSampler(n, p)
    functions = {
        "gather_patches": lambda im, pos, at, ce: kas.sampling.gather_patches(
            im, pos, p
        ),
        "PatchSampler.extract": lambda im, pos, at, ce: sampler.extract(at, im, ce)[0],
        "windows": lambda im, pos, at, ce: windows_gather_patches(im, pos, p),
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
                    _common.emit(result)
                    print(result, file=sys.stderr, flush=True)
        del inputs


# -- parent ------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--sizes", default="1024,4096,8192")
    parser.add_argument("--dtypes", default="uint8,float32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patches", type=int, default=20)
    parser.add_argument("--patch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument(
        "--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.dtypes = args.dtypes.split(",")
    if args.worker:
        worker(args)
        return
    backends = args.backends.split(",")
    results, errors = [], {}
    forwarded = [a for a in sys.argv[1:] if not a.startswith("--backends")]
    if "--backends" in sys.argv:
        i = sys.argv.index("--backends")
        forwarded = sys.argv[1:i] + sys.argv[i + 2 :]
    for backend in backends:
        print(f"== {backend}", flush=True)
        out, error = _common.run_worker(
            [os.path.abspath(__file__), "--worker", *forwarded], backend=backend
        )
        results += out
        if error:
            errors[backend] = error
            print(f"{backend}: {error}", flush=True)
    report(args, backends, results, errors)


def report(args, backends, results, errors):
    sizes = args.sizes
    keyed = {}
    for r in results:
        keyed.setdefault((r["backend"], r["method"], r["mode"], r["dtype"]), {})[
            r["size"]
        ] = r
    header = ["backend", "method", "mode", "dtype"] + [f"{s}²" for s in sizes]
    header += [f"{sizes[-1]}²/{sizes[0]}²", "≤ 1.5", "same patches"]
    rows = []
    for (backend, method, mode, dtype), by_size in keyed.items():
        cells = []
        for s in sizes:
            r = by_size.get(s)
            if r is None:
                cells.append("–")
            elif "error" in r:
                cells.append("error")
            else:
                cells.append(f"{r['seconds'] * 1e3:.1f} ms")
        first, last = by_size.get(sizes[0], {}), by_size.get(sizes[-1], {})
        if "seconds" in first and "seconds" in last:
            ratio = last["seconds"] / first["seconds"]
            ratio_s, ok = f"{ratio:.2f}x", "yes" if ratio <= 1.5 else "**no**"
        else:
            ratio_s, ok = "–", "–"
        match = all(r.get("match", False) for r in by_size.values())
        rows.append(
            [
                backend,
                method,
                mode,
                dtype,
                *cells,
                ratio_s,
                ok,
                "yes" if match else "no",
            ]
        )
    _common.print_table(header, rows)
    failed = {k: v for k, v in keyed.items() if any("error" in r for r in v.values())}
    for key, by_size in failed.items():
        for r in by_size.values():
            if "error" in r:
                print("error", key, r["size"], r["error"])
    if args.no_doc:
        return
    lines = [
        "## Patch extraction versus image size",
        "",
        _common.machine_block(backends=backends),
        "",
        f"One call cutting {args.batch} images x {args.patches} patches of "
        f"{args.patch_size}x{args.patch_size} (RGB) at fixed random cell "
        "centres (two of them in the corners, so reflect padding is used), "
        f"best of {args.repeats} calls after one warm-up, the sizes timed in "
        "interleaved rounds (so load from other jobs hits them alike), output "
        "copied to numpy. `compiled` is `tf.function(jit_compile=True)` (TF), `jax.jit` "
        "(JAX) or `torch.compile` (torch). `windows` is the alternative "
        "`windows_gather_patches` in `examples/benchmarks/extraction.py` (not "
        "in the package); *same patches* compares every output with the "
        "package's eager `gather_patches`. Target: 8192²/1024² ≤ 1.5.",
        "",
        "Command: `python examples/benchmarks/extraction.py --backends "
        f"{','.join(backends)}`",
        "",
        _common.markdown_table(header, rows),
    ]
    for backend, error in errors.items():
        lines += ["", f"{backend}: {error}"]
    _common.update_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
