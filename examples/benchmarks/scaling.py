"""Attention-sampling training step time and memory from 1 to 64+ megapixels.

Square RGB uint8 images of `--megapixels` (default 1, 4, 16, 64) x 2^20
pixels; `AttentionSamplingModel(scale=5, n_patches=20, patch_size=50,
samples_per_image=1, rescale=1/255)` at `--batch` images per step, next to
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--megapixels", default="1,4,16,64")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-max-mp", type=float, default=4)
    parser.add_argument("--max-rss-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    megapixels = [float(m) for m in args.megapixels.split(",")]
    results, errors = [], {}
    for kind in ("attention x1", "full-res CNN"):
        for mp in megapixels:
            if kind == "full-res CNN" and mp > args.baseline_max_mp:
                continue
            s = side(mp)
            batch = args.batch if kind.startswith("attention") else 1
            repeats = args.repeats if kind.startswith("attention") else 1
            print(f"== {kind} {s}x{s} ({mp:g} MP) batch {batch}", flush=True)
            out, error = _common.run_worker(
                [COST, "--worker", "--model", kind, "--height", str(s), "--width",
                 str(s), "--batch", str(batch), "--repeats", str(repeats)],
                backend=backend, timeout=args.timeout, max_rss_gb=args.max_rss_gb)
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
    header = ["image", "megapixels", "model", "batch", "train step / image",
              "predict / image", "peak above baseline (train)", "peak RSS"]
    rows = []
    for r in sorted(results, key=lambda r: (r["model"], r["mp"])):
        rows.append([
            f"{r['side']}x{r['side']}", f"{r['mp']:g}", r["model"], r["batch"],
            f"{r['train_s']:.3f} s", f"{r['predict_s']:.3f} s" if "predict_s" in r else "–",
            f"{r['train_peak_above_mb']:.0f} MB", f"{r['train_peak_mb'] / 1024:.2f} GB",
        ])
    _common.print_table(header, rows)
    att = {r["mp"]: r for r in results if r["model"] == "attention x1"}
    ratio_lines = []
    if att:
        lo, hi = min(att), max(att)
        ratio_lines.append(
            f"attention sampling, {hi:g} MP vs {lo:g} MP ({hi / lo:g}x the pixels): "
            f"{att[hi]['train_s'] / att[lo]['train_s']:.1f}x the step time, "
            f"{att[hi]['train_peak_above_mb'] / att[lo]['train_peak_above_mb']:.1f}x "
            "the peak memory above baseline")
    full = {r["mp"]: r for r in results if r["model"] == "full-res CNN"}
    if len(full) > 1:
        lo, hi = min(full), max(full)
        ratio_lines.append(
            f"full-res CNN, {hi:g} MP vs {lo:g} MP: "
            f"{full[hi]['train_s'] / full[lo]['train_s']:.1f}x the step time, "
            f"{full[hi]['train_peak_above_mb'] / full[lo]['train_peak_above_mb']:.1f}x "
            "the peak memory above baseline")
    for line in ratio_lines:
        print(line)
    png = plot(results)
    if args.no_doc:
        return
    lines = [
        "## Scaling with image size",
        "",
        _common.machine_block(backends=[backend]),
        "",
        "Square RGB uint8 images; `AttentionSamplingModel(scale=5, n_patches=20, "
        f"patch_size=50, samples_per_image=1, rescale=1/255)` at batch "
        f"{args.batch} versus the full-resolution CNN (batch 1, only up to "
        f"{args.baseline_max_mp:g} MP by default: beyond, one step takes "
        "minutes). One `train_on_batch` per image (median after a warm-up "
        "step), peak RSS above the RSS after imports + build + data, each "
        "point in a fresh process.",
        "",
        f"Command: `python examples/benchmarks/scaling.py --backend {backend}`",
        "",
        _common.markdown_table(header, rows),
        "",
    ] + [f"- {line}" for line in ratio_lines]
    for (kind, mp), error in errors.items():
        lines.append(f"- {kind} at {mp:g} MP: {error}")
    lines += ["", f"![scaling](images/benchmarks/{os.path.basename(png)})"]
    _common.update_section(SECTION, "\n".join(lines))


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(_common.IMAGES, exist_ok=True)
    path = os.path.join(_common.IMAGES, "scaling.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("attention x1", "o-"), ("full-res CNN", "s--")):
        points = sorted((r["mp"], r) for r in results if r["model"] == kind)
        if not points:
            continue
        mps = [p for p, _ in points]
        label = "attention sampling (20 x 50²)" if kind.startswith("attention") else kind
        axes[0].plot(mps, [r["train_s"] for _, r in points], style, label=label)
        axes[1].plot(mps, [max(r["train_peak_above_mb"], 1) for _, r in points],
                     style, label=label)
    axes[0].set_ylabel("training step per image (s)")
    axes[1].set_ylabel("peak RSS above baseline (MB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image size (megapixels)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Cost versus image size (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print("wrote", path)
    return path


if __name__ == "__main__":
    main()
