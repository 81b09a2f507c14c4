"""Slides where `fit`, `evaluate`, `predict` and `explain` take data."""

import os

import numpy as np
from keras import ops

from keras_attention_sampling.slides.dataset import SlideDataset
from keras_attention_sampling.slides.index import (
    SLIDE_SUFFIXES,
    SlideIndex,
    index_slides,
)
from keras_attention_sampling.slides.slide import Slide


def _is_slide_path(value):
    return isinstance(value, (str, os.PathLike)) and os.fspath(value).lower().endswith(
        SLIDE_SUFFIXES
    )


def is_slide_data(x):
    """Whether `x` names slides: a `SlideDataset`, `SlideIndex`, `Slide`, a
    slide file, a CSV index or a folder of class folders, or a list of
    slides."""
    if isinstance(x, (SlideDataset, SlideIndex, Slide)):
        return True
    if isinstance(x, (str, os.PathLike)):
        return True  # a file or folder: nothing else `fit` takes is a path
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(v, Slide) or _is_slide_path(v) for v in x)
    return False


def as_slide_dataset(model, x, y=None, training=False, batch_size=None, **kwargs):
    """`x` as a `SlideDataset` for `model` (itself if it is one already)."""
    if isinstance(x, SlideDataset):
        if batch_size is not None and batch_size != x.batch_size:
            raise ValueError(
                "The SlideDataset sets its own batch_size; leave batch_size out."
            )
        return x
    if isinstance(x, (str, os.PathLike)) and not _is_slide_path(x):
        x = index_slides(x)  # a CSV or a folder of class folders
    return SlideDataset(
        model,
        x,
        labels=y,
        batch_size=batch_size or 1,
        training=training,
        shuffle=training,
        **kwargs,
    )


def explain_slides(model, dataset):
    """`AttentionSamplingModel.explain` on slides; see there."""
    parts = {}
    dataset.hold_weights()
    for index in range(len(dataset)):
        inputs = dataset[index][0]
        outputs = model._explain_forward(inputs)
        ids = dataset._order[index * dataset.batch_size :][: len(inputs["view"])]
        positions = np.stack(
            [
                dataset.centres(i, cells, dataset.view(i).shape[:2])
                for i, cells in zip(ids, inputs["cells"])
            ]
        )
        batch = {
            "probabilities": outputs["y_pred"],
            "attention": ops.exp(outputs["log_attention"]),
            "cells": inputs["cells"],
            "positions": positions.astype("float32"),
            "sampled_attention": outputs["sampled_attention"],
            "patch_logits": outputs["patch_logits"],
            "patches": inputs["patches"],
            "view": inputs["view"],
        }
        for key, value in batch.items():
            parts.setdefault(key, []).append(ops.convert_to_numpy(value))
    return {key: np.concatenate(value) for key, value in parts.items()}
