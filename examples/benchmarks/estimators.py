"""Variance of the attention-gradient estimator over repeated draws.

On a fixed batch and fixed weights, the REINFORCE gradient of the attention
network is a random variable (it depends on which patches are drawn). This
script computes it many times (`--draws`, default 100) for each estimator
choice and reports

- the total variance: trace of the covariance of the gradient vector over the
  draws (sum of the per-coordinate variances);
- the relative variance: total variance / ‖mean gradient‖², which does not
  depend on the scale of the reward (`bounded` rewards are in (0, 1],
  `negative_loss` rewards are unbounded), so rewards can be compared; lower
  is better (fewer draws for the same signal-to-noise ratio);

for baseline `none` / `mean` (batch mean, the default) / `leave_one_out`
(for each draw, the mean reward of the other draws of the same image) /
`moving_average`,
reward `bounded` (default) / `negative_loss`, and sampling with replacement
(default) / without (Gumbel-top-k).

The weights come from a short training run on a small localised task (64x64
noise images, one 8x8 class-coloured square; scale 8, 4 patches of 16x16),
so the attention is not uniform and the rewards differ between draws. The
gradient is taken with `tf.GradientTape` around `model.policy_step` (the
exact step `fit` differentiates), w.r.t. the attention network's variables;
the entropy term is deterministic and adds no variance. The moving-average
baseline is warmed up on the same batch first and keeps updating during the
draws, as in training.

TensorFlow backend only (it sets KERAS_BACKEND=tensorflow). Run
`python examples/benchmarks/estimators.py`. Measurements go to
`examples/benchmarks/results/estimators.json`, merged by (reward, baseline,
replace) and saved after each configuration; the `estimators` section of
docs/benchmarks.md is rendered from it.
"""

import argparse
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

KEY = ("reward", "baseline", "replace")
CONFIGS = [
    (reward, baseline, replace)
    for replace in (True, False)
    for reward in ("bounded", "negative_loss")
    for baseline in ("none", "mean", "leave_one_out", "moving_average")
]


