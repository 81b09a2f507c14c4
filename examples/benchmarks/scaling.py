"""Attention-sampling training step time and memory from 1 to 64+ megapixels.

Square RGB uint8 images of `--megapixels` (default 1, 4, 16, 64) x 2^20
pixels; `AttentionSamplingModel(scale=S, n_patches=20, patch_size=50,
samples_per_image=1, rescale=1/255)` at `--batch` images per step. With
`--view fixed` (default) `S = 5 * side / 1024` (5 at 1 MP ... 40 at 64 MP),
so the attention network always reads a 204x204 view; with `--view scale`,
`S = 5`. The `scale 5` series (`S = 5` at every size, its view growing with
the image) is also measured up to `--scale5-max-mp`. Next to them
the full-resolution CNN baseline (the seed's 4 x Conv2D 16 + GlobalMaxPool +
Dense on the whole image, batch 1) up to `--baseline-max-mp`. Each point runs
in a fresh subprocess (the worker of `cost.py`): time per image of one
`train_on_batch` (median after a warm-up step), peak RSS above the RSS after
imports + build + data. A worker past `--max-rss-gb` is killed and the
series stops there.

Writes a table to the `scaling` section of docs/benchmarks.md and a log-log
plot to docs/images/benchmarks/scaling.png. TF by default (`--backend` or
KERAS_BACKEND).
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

SECTION = "scaling"
COST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cost.py")


def side(megapixels):
    return int(round(math.sqrt(megapixels * 2**20)))


def view_scale(side_px, view):
    return 5 if view == "scale" else max(1, int(round(5 * side_px / 1024)))


SERIES = ("attention x1", "attention x1 (scale 5)", "full-res CNN")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--megapixels", default="1,4,16,64")
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
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--section",
        default=SECTION,
        help="section of docs/benchmarks.md (and name of the "
        "plot) to write, e.g. scaling-gpu for a GPU run",
    )
    parser.add_argument(
        "--from-log",
        help="re-render the table and plot from "
        "the stdout of an earlier run (same flags)",
    )
    args = parser.parse_args()
    backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    megapixels = [float(m) for m in args.megapixels.split(",")]
    results, errors = [], {}
    if args.from_log:
        import ast

        with open(args.from_log) as handle:
            for line in handle:
                if line.strip().startswith("{'model'"):
                    r = ast.literal_eval(line.strip())
                    s = int(r["size"].split("x")[0])
                    results.append(dict(r, side=s, mp=round(s * s / 2**20, 3)))
        report(args, backend, megapixels, results, errors)
        return
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
            print(
                f"== {kind} {s}x{s} ({mp:g} MP) batch {batch} scale {scale}", flush=True
            )
            out, error = _common.run_worker(
                [
                    COST,
                    "--worker",
                    "--model",
                    kind,
                    "--height",
                    str(s),
                    "--width",
                    str(s),
                    "--batch",
                    str(batch),
                    "--repeats",
                    str(repeats),
                    "--scale",
                    str(scale),
                ],
                backend=backend,
                timeout=args.timeout,
                max_rss_gb=args.max_rss_gb,
            )
            final = [r for r in out if not r.get("partial")] or out
            if final:
                results.append(dict(final[-1], mp=mp, side=s))
                print("  ", final[-1], flush=True)
            if error:
                errors[(kind, mp)] = error
                print("  ", error, flush=True)
                break  # larger sizes will not fit either
    report(args, backend, megapixels, results, errors)


def report(args, backend, megapixels, results, errors):
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
    for r in sorted(results, key=lambda r: (SERIES.index(r["model"]), r["mp"])):
        rows.append(
            [
                f"{r['side']}x{r['side']}",
                f"{r['mp']:g}",
                r["model"],
                r.get("scale") or "–",
                r["batch"],
                _common.format_seconds(r["train_s"]),
                _common.format_seconds(r["predict_s"]) if "predict_s" in r else "–",
                f"{r['train_peak_above_mb']:.0f} MB",
                f"{r['train_peak_mb'] / 1024:.2f} GB",
            ]
        )
    _common.print_table(header, rows)
    ratio_lines = []
    for kind, label in (
        ("attention x1", f"attention sampling ({args.view} view)"),
        ("attention x1 (scale 5)", "attention sampling (scale 5)"),
    ):
        att = {r["mp"]: r for r in results if r["model"] == kind}
        if len(att) < 2:
            continue
        lo, hi = min(att), max(att)
        ratio_lines.append(
            f"{label}, {hi:g} MP vs {lo:g} MP ({hi / lo:g}x the pixels): "
            f"{att[hi]['train_s'] / att[lo]['train_s']:.1f}x the step time, "
            f"{att[hi]['train_peak_above_mb'] / att[lo]['train_peak_above_mb']:.1f}x "
            "the peak memory above baseline"
        )
    full = {r["mp"]: r for r in results if r["model"] == "full-res CNN"}
    if len(full) > 1:
        lo, hi = min(full), max(full)
        ratio_lines.append(
            f"full-res CNN, {hi:g} MP vs {lo:g} MP: "
            f"{full[hi]['train_s'] / full[lo]['train_s']:.1f}x the step time, "
            f"{full[hi]['train_peak_above_mb'] / full[lo]['train_peak_above_mb']:.1f}x "
            "the peak memory above baseline"
        )
    for line in ratio_lines:
        print(line)
    png = plot(results, args.section)
    if args.no_doc:
        return
    lines = [
        "## Scaling with image size",
        "",
        _common.machine_block(backends=[backend]),
        "",
        "Square RGB uint8 images; `AttentionSamplingModel(scale=S, n_patches=20, "
        f"patch_size=50, samples_per_image=1, rescale=1/255)` at batch "
        f"{args.batch}, "
        + (
            "with `S = 5 * side / 1024` (`--view fixed`: 5 at 1 MP, 10 at 4 MP, "
            "20 at 16 MP, 40 at 64 MP), so the attention network always reads a "
            "204x204 view and only the downsampling pass reads every pixel; "
            "*attention x1 (scale 5)* keeps `S = 5` (its view grows with the "
            f"image; measured up to {args.scale5_max_mp:g} MP); "
            if args.view == "fixed"
            else "with `S = 5` at every size; "
        )
        + "versus the full-resolution CNN (batch 1, only up to "
        f"{args.baseline_max_mp:g} MP by default: beyond, one step takes "
        "minutes). One `train_on_batch` per image (median after a warm-up "
        "step), peak RSS above the RSS after imports + build + data, each "
        "point in a fresh process."
        + (
            " **On the GPU the memory columns are GPU memory**: the allocator's "
            "peak minus the memory in use after build (*peak RSS* is the host)."
            if any(r.get("memory") == "gpu" for r in results)
            else ""
        ),
        "",
        f"Command: `python examples/benchmarks/scaling.py --backend {backend} "
        f"--view {args.view}`",
        "",
        _common.markdown_table(header, rows),
        "",
    ] + [f"- {line}" for line in ratio_lines]
    for (kind, mp), error in errors.items():
        lines.append(f"- {kind} at {mp:g} MP: {error}")
    lines += ["", f"![scaling](images/benchmarks/{os.path.basename(png)})"]
    _common.update_section(args.section, "\n".join(lines))


def plot(results, name="scaling"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(_common.IMAGES, exist_ok=True)
    path = os.path.join(_common.IMAGES, f"{name}.png")
    on_gpu = any(r.get("memory") == "gpu" for r in results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = {
        "attention x1": "attention sampling, fixed 204² view (20 x 50²)",
        "attention x1 (scale 5)": "attention sampling, scale 5 (20 x 50²)",
        "full-res CNN": "full-res CNN",
    }
    for kind, style in (
        ("attention x1", "o-"),
        ("attention x1 (scale 5)", "^:"),
        ("full-res CNN", "s--"),
    ):
        points = sorted(
            ((r["mp"], i), r) for i, r in enumerate(results) if r["model"] == kind
        )
        if not points:
            continue
        mps = [p for (p, _), _ in points]
        label = labels[kind]
        if kind == "attention x1" and all(r.get("scale") == 5 for _, r in points):
            label = "attention sampling, scale 5 (20 x 50²)"
        axes[0].plot(mps, [r["train_s"] for _, r in points], style, label=label)
        axes[1].plot(
            mps,
            [max(r["train_peak_above_mb"], 1) for _, r in points],
            style,
            label=label,
        )
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
    fig.suptitle(
        "Cost versus image size (GPU)" if on_gpu else "Cost versus image size (CPU)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
