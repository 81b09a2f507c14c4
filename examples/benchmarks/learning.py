"""Which settings learn on every seed: the reference notebook's, one change at a
time, and the package defaults chosen from them.

Trains `kas.AttentionSamplingModel` on tasks whose evidence is small and
local, over `--seeds` seeds, with the reference notebook's settings, with one
setting changed at a time, and with the package defaults, and reports the
test accuracy from `predict` (mean ± std, the worst seed, and how many seeds
learned: at least halfway from chance to 100%), with the training time per
run. The defaults are
chosen from this table.

Tasks (`uint8` in, the model's own normalisation unless a variant changes it):

- `needles`: `kas.datasets.textured_needles`: 96x96 noise, one 12x12 needle
  whose texture is one of 3 classes, the same mean for all; scale 8 (a 12x12
  map), 2 patches of 16x16, batch 16, 1536 training and 600 test images,
  8 epochs. The view shows where the needle is, not what it is.
- `digits`: `kas.datasets.MegapixelDigits` (Megapixel MNIST) on a
  `--digits-canvas` canvas with 5 digits of 28 px, 3 of the class, 10
  classes, `--digits-canvas // 30` scribbles; scale 8, 5 patches of 40x40
  with `_common.digit_backbone`, batch 16, `--digits-train` training and 500
  test images, 10 epochs.
- `lymphoma`: `kas.datasets.SyntheticLymphoma` in the earlier quick setting
  of `examples/lymphoma.py` (260x347, 60 images a class, evidence on 30%,
  no augmentation), scale 5,
  20 patches of 25x25, 2 draws per image, batch 8, 10 epochs, a random
  70/15/15 split; accuracy on the 27 test images.
- `lymphoma new slides`: the same training, judged on 270 images (90 a
  class) of slides the training never saw (the same generator with another
  seed) instead of the 27 test images, where one image is 3.7 points.
- `lymphoma 30 epochs`: the same, trained for 30 epochs, to tell a variant
  that learns worse from one that learns slower.
- `lymphoma 30 epochs new slides`: that training judged on the same 270
  images: for comparing variants that differ by a few points.

Variants: `reference (centred)` (the reference notebook's settings: REINFORCE,
batch-mean baseline, entropy weight 0.05, attention Adam `beta_1=0.999`, a
random head; with the inputs centred, as the package does), then that with
one change: `inputs in 0..1` (`rescale=1/255, offset=0`, the reference
notebook's own inputs); `expectation` (the original paper's estimator);
`leave-one-out` baseline; attention Adam `beta_1=0.9`; `entropy 0.01`;
`uniform start` (`AttentionMap(head_initializer="zeros")`); `mixing 0.1`
(`AttentionMap(uniform_mixing=0.1)`); `uniform sampling` (a frozen zero
head: patches drawn uniformly), the floor that learned attention must beat;
and `package defaults`, the model with nothing but the task's geometry
(`package defaults until 2026-12-02`: those before the expectation
estimator's entropy weight became 0, i.e. with 0.05), and
`defaults + logit scale 10`, `defaults + logit scale 7` and
`defaults + logit scale 3` (the package defaults with `logit_scale=10`, 7
or 3, for the 10 classes of the digits task: the package default for them
is `kas.default_logit_scale(10)`, 7.11 since 2026-12-07, 4.88 from
2026-12-04, and 3 until then). The package default for the three classes
of the other tasks is 4.89 since 2026-12-07 and was 3 until then, so their
`package defaults` records before that day are at 3, as are those of
`defaults + logit scale 3`. Every variant that starts from the
reference notebook's settings has its logit scale, 3.

Then the parts of the autoregressive issue on top of the package defaults,
with REINFORCE (which they need): `defaults + reinforce` (the package's own
sampler and pool), `defaults + autoregressive + pool` (an
`AutoregressiveSampler`), `defaults + independent + sequence` (a
`SequenceHead(dim=16, blocks=1, shortcut=True)`) and
`defaults + autoregressive + sequence` (both), to check that the new
parts do not learn worse where independent draws suffice; and
`defaults + reinforce + leave-one-out` and
`defaults + autoregressive + sequence + leave-one-out`, the first and the
last of those with the leave-one-out baseline (each draw judged against the
image's other draw, which the lymphoma tasks' two draws per image allow);
`defaults + autoregressive + sequence without draw order + leave-one-out`
(the same, with `SequenceHead(draw_order=False)`) and
`defaults + autoregressive + pool + leave-one-out`; and, with the batch-mean
baseline, `defaults + autoregressive + sequence without draw order` and
`defaults + independent + sequence without draw order`; and
`defaults + reinforce + leave-one-out + entropy 0.01` and
`defaults + autoregressive + sequence without draw order + leave-one-out
+ entropy 0.01`, with REINFORCE's entropy weight 0.01 instead of 0.05;
`defaults + reinforce + entropy 0.01` changes that weight alone, for
choosing REINFORCE's default (0.01 since 2026-12-07: every variant with
REINFORCE gives 0.05, written out, unless its name says otherwise).

Last, the package defaults with Adam's learning rate 3e-3 instead of 1e-3:
for the feature network and the pool (`defaults + feature lr 3e-3`), for
the attention network (`defaults + attention lr 3e-3`, `beta_1=0.9` as the
default attention optimiser has it) or both (`defaults + lr 3e-3`);
`defaults + without replacement` (`replace=False`) and
`defaults + logit scale 5` (three classes' default was 3, and is 4.89
since 2026-12-07);
`defaults + entropy 0.01` (the expectation estimator's default is 0),
`defaults + mixing 0.1` (`AttentionMap(uniform_mixing=0.1)`), and
`defaults + entropy 0.01 fading` and `defaults + entropy 0.05 fading` (the
entropy weight a schedule, decayed linearly from 0.01 or 0.05 to 0 over the
first half of the run's steps, `_common.fading`);
`defaults + uniform start` (`AttentionMap(head_initializer="zeros")`) and
`defaults + uniform start + attention warmup` (the same, and the attention
optimiser's learning rate 0 for the first fifth of the run's steps).

Each run is a fresh process on the backend of `--backend` (or
`KERAS_BACKEND`, default tensorflow). Measurements go to
`examples/benchmarks/results/learning.json`, merged by (task, variant,
seed, backend); the `learning` section of docs/benchmarks.md is rendered
from it, with a backend column once the file holds more than one backend,
and a column of the attention on the class evidence once it holds lymphoma
runs that measured it (since 2026-12-07): the share of each test map's
weight on the evidence cells, as `examples/lymphoma.py` reports it.
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

KEY = ("task", "variant", "seed", "backend")
# `lymphoma 30 epochs` is the lymphoma task trained three times as long:
# whether a variant that trails at 10 epochs only learns slower.
# `... new slides` judges the same training on ten times as many test
# images, from slides the split never saw.
TASKS = (
    "needles",
    "digits",
    "lymphoma",
    "lymphoma new slides",
    "lymphoma 30 epochs",
    "lymphoma 30 epochs new slides",
)
# The reference notebook's settings, written out (inputs centred, as the
# package now does): every variant but the package's own defaults starts
# from these, so a row keeps its meaning when a default changes.
REFERENCE = {
    "model": {
        "estimator": "reinforce",
        "baseline": "mean",
        "entropy_weight": 0.05,
        "logit_scale": 3.0,
    },
    "attention": {"head_initializer": "glorot_uniform", "uniform_mixing": 0.0},
    "attention_beta_1": 0.999,
}
VARIANTS = {
    "reference (centred)": {},
    "inputs in 0..1": {"model": {"rescale": 1 / 255, "offset": 0.0}},
    "expectation": {"model": {"estimator": "expectation"}},
    "leave-one-out": {"model": {"baseline": "leave_one_out"}},
    "attention beta_1 0.9": {"attention_beta_1": 0.9},
    "entropy 0.01": {"model": {"entropy_weight": 0.01}},
    "uniform start": {"attention": {"head_initializer": "zeros"}},
    "mixing 0.1": {"attention": {"uniform_mixing": 0.1}},
    "uniform sampling": {"attention": {"head_initializer": "zeros"}, "frozen": True},
    # The best single change, with each of the next best.
    "beta_1 0.9 + uniform start": {
        "attention_beta_1": 0.9,
        "attention": {"head_initializer": "zeros"},
    },
    "beta_1 0.9 + leave-one-out": {
        "attention_beta_1": 0.9,
        "model": {"baseline": "leave_one_out"},
    },
    "beta_1 0.9 + expectation": {
        "attention_beta_1": 0.9,
        "model": {"estimator": "expectation"},
    },
    # The expectation estimator carries the classification loss to the
    # attention, so less entropy may be needed than REINFORCE's 0.05.
    "beta_1 0.9 + expectation + entropy 0.01": {
        "attention_beta_1": 0.9,
        "model": {"estimator": "expectation", "entropy_weight": 0.01},
    },
    "beta_1 0.9 + expectation + entropy 0": {
        "attention_beta_1": 0.9,
        "model": {"estimator": "expectation", "entropy_weight": 0.0},
    },
    # Nothing given: what `AttentionSamplingModel(classes)` does today.
    "package defaults": None,
    # The package defaults with one model argument changed: the reference
    # notebook's logit scale 3 was chosen for 3 classes; Megapixel MNIST (10)
    # learned far better with 10 (docs/benchmarks.md). Since 2026-12-04 the
    # default grows with the classes (4.88 for 10, 7.11 since 2026-12-07),
    # so `... 3` is the package defaults for 10 classes until 2026-12-04,
    # and for 3 classes until 2026-12-07.
    "defaults + logit scale 10": {"defaults": {"logit_scale": 10.0}},
    # Between the two: 4.88 missed Megapixel MNIST's 90% at 10 patches on
    # one machine, 10 met it, and 10 was behind 4.88 on the digits (on
    # another machine).
    "defaults + logit scale 7": {"defaults": {"logit_scale": 7.0}},
    "defaults + logit scale 3": {"defaults": {"logit_scale": 3.0}},
    # The package defaults as they were until 2026-12-02 (the same model as
    # `beta_1 0.9 + expectation`, measured again after the block-wise draws):
    # the expectation estimator with REINFORCE's entropy weight 0.05.
    "package defaults until 2026-12-02": {
        "attention_beta_1": 0.9,
        "model": {"estimator": "expectation"},
    },
    # The package defaults with the parts of the autoregressive issue: they
    # need REINFORCE, so these are measured against both the package defaults
    # and REINFORCE with the same optimiser (`defaults + reinforce`).
    "defaults + reinforce": {"parts": (None, None)},
    "defaults + autoregressive + pool": {"parts": ("autoregressive", None)},
    "defaults + independent + sequence": {"parts": (None, "sequence")},
    "defaults + autoregressive + sequence": {"parts": ("autoregressive", "sequence")},
    # The same with the leave-one-out baseline, which the lymphoma task's two
    # draws per image allow: each draw's reward is judged against the other
    # draw of the same image rather than the batch, for a lower-variance
    # gradient of the sampler.
    "defaults + reinforce + leave-one-out": {
        "parts": (None, None),
        "model": {"baseline": "leave_one_out"},
    },
    "defaults + autoregressive + sequence + leave-one-out": {
        "parts": ("autoregressive", "sequence"),
        "model": {"baseline": "leave_one_out"},
    },
    # Each part alone does as well as REINFORCE on unseen slides; only both
    # together lose points. These two ask whether the head's embedding of the
    # draw order is what ties it to the sampler's order on the training
    # slides, and whether the sampler alone keeps up under the same baseline.
    "defaults + autoregressive + sequence without draw order + leave-one-out": {
        "parts": ("autoregressive", "sequence"),
        "head": {"draw_order": False},
        "model": {"baseline": "leave_one_out"},
    },
    "defaults + autoregressive + pool + leave-one-out": {
        "parts": ("autoregressive", None),
        "model": {"baseline": "leave_one_out"},
    },
    # At 10 epochs on unseen slides the leave-one-out baseline cost
    # REINFORCE points on the AMD machine (84.6% -> 78.8%; on the Xeon it
    # gained, 73.5% -> 81.2%): the parts without it, and the head without
    # the sampler, tell which of the three slows the start.
    "defaults + autoregressive + sequence without draw order": {
        "parts": ("autoregressive", "sequence"),
        "head": {"draw_order": False},
    },
    "defaults + independent + sequence without draw order": {
        "parts": (None, "sequence"),
        "head": {"draw_order": False},
    },
    # REINFORCE's entropy weight 0.05 holds its map near uniform through the
    # 10 epochs (entropy 6.8-7.6 nats of at most 8.2), where the defaults'
    # expectation estimator, with none, has narrowed to about 4.3: whether
    # a smaller weight lets REINFORCE and the parts start as fast.
    "defaults + reinforce + leave-one-out + entropy 0.01": {
        "parts": (None, None),
        "model": {"baseline": "leave_one_out", "entropy_weight": 0.01},
    },
    # Whether REINFORCE's own default should be 0.01 rather than the
    # reference notebook's 0.05: the same change with the package's sampler
    # and pool, and no other setting moved.
    "defaults + reinforce + entropy 0.01": {
        "parts": (None, None),
        "model": {"entropy_weight": 0.01},
    },
    "defaults + autoregressive + sequence without draw order + leave-one-out"
    " + entropy 0.01": {
        "parts": ("autoregressive", "sequence"),
        "head": {"draw_order": False},
        "model": {"baseline": "leave_one_out", "entropy_weight": 0.01},
    },
    # The package defaults with a larger learning rate (each default
    # optimiser with only its rate changed): at 10 epochs on unseen lymphoma
    # slides the defaults' training accuracy is still climbing when the
    # seeds that miss stop, so whether the feature network (`feature lr`),
    # the attention network (`attention lr`) or both learn too slowly.
    "defaults + feature lr 3e-3": {"defaults": {}, "compile": {"feature": 3e-3}},
    "defaults + attention lr 3e-3": {
        "defaults": {},
        "compile": {"attention": 3e-3},
    },
    "defaults + lr 3e-3": {
        "defaults": {},
        "compile": {"feature": 3e-3, "attention": 3e-3},
    },
    # Two more ways the same misses might close: draws without replacement
    # (which lifted Megapixel MNIST at 10 patches) and a logit scale above
    # the 3 that `kas.default_logit_scale` gave three classes until
    # 2026-12-07 (the prediction's cap rises from 0.95 to 0.996, and its
    # gradient with it).
    "defaults + without replacement": {"defaults": {"replace": False}},
    "defaults + logit scale 5": {"defaults": {"logit_scale": 5.0}},
    # On the seeds those miss, the map had narrowed onto cells off the class
    # evidence (a one-off probe: 36-38% of the attention on the 30% of the
    # image that is evidence, against 98% on a seed that learned), while the
    # patches that did land on it were voted right 90% of the time: the map
    # settles before the features can tell it where to look. Two ways to
    # keep it exploring: an entropy term for the expectation estimator
    # (none by default) and a tenth of every map spread evenly.
    "defaults + entropy 0.01": {"defaults": {"entropy_weight": 0.01}},
    "defaults + mixing 0.1": {"defaults": {}, "attention": {"uniform_mixing": 0.1}},
    # The entropy term gained on the lymphoma and digits but cost 12 points
    # on Megapixel MNIST at one patch, where the map must end narrow: the
    # same term fading to 0 over the first half of the run (`_common.fading`)
    # explores while the features learn and then lets the map settle.
    "defaults + entropy 0.01 fading": {"defaults": {}, "fading_entropy": 0.01},
    "defaults + entropy 0.05 fading": {"defaults": {}, "fading_entropy": 0.05},
    # Seed 0 settles off the evidence with every change above. Two ways to
    # keep the map from settling before the features can vote: start it
    # uniform (a zero head), and also hold it there for the first fifth of
    # the run, so the features first learn from patches drawn evenly.
    "defaults + uniform start": {
        "defaults": {},
        "attention": {"head_initializer": "zeros"},
    },
    "defaults + uniform start + attention warmup": {
        "defaults": {},
        "attention": {"head_initializer": "zeros"},
        "compile": {"attention_warmup": 0.2},
    },
}
CLASSES = {
    "needles": 3,
    "digits": 10,
    "lymphoma": 3,
    "lymphoma new slides": 3,
    "lymphoma 30 epochs": 3,
    "lymphoma 30 epochs new slides": 3,
}


def task_data(task, args):
    """`(train, test images, test labels, geometry, fit arguments, evidence)`;
    `evidence` is the generator and the indices of the test images where
    their class evidence is known (the lymphoma tasks), else None."""
    import numpy as np

    from keras_attention_sampling import datasets

    if task == "needles":
        x, y, _ = datasets.textured_needles(1536, seed=100)
        x_test, y_test, _ = datasets.textured_needles(600, seed=200)
        geometry = {"scale": 8, "n_patches": 2, "patch_size": 16}
        fit = {"batch_size": 16, "epochs": 8}
        return (x, y), x_test, y_test, geometry, fit, None
    if task == "digits":
        common = {"canvas": args.digits_canvas, "noise": args.digits_canvas // 30}
        train = datasets.MegapixelDigits(args.digits_train, 16, seed=1, **common)
        test = datasets.MegapixelDigits(500, 500, seed=2, **common)
        x_test, y_test = test[0]
        geometry = {"scale": 8, "n_patches": 5, "patch_size": 40}
        return (train,), x_test, y_test, geometry, {"epochs": 10}, None
    lymphoma = {
        "image_size": (260, 347),
        "images_per_slide": 4,
        "cell_scale": 0.5,
        "evidence_fraction": 0.3,
    }
    source = datasets.SyntheticLymphoma(60, seed=2024, **lymphoma)
    train, _, test = datasets.split_random(source.labels, (0.7, 0.15, 0.15), seed=0)
    sequence = datasets.ImageSequence(source, 8, indices=train, shuffle=True, seed=0)
    if task.endswith("new slides"):
        unseen = datasets.SyntheticLymphoma(90, seed=2025, **lymphoma)
        x_test, y_test = datasets.ImageSequence(unseen, len(unseen.labels))[0]
        evidence = (unseen, range(len(unseen.labels)))
    else:
        x_test, y_test = datasets.ImageSequence(source, len(test), indices=test)[0]
        evidence = (source, test)
    geometry = {"scale": 5, "n_patches": 20, "patch_size": 25, "samples_per_image": 2}
    epochs = 30 if "30 epochs" in task else 10
    fit = {"epochs": epochs}
    return (sequence,), x_test, np.asarray(y_test), geometry, fit, evidence


def parts_model(classes, geometry, seed, variant):
    """The package defaults, but for REINFORCE (which the parts need), an
    `AutoregressiveSampler` and a `SequenceHead` where the variant's `parts`
    ask for them, and its `model` and `head` arguments."""
    import keras_attention_sampling as kas

    sampler, head = variant["parts"]
    geometry = dict(geometry)
    if sampler == "autoregressive":
        sampler = kas.AutoregressiveSampler(
            geometry.pop("n_patches"), geometry.pop("patch_size"), seed=seed
        )
    else:
        geometry["seed"] = seed
    if head == "sequence":
        settings = {"dim": 16, "blocks": 1, "shortcut": True, **variant.get("head", {})}
        head = kas.SequenceHead(classes, **settings)
    # `... + entropy 0.01` is REINFORCE's default since 2026-12-07.
    model = {
        "entropy_weight": _common.OLD_REINFORCE_ENTROPY_WEIGHT,
        **variant.get("model", {}),
    }
    return kas.AttentionSamplingModel(
        classes,
        sampler=sampler,
        head=head,
        estimator="reinforce",
        **geometry,
        **model,
    )


def worker(args):
    """One (task, variant, seed) run; writes its record to `--result`."""
    import keras
    import numpy as np

    import keras_attention_sampling as kas

    variant = VARIANTS[args.variant]
    train, x_test, y_test, geometry, fit, evidence = task_data(args.task, args)
    classes = CLASSES[args.task]
    keras.utils.set_random_seed(args.seed)
    if args.task == "digits":
        geometry["feature_network"] = kas.NormalizedFeature(
            10, backbone=_common.digit_backbone()
        )
    if variant is None or "defaults" in variant:
        changed = dict(variant["defaults"]) if variant else {}
        # The optimiser's steps in the whole run, for the schedules.
        per_epoch = (
            len(train[0])
            if len(train) == 1
            else math.ceil(len(train[0]) / fit["batch_size"])
        )
        steps = per_epoch * fit["epochs"]
        if variant and "fading_entropy" in variant:
            changed["entropy_weight"] = _common.fading(variant["fading_entropy"], steps)
        if variant and "attention" in variant:
            changed["attention_network"] = kas.AttentionMap(
                name="attention_map", **variant["attention"]
            )
        model = kas.AttentionSamplingModel(
            classes, seed=args.seed, **geometry, **changed
        )
        rates = variant.get("compile", {}) if variant else {}
        optimizers = {}
        if "feature" in rates:
            optimizers["optimizer"] = keras.optimizers.Adam(rates["feature"])
        if "attention" in rates or "attention_warmup" in rates:
            # The default attention optimiser, only its learning rate changed.
            config = kas.policy_gradient.default_attention_optimizer().get_config()
            config["learning_rate"] = rates.get("attention", config["learning_rate"])
            if "attention_warmup" in rates:
                # Held at 0 (the map as it started) for that share of the run.
                config["learning_rate"] = (
                    keras.optimizers.schedules.PiecewiseConstantDecay(
                        [int(rates["attention_warmup"] * steps)],
                        [0.0, config["learning_rate"]],
                    )
                )
            optimizers["attention_optimizer"] = keras.optimizers.Adam.from_config(
                config
            )
        model.compile(metrics=["accuracy"], **optimizers)
    elif "parts" in variant:
        model = parts_model(classes, geometry, args.seed, variant)
        model.compile(metrics=["accuracy"])
    else:
        settings = {
            k: {**REFERENCE[k], **variant.get(k, {})} for k in ("model", "attention")
        }
        attention = kas.AttentionMap(**settings["attention"])
        model = kas.AttentionSamplingModel(
            classes,
            attention_network=attention,
            seed=args.seed,
            **geometry,
            **settings["model"],
        )
        if variant.get("frozen"):
            attention.trainable = False
        beta_1 = variant.get("attention_beta_1", REFERENCE["attention_beta_1"])
        model.compile(
            attention_optimizer=keras.optimizers.Adam(1e-3, beta_1=beta_1),
            metrics=["accuracy"],
        )
    start = time.perf_counter()
    history = model.fit(*train, verbose=0, **fit)
    seconds = time.perf_counter() - start
    predicted = model.predict(x_test, batch_size=16, verbose=0).argmax(-1)
    # Where the maps lie, on the images whose class evidence is known (after
    # `predict`, whose draws this would otherwise move on).
    on_evidence = None
    if evidence is not None:
        # The lymphoma example's measure, so that the two report the same.
        sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from lymphoma import attention_on_evidence

        maps = model.explain(x_test, batch_size=16)["attention"]
        on_evidence = attention_on_evidence(*evidence, maps, geometry["scale"])[0]
    _common.write_json(
        args.result,
        {
            "task": args.task,
            "variant": args.variant,
            "seed": args.seed,
            "backend": keras.backend.backend(),
            "accuracy": float(np.mean(predicted == y_test)),
            # Rows: true class, columns: predicted; tells a model that
            # misses one class from one that is wrong everywhere.
            "confusion": confusion_matrix(
                y_test, predicted, labels=range(classes)
            ).tolist(),
            "train_accuracy": [float(a) for a in history.history["accuracy"]],
            "entropy": float(history.history["entropy"][-1]),
            "train_s": seconds,
            "steps": int(model.optimizer.iterations),
            "attention_on_evidence": on_evidence,
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--digits-canvas", type=int, default=256)
    parser.add_argument("--digits-train", type=int, default=2000)
    parser.add_argument("--timeout", type=int, default=3600)
    _common.add_resume_argument(parser)
    _common.add_output_arguments(parser, "learning")
    _common.add_title_argument(parser)
    _common.add_worker_arguments(parser, task=str, variant=str, seed=int)
    parsed = _common.parse_main(parser, worker, KEY)
    if parsed is None:
        return
    args, backend, results = parsed
    if not args.report_only:
        settings = {
            "digits_canvas": args.digits_canvas,
            "digits_train": args.digits_train,
        }
        results.start([backend], settings, same=tuple(settings))
        for task in args.tasks.split(","):
            for variant in args.variants.split(","):
                for seed in range(args.seeds):
                    point = {"task": task, "variant": variant, "seed": seed}
                    if (
                        args.resume
                        and _common.select(results.records, backend=backend, **point)[1]
                    ):
                        continue
                    record = _common.run_point(
                        __file__, point, settings, backend=backend, timeout=args.timeout
                    )
                    # A failed run's record names its backend too.
                    record.setdefault("backend", backend)
                    print(*point.values(), record.get("accuracy", record.get("error")))
                    results.add(record)
    report(results, args)


def step_time(records):
    """Mean training time per step (epochs' first steps included), or "–"
    for runs recorded before steps were counted."""
    import numpy as np

    timed = [r["train_s"] / r["steps"] for r in records if r.get("steps")]
    return _common.format_seconds(float(np.mean(timed))) if timed else "–"


def evidence_share(records):
    """Mean attention on the class evidence over the runs that measured it,
    with their count, or "–" where none did."""
    import numpy as np

    measured = [r.get("attention_on_evidence") for r in records]
    measured = [m for m in measured if m is not None]
    return f"{np.mean(measured):.1%} ({len(measured)})" if measured else "–"


def summary_row(records, task, variant, backend, evidence=False):
    """The row of a variant's runs of a task on a backend, or None; with
    `evidence`, the attention on the class evidence as its last column."""
    import numpy as np

    records, done = _common.select(records, task=task, variant=variant, backend=backend)
    if not records:
        return None
    if not done:
        return [task, variant, records[0]["error"]] + [""] * (4 + evidence)
    accuracy = np.array([r["accuracy"] for r in done])
    threshold = (1 + 1 / CLASSES[task]) / 2
    row = [
        task,
        variant,
        f"{accuracy.mean():.1%} ± {accuracy.std(ddof=1) if len(done) > 1 else 0:.1%}",
        f"{accuracy.min():.1%}",
        f"{int((accuracy >= threshold).sum())} / {len(done)}",
        _common.format_seconds(float(np.mean([r["train_s"] for r in done]))),
        step_time(done),
    ]
    return row + [evidence_share(done)] if evidence else row


def report(results, args):
    header = [
        "task",
        "variant",
        "accuracy (mean ± std)",
        "worst seed",
        "seeds learned",
        "train time / run",
        "time / step",
    ]
    backends = [
        b for b in _common.BACKENDS if any(r["backend"] == b for r in results.records)
    ]
    # Files of one backend keep the table they have always had, and so do
    # files from before the attention on the evidence was measured.
    several = len(backends) > 1
    if several:
        header.insert(2, "backend")
    evidence = any(r.get("attention_on_evidence") is not None for r in results.records)
    if evidence:
        header.append("attention on evidence (runs)")
    rows = []
    for task in TASKS:
        for variant in VARIANTS:
            for backend in backends:
                row = summary_row(results.records, task, variant, backend, evidence)
                if row is not None:
                    rows.append(row[:2] + [backend] + row[2:] if several else row)
    _common.print_table(header, rows)
    settings = results.settings
    description = (
        "Test accuracy from `predict` of `AttentionSamplingModel` trained with "
        "the reference notebook's settings (inputs centred), with one of them "
        "changed at a time, and with the package defaults, over "
        "the seeds 0, 1, ...; *seeds learned* counts the seeds at least halfway "
        "from chance to 100% (needles and lymphoma: 3 classes, 66.7%; digits: "
        "10 classes, 55%). Tasks: *needles* (`textured_needles`, 96x96, a "
        "12x12 needle, scale 8, 2 patches of 16, 8 epochs), *digits* "
        f"(`MegapixelDigits`, {settings['digits_canvas']}² canvas, 5 digits of "
        "28 px, scale 8, 5 patches of 40 with a digit backbone, "
        f"{settings['digits_train']} training "
        "canvases, 10 epochs), *lymphoma* (`SyntheticLymphoma`, 260x347, class "
        "evidence on 30% of each image, no augmentation, 20 patches of 25, 2 "
        "draws per image, 10 epochs; *lymphoma 30 epochs* the same for 30; "
        "*... new slides* that training judged on 270 images of unseen slides "
        "instead of the split's 27). "
        "*time / step* is the training time over "
        "the optimiser's steps, compilation and first steps included. See the "
        "script's docstring for every variant."
    )
    if evidence:
        description += (
            " *Attention on evidence*: on the lymphoma tasks, the share of each "
            "test map's weight on the cells of the class evidence (as "
            "`examples/lymphoma.py` reports it; a map spread evenly would give "
            "the evidence's 30%), averaged over the runs that recorded it."
        )
    title = _common.section_title(
        results, args, "Learning on every seed: defaults and one change at a time"
    )
    _common.write_section(
        args,
        results,
        title,
        description,
        header,
        rows,
    )


if __name__ == "__main__":
    main()
