"""Which slides, with which slide-level labels: a CSV, class folders or a list."""

import csv
import os
import warnings
from typing import NamedTuple

from keras_attention_sampling.slides.slide import SlideError, open_slide

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".btf", ".ndpi", ".scn", ".qptiff")


class SlideIndex(NamedTuple):
    """Slides and their labels, as `index_slides` returns them."""

    paths: list
    """The slide files."""
    labels: list
    """The class index of each slide (`None` for unlabelled slides)."""
    class_names: tuple
    """The class of each index."""
    skipped: list
    """`(path, reason)` of every slide left out with `on_error="skip"`."""


def _is_slide(name):
    return name.lower().endswith(SLIDE_SUFFIXES)


def _from_csv(path):
    entries = []
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or [h.strip().lower() for h in header[:2]] != [
            "path",
            "label",
        ]:
            raise SlideError(
                f"{path}: a slide index CSV starts with the header 'path,label', "
                f"got {header!r}."
            )
        for line, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2 or not row[0].strip():
                raise SlideError(
                    f"{path}, line {line}: expected 'path,label', got {row!r}."
                )
            slide = row[0].strip()
            entries.append(
                (os.path.join(base, slide), row[1].strip(), f"{path}, line {line}")
            )
    return entries


def _from_folder(path):
    classes = sorted(
        name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))
    )
    if not classes:
        raise SlideError(
            f"{path}: a slide folder holds one subfolder of slides per class; "
            "it has no subfolders."
        )
    entries = []
    for name in classes:
        folder = os.path.join(path, name)
        for file in sorted(os.listdir(folder)):
            if _is_slide(file):
                entries.append((os.path.join(folder, file), name, folder))
    return entries


def index_slides(source, class_names=None, on_error="raise"):
    """Slides with slide-level labels, each opened once to check it reads.

    Args:
        source: a CSV file whose header is `path,label` (paths relative to
            the CSV's folder), a folder of one subfolder of slides per class,
            or a list of `(path, label)` pairs.
        class_names: the classes in index order; by default the sorted
            labels found (for a folder, its subfolders).
        on_error: `"raise"` stops at the first slide that cannot be read,
            with the file and the reason; `"skip"` leaves it out, warns once
            with every skipped file, and keeps the rest.

    Returns:
        A `SlideIndex`.

    Raises:
        SlideError: a slide that cannot be read (with `on_error="raise"`),
            a malformed CSV, a label not in `class_names`, or no slides.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(
            f"index_slides: on_error must be 'raise' or 'skip', got {on_error!r}."
        )
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            entries = _from_folder(source)
        elif os.path.isfile(source):
            entries = _from_csv(source)
        else:
            raise SlideError(f"{source}: no such slide index (a CSV or a folder).")
    else:
        entries = [(os.fspath(p), label, "the list") for p, label in source]
    found = sorted({str(label) for _, label, _ in entries})
    class_names = tuple(class_names) if class_names is not None else tuple(found)
    lookup = {str(name): i for i, name in enumerate(class_names)}
    paths, labels, skipped = [], [], []
    for path, label, where in entries:
        if str(label) not in lookup:
            raise SlideError(
                f"{where}: label {label!r} of {path} is not one of {class_names}."
            )
        try:
            open_slide(path).close()
        except (SlideError, OSError) as error:
            if on_error == "raise":
                raise SlideError(f"{where}: {error}") from error
            skipped.append((path, str(error)))
            continue
        paths.append(path)
        labels.append(lookup[str(label)])
    if skipped:
        listing = "\n".join(f"  {reason}" for _, reason in skipped)
        warnings.warn(
            f"index_slides skipped {len(skipped)} slide(s) that cannot be read:\n"
            f"{listing}",
            stacklevel=2,
        )
    if not paths:
        raise SlideError(f"index_slides: no readable slides in {source!r}.")
    return SlideIndex(paths, labels, class_names, skipped)
