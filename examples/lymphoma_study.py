"""The lymphoma example over several seeds: the reference notebook's results table.

Runs `lymphoma.py`'s `run` once per seed (each seed draws its own split),
resumes interrupted runs, reuses finished ones, refuses a folder written with
other settings, and writes the results table (mean ± std over the runs) with
per-run numbers and training curves. It takes every flag of `lymphoma.py`,
plus `--seeds`.

    # the reference notebook's table, 5 runs, its image-level split...
    python examples/lymphoma_study.py --data-dir ~/data/lymphoma --seeds 5
    # ...and the honest slide-grouped one
    python examples/lymphoma_study.py --data-dir ~/data/lymphoma --seeds 5 \\
        --split slide --output runs/lymphoma-slide

Everything goes to `--output`: `results.md`, `results.csv` and `runs.csv`,
and one `seed-N/` folder per run (`lymphoma.py`'s files, plus `config.json`,
`summary.json` and `curves.png`). Rerun the same command to resume; raise
`--epochs` to continue finished runs.
"""

import argparse
import csv
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lymphoma  # noqa: E402  (it silences TensorFlow, then imports Keras)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402

# A run may be resumed only with the settings it started with; the number of
# epochs may grow, and --quick only picks defaults for the others.
RESUMABLE = {"epochs", "quick"}
RUN_SETTINGS = sorted(set(vars(lymphoma.settings_parser().parse_args([]))) - RESUMABLE)
SPLITS = {
    "random": "random image-level 70/15/15, stratified (slides leak between splits)",
    "slide": "slide-grouped 70/15/15 (no slide in two splits)",
}


def parse_args(argv=None):
    study = argparse.ArgumentParser(add_help=False)
    study.add_argument("--seeds", type=int, default=1, help="runs: seed, seed + 1, ...")
    return lymphoma.parse_args(argv, parents=[study])


class EpochSeconds(keras.callbacks.Callback):
    """Adds each epoch's wall time to the logs, so history.csv keeps it."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def check_run_config(run_dir, args):
    """Refuse to resume a run that was started with other settings."""
    config = json.loads(json.dumps({key: getattr(args, key) for key in RUN_SETTINGS}))
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        os.makedirs(run_dir, exist_ok=True)
        with open(path, "w") as handle:
            json.dump(config, handle, indent=2)
        return
    with open(path) as handle:
        stored = json.load(handle)
    changed = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise SystemExit(
            f"{run_dir} holds a run with other settings ({details}). "
            "Use another --output, or delete that folder to start over."
        )


def read_history(path):
    """history.csv as {column: list}, one row per epoch (the last write wins)."""
    rows = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value) if value else math.nan)
    return history


def run_seed(args, seed):
    """Train (or resume, or reuse) the run of one seed; return its summary."""
    run_dir = os.path.join(args.output, f"seed-{seed}")
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as handle:
            summary = json.load(handle)
        if summary["epochs"] == args.epochs:
            print(f"seed {seed}: finished earlier, reusing {summary_path}")
            return summary
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    check_run_config(run_dir, args)
    summary = lymphoma.run(args, run_dir, callbacks=[EpochSeconds()])
    history = read_history(os.path.join(run_dir, "history.csv"))
    summary["epochs"] = len(history["epoch"])
    summary["train_seconds"] = float(np.nansum(history.get("seconds", [])))
    plot_curves(history, os.path.join(run_dir, "curves.png"), seed)
    with open(summary_path, "w") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def plot_curves(history, path, seed):
    """Loss, accuracy and attention entropy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = np.asarray(history["epoch"], dtype=int) + 1
    panels = [
        ("loss", "classification loss"),
        ("accuracy", "accuracy"),
        ("entropy", "attention entropy (nats)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 3.6))
    for axis, (key, title) in zip(axes, panels):
        for prefix, label, style in (("", "train", "-o"), ("val_", "validation", "-s")):
            if prefix + key in history:
                axis.plot(
                    epochs, history[prefix + key], style, label=label, markersize=3
                )
        axis.set(title=title, xlabel="epoch")
        axis.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    axes[0].legend()
    figure.suptitle(f"seed {seed}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def write_report(summaries, args):
    """The results table (results.md, results.csv) and the runs (runs.csv)."""
    columns = ("train_accuracy", "test_accuracy", "chance", "train_seconds")
    values = {c: np.array([s[c] for s in summaries], dtype=float) for c in columns}
    mean = {c: float(v.mean()) for c, v in values.items()}
    std = {c: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for c, v in values.items()}

    def pm(column):  # one run has no spread to show
        spread = f" ± {std[column]:.1%}" if len(summaries) > 1 else ""
        return f"{mean[column]:.1%}{spread}"

    seeds = ", ".join(str(s["seed"]) for s in summaries)
    data = args.data_dir or f"synthetic {args.image_size[0]}x{args.image_size[1]}"
    lines = [
        "# Lymphoma results",
        "",
        f"Split: {SPLITS[args.split]}. Data: {data}. {len(summaries)} run(s) (seeds "
        f"{seeds}), {summaries[0]['epochs']} epochs, backend "
        f"{keras.backend.backend()}; accuracy mean ± std over runs; time = "
        "training time per run.",
        "",
        "| patch size | patches | train | test | chance | time |",
        "|---|---|---|---|---|---|",
        f"| {args.patch_size} | {args.patches} | {pm('train_accuracy')} "
        f"| {pm('test_accuracy')} | {mean['chance']:.1%} "
        f"| {duration(mean['train_seconds'])} |",
        "",
        "| seed | train | test | chance | train / val / test images | time "
        "| attention on evidence |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        # Known only for generated images (and runs since 2026-12-07).
        on, share = s.get("attention_on_evidence"), s.get("evidence_share")
        evidence = "–" if on is None else f"{on:.1%} (evenly: {share:.1%})"
        lines.append(
            f"| {s['seed']} | {s['train_accuracy']:.1%} | {s['test_accuracy']:.1%} "
            f"| {s['chance']:.1%} | {s['n_train']} / {s['n_val']} / {s['n_test']} "
            f"| {duration(s['train_seconds'])} | {evidence} |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.output, "results.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(args.output, "results.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["split", "patch_size", "patches", "runs", "epochs"]
            + [f"{c}_{k}" for c in ("train", "test") for k in ("mean", "std")]
            + ["chance", "train_seconds"]
        )
        writer.writerow(
            [
                args.split,
                args.patch_size,
                args.patches,
                len(summaries),
                summaries[0]["epochs"],
                mean["train_accuracy"],
                std["train_accuracy"],
                mean["test_accuracy"],
                std["test_accuracy"],
                mean["chance"],
                mean["train_seconds"],
            ]
        )
    with open(os.path.join(args.output, "runs.csv"), "w", newline="") as handle:
        # A run reused from before a column existed lacks it.
        fields = list(dict.fromkeys(key for s in summaries for key in s))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(summaries)
    print("\n" + text)
    return text


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    summaries = [
        run_seed(args, seed) for seed in range(args.seed, args.seed + args.seeds)
    ]
    write_report(summaries, args)
    return summaries


if __name__ == "__main__":
    main()
