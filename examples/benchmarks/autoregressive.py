"""When draws should depend on each other: the same/different task of the design
document, for independent and autoregressive draws, pooled and sequence heads.

The task is `kas.datasets.needle_pairs`: 96x96 noise with two 12x12 needles
far apart (one in the left third, one in the right), each of horizontal or
vertical stripes; the class is whether they agree. One patch cannot tell;
a useful pair holds one patch from each needle. Variants, at the same patch
budget (`--budgets`, 2 and 4 patches of 16x16, scale 8 so a 12x12 map),
without replacement, over `--seeds` seeds:

- `independent + pool`: `PatchSampler` and `WeightedLogitPool`, the package's
  model;
- `independent + sequence`: `PatchSampler` and `SequenceHead`;
- `autoregressive + sequence`: `AutoregressiveSampler` and `SequenceHead`;
- `uniform + sequence`: a frozen zero attention head, so uniform draws, and
  `SequenceHead`.

Every variant has the attention Adam `beta_1=0.9`, a uniform start and
`NormalizedFeature(8)`, and trains `--epochs` epochs on `--train` images; the
first `--warmup-epochs` look at `--warmup-patches` patches (a curriculum:
with many patches the pairs are often covered, so the head and the feature
network learn what the textures are before the budget shrinks). Reported:
test accuracy from `predict` (mean ± std), the share of test images whose
drawn patches cover both needles, and the training time. Measurements go to
`examples/benchmarks/results/autoregressive.json`, merged by (variant,
patches, seed); the `autoregressive` section of docs/benchmarks.md is
rendered from it.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("variant", "patches", "seed")
VARIANTS = (
    "independent + pool",
    "independent + sequence",
    "autoregressive + sequence",
    "uniform + sequence",
)
NEEDLE, PATCH = 12, 16


def build(variant, n_patches, seed):
    import keras

    import keras_attention_sampling as kas

    attention = kas.AttentionMap(head_initializer="zeros")
    if variant.startswith("autoregressive"):
        sampler = kas.AutoregressiveSampler(n_patches, PATCH, replace=False, seed=seed)
    else:
        sampler = kas.PatchSampler(n_patches, PATCH, replace=False, seed=seed)
    sequence = variant.endswith("sequence")
    model = kas.AttentionSamplingModel(
        2,
        attention_network=attention,
        feature_network=kas.NormalizedFeature(8 if sequence else 2),
        sampler=sampler,
        head=kas.SequenceHead(2, dim=16, blocks=1) if sequence else None,
        scale=8,
    )
    if variant.startswith("uniform"):
        attention.trainable = False
    model.compile(
        attention_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.9),
        metrics=["accuracy"],
    )
    return model


def covers_both(positions, corners):
    """Whether some drawn patch holds most of each needle (centre within 4 px)."""
    import numpy as np

    centres = corners + NEEDLE / 2  # (B, 2 needles, 2)
    near = np.abs(positions[:, :, None, :] - centres[:, None, :, :]) <= PATCH / 2 - 4
    return near.all(axis=-1).any(axis=1).all(axis=-1)


def worker(args):
    import keras
    import numpy as np

    import keras_attention_sampling as kas

    x, y, _ = kas.datasets.needle_pairs(args.train, seed=1)
    x_test, y_test, corners = kas.datasets.needle_pairs(args.test, seed=2)
    keras.utils.set_random_seed(args.seed)
    model = build(args.variant, max(args.patches, args.warmup_patches), args.seed)
    start = time.perf_counter()
    history = []
    if args.warmup_epochs:
        model.n_patches = max(args.patches, args.warmup_patches)
        logs = model.fit(x, y, batch_size=16, epochs=args.warmup_epochs, verbose=0)
        history += logs.history["accuracy"]
    model.n_patches = args.patches
    logs = model.fit(
        x, y, batch_size=16, epochs=args.epochs - args.warmup_epochs, verbose=0
    )
    history += logs.history["accuracy"]
    seconds = time.perf_counter() - start
    explanation = model.explain(x_test, batch_size=50)
    accuracy = float(np.mean(explanation["probabilities"].argmax(-1) == y_test))
    _common.write_json(
        args.result,
        {
            "variant": args.variant,
            "patches": args.patches,
            "seed": args.seed,
            "backend": keras.backend.backend(),
            "accuracy": accuracy,
            "both_covered": float(
                covers_both(explanation["positions"], corners).mean()
            ),
            "train_accuracy": [float(a) for a in history],
            "train_s": seconds,
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--budgets", default="2,4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--warmup-epochs", type=int, default=8)
    parser.add_argument("--warmup-patches", type=int, default=8)
    parser.add_argument("--timeout", type=int, default=3600)
    _common.add_output_arguments(parser, "autoregressive")
    _common.add_worker_arguments(parser, variant=str, patches=int, seed=int)
    parsed = _common.parse_main(parser, worker, KEY)
    if parsed is None:
        return
    args, backend, results = parsed
    if not args.report_only:
        names = ("train", "test", "epochs", "warmup_epochs", "warmup_patches")
        task = {name: getattr(args, name) for name in names}
        results.start([backend], task, same=tuple(task))
        for patches in args.budgets.split(","):
            for variant in args.variants.split(","):
                for seed in range(args.seeds):
                    point = {"variant": variant, "patches": int(patches), "seed": seed}
                    record = _common.run_point(
                        __file__, point, task, backend=backend, timeout=args.timeout
                    )
                    print(
                        *point.values(),
                        record.get("accuracy", record.get("error")),
                        record.get("both_covered"),
                    )
                    results.add(record)
    report(results, args)


def report(results, args):
    import numpy as np

    header = [
        "patches",
        "variant",
        "test accuracy (mean ± std)",
        "draws covering both needles",
        "seeds",
        "train time / run",
    ]
    rows, means = [], {}
    for patches in sorted({r["patches"] for r in results.records}):
        for variant in VARIANTS:
            records, done = _common.select(
                results.records, variant=variant, patches=patches
            )
            if not records:
                continue
            if not done:
                rows.append([patches, variant, records[0]["error"], "", "", ""])
                continue
            accuracy = np.array([r["accuracy"] for r in done])
            covered = np.array([r["both_covered"] for r in done])
            means[(variant, patches)] = (accuracy.mean(), covered.mean())
            spread = accuracy.std(ddof=1) if len(done) > 1 else 0.0
            rows.append(
                [
                    patches,
                    variant,
                    f"{accuracy.mean():.1%} ± {spread:.1%}",
                    f"{covered.mean():.0%}",
                    len(done),
                    _common.format_seconds(
                        float(np.mean([r["train_s"] for r in done]))
                    ),
                ]
            )
    _common.print_table(header, rows)
    checks = targets(means)
    for line in checks:
        print(line)
    s = results.settings
    description = (
        "`kas.datasets.needle_pairs` (96x96, two 12x12 needles far apart; the "
        "class is whether their stripes agree), scale 8, patches of 16x16 drawn "
        f"without replacement, {s['train']} training and {s['test']} test images, "
        f"{s['epochs']} epochs of which the first {s['warmup_epochs']} with "
        f"{s['warmup_patches']} patches; test accuracy from `predict`, mean ± std "
        "over seeds; *draws covering both needles*: the share of test images "
        "with a drawn patch centred within 4 px of each needle's centre. See "
        "the script's docstring for the variants."
    )
    title = "Autoregressive draws and a sequence head: the same/different task"
    _common.write_section(args, results, title, description, header, rows, checks)


def targets(means):
    lines = []
    ar = means.get(("autoregressive + sequence", 2))
    if ar:
        lines.append(
            f"autoregressive + sequence at 2 patches: {ar[0]:.1%} (target >= 95%: "
            f"{'met' if ar[0] >= 0.95 else 'missed'}); both needles covered in "
            f"{ar[1]:.0%} of test images (target >= 90%: "
            f"{'met' if ar[1] >= 0.9 else 'missed'})"
        )
        independent = [
            means[(v, 2)][0]
            for v in ("independent + pool", "independent + sequence")
            if (v, 2) in means
        ]
        if independent:
            gap = 100 * (ar[0] - max(independent))
            lines.append(
                f"over the best independent variant at 2 patches: {gap:+.1f} points "
                f"(target >= 15: {'met' if gap >= 15 else 'missed'})"
            )
    return lines


if __name__ == "__main__":
    main()