def square_task(n, size=64, square=8, classes=3, seed=0):
    """uint8 noise images with one class-coloured square; labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 128, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, classes, n).astype("int32")
    for i in range(n):
        r, c = rng.integers(0, size - square, 2)
        colour = np.zeros(3, np.uint8)
        colour[y[i] % 3] = 255
        x[i, r : r + square, c : c + square] = colour
    return x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples-per-image", type=int, default=4)
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    _common.add_output_arguments(parser, "estimators")
    args = parser.parse_args()
    results = _common.Results(args, key=KEY)
    if not args.report_only:
        measure(args, results)
    report(results, args)


def measure(args, results):
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_attention_sampling as kas

    # Records of other draws, batches or weights are not comparable.
    settings = {"seed": args.seed, "draws": args.draws, "batch": args.batch}
    settings.update(
        samples_per_image=args.samples_per_image, pretrain_steps=args.pretrain_steps
    )
    results.start(["tensorflow"], settings, same=tuple(settings))

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = square_task(512, seed=args.seed)
    model = kas.AttentionSamplingModel(
        3,
        scale=8,
        n_patches=4,
        patch_size=16,
        samples_per_image=args.samples_per_image,
        entropy_weight=0.01,
        seed=args.seed,
    )
    model.compile(metrics=["accuracy"])
    t0 = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=16,
        epochs=1,
        steps_per_epoch=args.pretrain_steps,
        verbose=0,
    )
    pretrain_s = time.perf_counter() - t0
    pre_logs = {k: float(v[-1]) for k, v in history.history.items()}
    print(f"pretrained {args.pretrain_steps} steps in {pretrain_s:.0f} s: {pre_logs}")

    x, y = square_task(args.batch, seed=args.seed + 1)
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    variables = model.attention_variables()
    results.settings.update(
        pre_logs=pre_logs, n_values=sum(int(np.prod(v.shape)) for v in variables)
    )

    def gradient_tensors():
        with tf.GradientTape() as tape:
            loss = model.policy_step(x, y, training=True)
        grads = tape.gradient(loss, variables)
        return tf.concat([tf.reshape(g, [-1]) for g in grads], 0)

    # Snapshot the non-trainable state (BatchNorm statistics) so every
    # configuration starts from the same weights.
    state = [v.numpy() for v in model.non_trainable_variables]
    # The entropy regulariser's gradient is deterministic; leave it out so
    # the mean is the REINFORCE term alone.
    model.entropy_weight = 0.0
    for reward, baseline, replace in CONFIGS:
        for v, value in zip(model.non_trainable_variables, state):
            v.assign(value)
        model.reward = reward
        model.baseline = baseline
        model.replace = replace
        step = tf.function(gradient_tensors)  # retraced for each configuration

        def gradient(step=step):
            return step().numpy()

        if baseline == "moving_average":
            for _ in range(20):
                gradient()
        keras.utils.set_random_seed(args.seed + 100)
        t0 = time.perf_counter()
        grads = np.stack([gradient() for _ in range(args.draws)])
        seconds = time.perf_counter() - t0
        mean = grads.mean(0)
        total_var = float(grads.var(0, ddof=1).sum())
        # |mean|^2 over-estimates |E g|^2 by tr(cov) / draws; correct for it.
        mean_sq = max(float(mean @ mean) - total_var / args.draws, 1e-30)
        record = {
            "reward": reward,
            "baseline": baseline,
            "replace": replace,
            "total_var": total_var,
            "mean_norm": mean_sq**0.5,
            "relative_var": total_var / mean_sq,
            "seconds": seconds,
        }
        print(record, flush=True)
        results.add(record)


def conclusions(by, noise=0.2):
    """Plain-language reading of the table (differences below `noise` are
    treated as ties: with 100 draws the variance estimates themselves are
    uncertain by roughly 15-20%). `by` maps each configuration to its record;
    all of them must be there."""

    def rel(reward, baseline, replace):
        return by[(reward, baseline, replace)]["relative_var"]

    def compare(a, b, name_a, name_b):
        ratio = a / b
        if ratio < 1 - noise:
            return (
                f"{name_a} has {1 / ratio:.1f}x lower relative variance than {name_b}"
            )
        if ratio > 1 + noise:
            return f"{name_b} has {ratio:.1f}x lower relative variance than {name_a}"
        return f"{name_a} and {name_b} are within noise ({ratio:.2f}x)"

    # (what is fixed, configuration a, configuration b, a's name, b's name)
    pairs = (
        [
            (f"{r} reward, with replacement", (r, "mean", True), (r, other, True), a, b)
            for r in ("bounded", "negative_loss")
            for other, a, b in (
                ("none", "the batch-mean baseline", "no baseline"),
                ("moving_average", "the batch mean", "the moving average"),
            )
        ]
        + [
            (
                f"{r} reward, {how}",
                (r, "leave_one_out", replace),
                (r, "mean", replace),
                "the leave-one-out baseline",
                "the batch mean",
            )
            for r, replace, how in (
                ("bounded", True, "with replacement"),
                ("negative_loss", True, "with replacement"),
                ("bounded", False, "without replacement"),
            )
        ]
        + [
            (
                "batch-mean baseline, with replacement",
                ("bounded", "mean", True),
                ("negative_loss", "mean", True),
                "the bounded reward",
                "the raw reward (negative_loss)",
            ),
            (
                "bounded reward, batch-mean baseline",
                ("bounded", "mean", True),
                ("bounded", "mean", False),
                "sampling with replacement",
                "without replacement",
            ),
        ]
    )
    lines = [
        f"{fixed}: " + compare(rel(*first), rel(*second), name_a, name_b)
        for fixed, first, second, name_a, name_b in pairs
    ]
    return lines


def report(results, args):
    settings = results.settings
    by = {tuple(r[k] for k in KEY): r for r in results.records}
    reference = by.get(("bounded", "mean", True))
    header = [
        "sampling",
        "reward",
        "baseline",
        "total variance",
        "‖mean gradient‖",
        "relative variance",
        "total var / default",
        "relative var / default",
    ]
    rows = []
    for config in CONFIGS:
        if config not in by:
            continue
        r = by[config]
        rows.append(
            [
                "with replacement" if r["replace"] else "without (Gumbel-top-k)",
                r["reward"],
                r["baseline"],
                f"{r['total_var']:.3g}",
                f"{r['mean_norm']:.3g}",
                f"{r['relative_var']:.3g}",
                f"{r['total_var'] / reference['total_var']:.2f}" if reference else "–",
                f"{r['relative_var'] / reference['relative_var']:.2f}"
                if reference
                else "–",
            ]
        )
    _common.print_table(header, rows)
    found = conclusions(by) if all(c in by for c in CONFIGS) else []
    for line in found:
        print(line)
    if args.no_doc:
        return
    pre_logs = settings["pre_logs"]
    lines = [
        "## Variance of the attention-gradient estimator",
        "",
        _common.machine_block(results.machine),
        "",
        f"Gradient of `model.policy_step` w.r.t. the attention network's "
        f"variables ({settings['n_values']} values), {settings['draws']} draws "
        f"on one fixed batch of {settings['batch']} images "
        f"(`samples_per_image={settings['samples_per_image']}`) with fixed "
        f"weights, after {settings['pretrain_steps']} training steps on the "
        "64x64 coloured-square task (scale 8, 4 patches of 16x16; accuracy "
        f"{pre_logs.get('accuracy', float('nan')):.2f}, entropy "
        f"{pre_logs.get('entropy', float('nan')):.2f} nats at the end of "
        "pre-training). *Total variance* is the trace of the covariance over "
        "the draws; *relative variance* divides it by ‖mean gradient‖², so it "
        "is comparable across reward scales (`negative_loss` rewards are "
        "larger than `bounded` ones). Ratios are relative to the package "
        "default (bounded reward, batch-mean baseline, with replacement). "
        "*leave_one_out*: for each draw, the mean reward of the other "
        f"{settings['samples_per_image'] - 1} draws of the same image. "
        "The entropy weight is set to 0 for the draws (its gradient is "
        "deterministic), and ‖mean gradient‖² is corrected for the draw noise "
        f"(‖mean‖² − total variance / draws). With {settings['draws']} draws "
        "the variance estimates are themselves uncertain (by roughly 15-20% "
        "at 100 draws), so smaller differences are ties.",
        "",
        results.command_text(),
        "",
        _common.markdown_table(header, rows),
    ]
    if found:
        lines += ["", "Reading (differences under 20% called ties):", ""]
        lines += [f"- {line}" for line in found]
    _common.update_section(args.section, "\n".join(lines), args.doc)


if __name__ == "__main__":
    main()
