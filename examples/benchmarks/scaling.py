"""Attention-sampling training step time and memory from 1 to 64+ megapixels.

Square RGB uint8 images of `--megapixels` (default 1, 4, 16, 64) x 2^20
pixels; `AttentionSamplingModel(scale=S, n_patches=20, patch_size=50,
samples_per_image=1)` at `--batch` images per step. With `--view fixed`
(default) `S = 5 * side / 1024` (5 at 1 MP ... 40 at 64 MP), so the attention
network always reads a 204x204 view; with `--view scale`, `S = 5`. The
`scale 5` series (`S = 5` at every size, its view growing with the image) is
also measured up to `--scale5-max-mp`. Next to them the full-resolution CNN
baseline (the reference notebook's patch CNN, 4 x Conv2D 16 + GlobalMaxPool,
+ Dense on the whole image, batch 1) up to `--baseline-max-mp`. Each point
runs in a fresh subprocess (the worker of `cost.py`): time per image of one
`train_on_batch` (median after a warm-up step), sampled peak RSS above the
RSS after imports + build + data. A worker past `--max-rss-gb` is killed and
the series stops there.

Measurements go to `examples/benchmarks/results/scaling.json` (or
`--section`, e.g. `scaling-gpu`), merged by (model, image size); the
`scaling` section of docs/benchmarks.md and a log-log plot,
docs/images/benchmarks/scaling.png, are rendered from it. TF by default
(`--backend` or KERAS_BACKEND).
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

COST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cost.py")
SERIES = ("attention x1", "attention x1 (scale 5)", "full-res CNN")


def side(megapixels):
    return int(round(math.sqrt(megapixels * 2**20)))


def view_scale(side_px, view):
    return 5 if view == "scale" else max(1, int(round(5 * side_px / 1024)))


def measure(args, results):
    megapixels = [float(m) for m in args.megapixels.split(",")]
    for kind in SERIES:
        if kind.endswith("(scale 5)") and args.view == "scale":
            continue  # the main series is already at scale 5
        for mp in megapixels:
            if kind == "full-res CNN" and mp > args.baseline_max_mp:
                continue
            if kind.endswith("(scale 5)") and mp > args.scale5_max_mp:
                continue
            s = side(mp)
            scale = 5 if kind.endswith("(scale 5)") else view_scale(s, args.view)
            batch = args.batch if kind.startswith("attention") else 1
            repeats = args.repeats if kind.startswith("attention") else 1
            print(f"== {kind} {s}x{s} ({mp:g} MP) batch {batch} scale {scale}")
            result, error = _common.run_worker(
                [COST, "--worker", "--no-profile", "--model", kind]
                + ["--height", str(s), "--width", str(s), "--batch", str(batch)]
                + ["--repeats", str(repeats), "--scale", str(scale)],
                backend=results.settings["backend"],
                timeout=args.timeout,
                max_rss_gb=args.max_rss_gb,
            )
            record = dict(result or {"model": kind, "size": f"{s}x{s}"}, mp=mp, side=s)
            print("  ", record, flush=True)
            if error:
                record["notes"] = error
                print("  ", error, flush=True)
            results.add(record)
            if error:
                break  # larger sizes will not fit either


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument(
        "--megapixels",
        default="1,4,16,64",
        help="image sizes in 2^20 pixels (e.g. 0.05 for a smoke run)",
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-max-mp", type=float, default=4)
    parser.add_argument("--view", choices=("fixed", "scale"), default="fixed")
    parser.add_argument(
        "--scale5-max-mp",
        type=float,
        default=16,
        help="largest size of the scale-5 series (0: skip it)",
    )
    parser.add_argument("--max-rss-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=int, default=900)
    _common.add_output_arguments(parser, "scaling")
    args = parser.parse_args()
    results = _common.Results(args, key=("model", "size"))
    if not args.report_only:
        backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
        settings = {"backend": backend, "view": args.view, "batch": args.batch}
        settings.update(
            scale5_max_mp=args.scale5_max_mp, baseline_max_mp=args.baseline_max_mp
        )
        results.start([backend], settings, same=("batch",))
        measure(args, results)
    report(results, args)


def report(results, args):
    settings = results.settings
    measured = [r for r in results.records if "train_s" in r]
    header = [
        "image",
        "megapixels",
        "model",
        "S",
        "batch",
        "train step / image",
        "predict / image",
        "peak above baseline (train)",
        "peak RSS",
    ]
    rows = []
    for r in sorted(measured, key=lambda r: (SERIES.index(r["model"]), r["mp"])):
        rows.append(
            [
                r["size"],
                f"{r['mp']:g}",
                r["model"],
                r.get("scale") or "–",
                r["batch"],
                _common.format_seconds(r["train_s"]),
                _common.format_seconds(r.get("predict_s")),
                f"{r['train_peak_above_mb']:.0f} MB",
                f"{r['train_peak_mb'] / 1024:.2f} GB",
            ]
        )
    _common.print_table(header, rows)
    ratio_lines = []
    for kind, label, pixels in (
        ("attention x1", f"attention sampling ({settings['view']} view)", True),
        ("attention x1 (scale 5)", "attention sampling (scale 5)", True),
        ("full-res CNN", "full-res CNN", False),
    ):
        points = {r["mp"]: r for r in measured if r["model"] == kind}
        if len(points) < 2:
            continue
        lo, hi = points[min(points)], points[max(points)]
        ratio_lines.append(
            f"{label}, {hi['mp']:g} MP vs {lo['mp']:g} MP"
            + (f" ({hi['mp'] / lo['mp']:g}x the pixels)" if pixels else "")
            + f": {hi['train_s'] / lo['train_s']:.1f}x the step time, "
            f"{hi['train_peak_above_mb'] / lo['train_peak_above_mb']:.1f}x "
            "the peak memory above baseline"
        )
    for line in ratio_lines:
        print(line)
    if args.no_doc:
        return
    on_gpu = any(r.get("memory") == "gpu" for r in measured)
    png = plot(measured, args.section, args.doc, on_gpu)
    lines = [
        "## Scaling with image size" + (" (GPU)" if on_gpu else ""),
        "",
        _common.machine_block(results.machine),
        "",
        "Square RGB uint8 images; `AttentionSamplingModel(scale=S, n_patches=20, "
        "patch_size=50, samples_per_image=1)` (its default normalisation, "
        f"`x / 255 - 0.5`) at batch {settings['batch']}, "
        + (
            "with `S = 5 * side / 1024` (`--view fixed`: 5 at 1 MP, 10 at 4 MP, "
            "20 at 16 MP, 40 at 64 MP), so the attention network always reads a "
            "204x204 view and only the downsampling pass reads every pixel; "
            "*attention x1 (scale 5)* keeps `S = 5` (its view grows with the "
            f"image; measured up to {settings['scale5_max_mp']:g} MP); "
            if settings["view"] == "fixed"
            else "with `S = 5` at every size; "
        )
        + "versus the full-resolution CNN (the reference notebook's patch CNN "
        "+ Dense on the whole image, batch 1, only up to "
        f"{settings['baseline_max_mp']:g} MP by default: beyond, one step takes "
        "minutes). One `train_on_batch` per image (median after a warm-up "
        "step), peak RSS above the RSS after imports + build + data "
        f"({_common.PEAK_TEXT}), each point in a fresh process."
        + (
            " **On the GPU the memory columns are GPU memory**: the allocator's "
            "peak minus the memory in use after build (*peak RSS* is the host)."
            if on_gpu
            else ""
        ),
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
        "",
    ] + [f"- {line}" for line in ratio_lines]
    for r in results.records:
        if "notes" in r:
            lines.append(f"- {r['model']} at {r['mp']:g} MP: {r['notes']}")
    lines += ["", f"![scaling](images/benchmarks/{os.path.basename(png)})"]
    _common.update_section(args.section, "\n".join(lines), args.doc)


def plot(records, name, doc, on_gpu):
    """Log-log plot of step time and memory, in images/benchmarks/ by the doc."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = os.path.join(
        os.path.dirname(os.path.abspath(doc)), "images", "benchmarks"
    )
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = {
        "attention x1": "attention sampling, fixed 204² view (20 x 50²)",
        "attention x1 (scale 5)": "attention sampling, scale 5 (20 x 50²)",
        "full-res CNN": "full-res CNN",
    }
    for kind, style in zip(SERIES, ("o-", "^:", "s--")):
        points = sorted(
            (r for r in records if r["model"] == kind), key=lambda r: r["mp"]
        )
        if not points:
            continue
        label = labels[kind]
        if kind == "attention x1" and all(r.get("scale") == 5 for r in points):
            label = labels["attention x1 (scale 5)"]
        mps = [r["mp"] for r in points]
        axes[0].plot(mps, [r["train_s"] for r in points], style, label=label)
        memory = [max(r["train_peak_above_mb"], 1) for r in points]
        axes[1].plot(mps, memory, style, label=label)
    axes[0].set_ylabel("training step per image (s)")
    axes[1].set_ylabel(
        "peak GPU memory above baseline (MB)"
        if on_gpu
        else "peak RSS above baseline (MB)"
    )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image size (megapixels)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(f"Cost versus image size ({'GPU' if on_gpu else 'CPU'})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
