"""Train/validation/test splits: stratified by image, or grouped by slide.

Images cut from one slide share staining, scanner and patient. An image-level
split puts near-duplicates of test images into training and inflates test
accuracy, so `split_by_group` keeps every group (slide) in one split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_fractions(fractions: Sequence[float], caller: str) -> np.ndarray:
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if fractions.size == 0:
        raise ValueError(f"{caller}: fractions must not be empty.")
    if not np.all(np.isfinite(fractions)) or np.any(fractions < 0):
        raise ValueError(
            f"{caller}: fractions must be finite and non-negative, got {fractions.tolist()}."
        )
    if not np.isclose(fractions.sum(), 1.0, atol=1e-6):
        raise ValueError(
            f"{caller}: fractions must sum to 1, got {fractions.tolist()} "
            f"(sum {fractions.sum():.6g})."
        )
    return fractions


def _check_labels(labels, caller: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError(f"{caller}: labels must not be empty.")
    return labels


def _apportion(total: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``total`` items into integer counts by largest remainder."""
    exact = fractions * total
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    # Ties go to the earlier split (train first), which keeps results stable.
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def split_random(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int | None = 0,
) -> tuple[np.ndarray, ...]:
    """Randomly split image indices, stratified by class.

    Each class is shuffled and cut by ``fractions`` (largest-remainder
    rounding per class), so every split has about the same class mix.
    Note that with several images per slide this split lets one slide appear
    in training and test; see `split_by_group`.

    Args:
        labels: Class label per image (any hashable values in an array).
        fractions: Fraction of each class per split; must sum to 1.
        seed: Seed of the shuffle.

    Returns:
        One sorted ``int64`` index array per fraction, e.g. ``(train, val, test)``.

    Raises:
        ValueError: If ``fractions`` are negative or do not sum to 1, or
            ``labels`` is empty.

    Examples:
        >>> train, val, test = split_random([0] * 10 + [1] * 10, (0.6, 0.2, 0.2), seed=0)
        >>> len(train), len(val), len(test)
        (12, 4, 4)
        >>> sorted(set(train) | set(val) | set(test)) == list(range(20))
        True
    """
    fractions = _check_fractions(fractions, "split_random")
    labels = _check_labels(labels, "split_random")
    rng = np.random.default_rng(seed)
    splits = [[] for _ in fractions]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.cumsum(_apportion(members.size, fractions))[:-1]
        for split, part in zip(splits, np.split(members, bounds)):
            split.append(part)
    return tuple(np.sort(np.concatenate(parts)).astype(np.int64) for parts in splits)


def split_by_group(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence | np.ndarray,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int | None = 0,
) -> tuple[np.ndarray, ...]:
    """Split image indices so that no group (slide) spans two splits.

    Groups are stratified by their majority class: within each class, groups
    are visited in random order and each goes to the split that is furthest
    below its target number of images for that class. Group sizes make exact
    fractions impossible in general; the result is as close as this greedy
    rule gets. Every split with a non-zero fraction receives at least one
    group (groups are moved from the split holding the most groups if
    needed).

    Args:
        labels: Class label per image.
        groups: Group id per image (e.g. ``ImageFolderIndex.groups``).
        fractions: Target fraction of images per split; must sum to 1.
        seed: Seed of the group order and tie-breaking.

    Returns:
        One sorted ``int64`` index array per fraction, e.g. ``(train, val, test)``.

    Raises:
        ValueError: If the lengths differ, ``fractions`` are invalid, or there
            are fewer groups than splits with a non-zero fraction.

    Examples:
        >>> labels = [0] * 6 + [1] * 6
        >>> groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f"]
        >>> train, test = split_by_group(labels, groups, (0.5, 0.5), seed=0)
        >>> len(train), len(test)
        (6, 6)
        >>> set(groups[i] for i in train) & set(groups[i] for i in test)
        set()
    """
    fractions = _check_fractions(fractions, "split_by_group")
    labels = _check_labels(labels, "split_by_group")
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != labels.shape:
        raise ValueError(
            f"split_by_group: labels and groups must have the same length, got "
            f"{labels.size} and {groups.size}."
        )
    group_names, group_of = np.unique(groups, return_inverse=True)
    n_groups = group_names.size
    needed = int(np.count_nonzero(fractions))
    if n_groups < needed:
        raise ValueError(
            f"split_by_group: {n_groups} group(s) cannot fill {needed} non-empty "
            "splits; use split_random or fewer splits."
        )
    class_values, class_of = np.unique(labels, return_inverse=True)
    sizes = np.bincount(group_of, minlength=n_groups)
    # Majority class of each group (ties: the smaller label).
    votes = np.zeros((n_groups, class_values.size), dtype=np.int64)
    np.add.at(votes, (group_of, class_of), 1)
    group_class = votes.argmax(axis=1)

    rng = np.random.default_rng(seed)
    assignment = np.empty(n_groups, dtype=np.int64)
    for cls in range(class_values.size):
        members = rng.permutation(np.flatnonzero(group_class == cls))
        target = fractions * sizes[members].sum()
        filled = np.zeros(fractions.size)
        for g in members:
            deficit = np.where(fractions > 0, target - filled, -np.inf)
            best = np.flatnonzero(deficit == deficit.max())
            choice = best[0] if best.size == 1 else rng.choice(best)
            assignment[g] = choice
            filled[choice] += sizes[g]

    # Guarantee no requested split is empty: move the smallest group out of
    # the split that holds the most groups.
    for split in np.flatnonzero(fractions > 0):
        if np.any(assignment == split):
            continue
        donor = np.bincount(assignment, minlength=fractions.size).argmax()
        candidates = np.flatnonzero(assignment == donor)
        assignment[candidates[np.argmin(sizes[candidates])]] = split

    image_split = assignment[group_of]
    return tuple(
        np.flatnonzero(image_split == s).astype(np.int64) for s in range(fractions.size)
    )
