"""Index and read a folder of class-labelled images (one subfolder per class).

The index is deliberately lightweight: file paths, integer labels, class names
and group ("slide") ids. Nothing is decoded until a batch is requested, so a
dataset of megapixel images costs a few kilobytes of memory to index.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

#: File extensions (lower case) treated as images when indexing a folder.
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

# Files that operating systems and archive tools leave behind in folders.
_STRAY_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})

# `<slide>_<NNN>` as in the IICBU lymphoma set: `sj-05-3362-R2_001.tif`.
_SLIDE_SUFFIX = re.compile(r"^(?P<slide>.+)_\d+$")


def slide_id_from_path(path: str | os.PathLike) -> str:
    """Return the slide (group) id encoded in an image file name.

    The slide id is the file stem without a trailing ``_NNN`` image counter,
    so all tiles cut from one slide share an id. A stem without such a
    suffix is its own slide id.

    Args:
        path: A file path or a bare file name.

    Returns:
        The slide id as a string.

    Examples:
        >>> slide_id_from_path("data/CLL/sj-05-3362-R2_001.tif")
        'sj-05-3362-R2'
        >>> slide_id_from_path("scan.png")
        'scan'
    """
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    match = _SLIDE_SUFFIX.match(stem)
    return match.group("slide") if match else stem


def _is_visible(name: str) -> bool:
    # Hidden files (".DS_Store", "._foo.tif" AppleDouble forks) and helper
    # folders such as "__MACOSX" never hold real data.
    return not (name.startswith(".") or name.startswith("__"))


def _is_image_file(path: str, extensions: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return (
        _is_visible(name)
        and name.lower() not in _STRAY_FILES
        and os.path.splitext(name)[1].lower() in extensions
        and os.path.isfile(path)
    )


def _visible_subdirs(folder: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(folder)
        if _is_visible(name) and os.path.isdir(os.path.join(folder, name))
    )


def _image_files(folder: str, extensions: Sequence[str]) -> list[str]:
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if _is_image_file(os.path.join(folder, name), extensions)
    )


def _has_images(folder: str, extensions: Sequence[str]) -> bool:
    return any(
        _is_image_file(os.path.join(folder, name), extensions)
        for name in os.listdir(folder)
    )


# eq=False: the fields hold numpy arrays, which have no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolderIndex:
    """A lightweight index of a labelled image folder.

    Holds paths, labels and group ids only; images are decoded on demand by
    `load_image` (or in batches by
    `ImageSequence`).

    Attributes:
        paths: Image file paths, sorted by class then file name.
        labels: ``int32`` array of class indices into ``class_names``.
        class_names: Class names; label ``i`` is ``class_names[i]``.
        groups: Array of group (slide) ids, one string per image. Use it with
            `split_by_group`.
        root: The folder that directly contains the class subfolders.

    Examples:
        >>> import numpy as np
        >>> index = ImageFolderIndex(
        ...     paths=("a/x_001.png", "b/y_001.png"),
        ...     labels=np.array([0, 1], dtype="int32"),
        ...     class_names=("a", "b"),
        ...     groups=np.array(["x", "y"]),
        ...     root=".",
        ... )
        >>> len(index), index.class_counts()
        (2, {'a': 1, 'b': 1})
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    groups: np.ndarray
    root: str

    def __post_init__(self):
        if not (len(self.paths) == len(self.labels) == len(self.groups)):
            raise ValueError(
                "ImageFolderIndex: paths, labels and groups must have the same "
                f"length, got {len(self.paths)}, {len(self.labels)} and "
                f"{len(self.groups)}."
            )

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        """Return the number of images per class name.

        Returns:
            A dict ``{class_name: count}`` in label order.

        Examples:
            >>> import numpy as np
            >>> ImageFolderIndex(("p.png",), np.array([0]), ("a", "b"),
            ...                  np.array(["p"]), ".").class_counts()
            {'a': 1, 'b': 0}
        """
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts)}

    def load_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as an RGB ``uint8`` array ``(H, W, 3)``.

        Args:
            index: Position in the index.

        Returns:
            The decoded image.

        Raises:
            ValueError: If the file cannot be decoded (the message names it).
            FileNotFoundError: If the file disappeared after indexing.

        Examples:
            >>> import os, tempfile
            >>> from PIL import Image
            >>> tmp = tempfile.TemporaryDirectory()  # removed when the example ends
            >>> root = tmp.name
            >>> os.makedirs(os.path.join(root, "A"))
            >>> Image.new("L", (5, 4)).save(os.path.join(root, "A", "s_001.png"))
            >>> index_image_folder(root).load_image(0).shape
            (4, 5, 3)
        """
        return read_image(self.paths[index])

    def image_size(self, index: int) -> tuple[int, int]:
        """Return ``(height, width)`` of image ``index`` without decoding it.

        Args:
            index: Position in the index.

        Returns:
            The image size as ``(height, width)``.

        Examples:
            >>> import os, tempfile
            >>> from PIL import Image
            >>> tmp = tempfile.TemporaryDirectory()  # removed when the example ends
            >>> root = tmp.name
            >>> os.makedirs(os.path.join(root, "A"))
            >>> Image.new("RGB", (5, 4)).save(os.path.join(root, "A", "s.png"))
            >>> index_image_folder(root).image_size(0)
            (4, 5)
        """
        return read_image_size(self.paths[index])


def _find_class_root(data_dir: str, class_names, extensions) -> str:
    """Return the folder holding the class subfolders (top or one level down)."""
    if class_names is not None:
        if all(os.path.isdir(os.path.join(data_dir, c)) for c in class_names):
            return data_dir
        nested = [
            os.path.join(data_dir, sub)
            for sub in _visible_subdirs(data_dir)
            if all(os.path.isdir(os.path.join(data_dir, sub, c)) for c in class_names)
        ]
        if len(nested) == 1:
            return nested[0]
        if len(nested) > 1:
            raise ValueError(
                f"index_image_folder: several subfolders of '{data_dir}' contain "
                f"all class folders {list(class_names)}: {nested}. Point data_dir "
                "at the one to use."
            )
        missing = [
            c for c in class_names if not os.path.isdir(os.path.join(data_dir, c))
        ]
        raise FileNotFoundError(
            f"index_image_folder: class folder(s) {missing} not found in "
            f"'{data_dir}' (nor all of {list(class_names)} together in any of its "
            "subfolders). Expected data_dir/<class>/<images> or "
            "data_dir/<one folder>/<class>/<images>."
        )

    # Classes not given: class folders are the subfolders that hold images.
    top = _visible_subdirs(data_dir)
    if any(_has_images(os.path.join(data_dir, sub), extensions) for sub in top):
        return data_dir
    nested = [
        os.path.join(data_dir, sub)
        for sub in top
        if any(
            _has_images(os.path.join(data_dir, sub, inner), extensions)
            for inner in _visible_subdirs(os.path.join(data_dir, sub))
        )
    ]
    if len(nested) == 1:
        return nested[0]
    if len(nested) > 1:
        raise ValueError(
            f"index_image_folder: several subfolders of '{data_dir}' look like "
            f"dataset roots: {nested}. Point data_dir at one of them or pass "
            "class_names."
        )
    hint = (
        " data_dir itself holds images: point it at the folder above the class folders."
        if _has_images(data_dir, extensions)
        else ""
    )
    raise ValueError(
        f"index_image_folder: no class folders with images (extensions "
        f"{list(extensions)}) found in '{data_dir}' or one level below it. "
        "Expected data_dir/<class>/<images> or data_dir/<one folder>/<class>/<images>."
        + hint
    )


def index_image_folder(
    data_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    group_fn: Callable[[str], str] = slide_id_from_path,
) -> ImageFolderIndex:
    """Index a folder of images with one subfolder per class.

    The class subfolders may sit directly in ``data_dir`` (``data_dir/CLL/``)
    or exactly one level deeper, as in the Kaggle copy of the lymphoma set
    (``data_dir/Malignant Lymphoma Classification/CLL/``). Images are not
    opened here; a corrupt file raises when it is read.

    Hidden files (``.DS_Store``, ``._*``), ``Thumbs.db``, ``desktop.ini``,
    subfolders inside a class folder and files with other extensions are
    skipped.

    Args:
        data_dir: The dataset folder.
        class_names: Class folder names, in label order. Defaults to every
            visible subfolder, sorted alphabetically (so label ``i`` is the
            ``i``-th folder name).
        extensions: Lower-case file extensions treated as images.
        group_fn: Maps a file path to its group id. The default,
            `slide_id_from_path`, strips a trailing ``_NNN`` counter.

    Returns:
        An `ImageFolderIndex`.

    Raises:
        FileNotFoundError: If ``data_dir`` or a requested class folder does
            not exist.
        ValueError: If no class folders are found, the layout is ambiguous,
            or a class folder holds no images.

    Examples:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> tmp = tempfile.TemporaryDirectory()  # removed when the example ends
        >>> root = tmp.name
        >>> for cls in ("CLL", "FL"):
        ...     os.makedirs(os.path.join(root, "nested", cls))
        ...     for i in (1, 2):
        ...         name = f"sj-{cls}_{i:03d}.tif"
        ...         Image.new("RGB", (8, 6)).save(os.path.join(root, "nested", cls, name))
        >>> index = index_image_folder(root)
        >>> index.class_names, index.labels.tolist(), index.groups.tolist()
        (('CLL', 'FL'), [0, 0, 1, 1], ['sj-CLL', 'sj-CLL', 'sj-FL', 'sj-FL'])
    """
    data_dir = os.fspath(data_dir)
    extensions = tuple(
        e.lower() if e.startswith(".") else "." + e.lower() for e in extensions
    )
    if not os.path.exists(data_dir):
        raise FileNotFoundError(
            f"index_image_folder: data directory '{data_dir}' does not exist. "
            "Expected a folder with one subfolder of images per class."
        )
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"index_image_folder: '{data_dir}' is not a directory. Expected a "
            "folder with one subfolder of images per class."
        )
    if class_names is not None:
        class_names = tuple(class_names)
        if not class_names:
            raise ValueError("index_image_folder: class_names must not be empty.")
        if len(set(class_names)) != len(class_names):
            raise ValueError(
                f"index_image_folder: class_names has duplicates: {list(class_names)}."
            )

    root = _find_class_root(data_dir, class_names, extensions)
    if class_names is None:
        class_names = tuple(_visible_subdirs(root))

    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = _image_files(os.path.join(root, name), extensions)
        if not files:
            raise ValueError(
                f"index_image_folder: class folder '{os.path.join(root, name)}' "
                f"contains no image files (extensions {list(extensions)})."
            )
        paths.extend(files)
        labels.extend([label] * len(files))

    return ImageFolderIndex(
        paths=tuple(paths),
        labels=np.asarray(labels, dtype="int32"),
        class_names=class_names,
        groups=np.asarray([group_fn(p) for p in paths], dtype=str),
        root=root,
    )


def _array_to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a decoded (H, W[, C]) array of any common dtype to RGB uint8."""
    array = np.asarray(array)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)  # keep the 8 most significant bits
    elif array.dtype.kind == "f":
        scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
        array = np.clip(np.nan_to_num(array) * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {array.shape}")
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 2:  # grey + alpha
        return _composite_on_white(np.repeat(array[..., :1], 3, axis=-1), array[..., 1])
    if channels == 4:
        return _composite_on_white(array[..., :3], array[..., 3])
    if channels == 3:
        return np.ascontiguousarray(array)
    raise ValueError(f"expected 1 to 4 channels, got {channels}")


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # Transparent pixels become white: the colour of an empty glass slide,
    # and what viewers show behind a transparent image.
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return out.round().astype(np.uint8)


def _pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        return _array_to_rgb_uint8(np.asarray(image.convert("RGBA")))
    if mode.startswith("I;16"):
        return _array_to_rgb_uint8(np.asarray(image).astype(np.uint16))
    if mode in ("I", "F"):
        return _array_to_rgb_uint8(np.asarray(image))
    # "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV": Pillow knows the conversion.
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as an RGB ``uint8`` array ``(H, W, 3)``.

    Greyscale is replicated to three channels, palette images are expanded,
    images with an alpha channel are composited onto white, and 16-bit
    images keep their 8 most significant bits. Multi-page files give their
    first page. TIFFs that Pillow cannot decode are retried with
    ``tifffile`` when it is installed.

    Args:
        path: The image file.

    Returns:
        The image as a ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable image; the message names it.

    Examples:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "grey.png")
        >>> Image.new("L", (4, 3), color=7).save(path)
        >>> image = read_image(path)
        >>> image.shape, image.dtype.name, image[0, 0].tolist()
        ((3, 4, 3), 'uint8', [7, 7, 7])
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_image: image file '{path}' does not exist.")
    try:
        with Image.open(path) as image:
            image.load()  # decode now so truncated files fail here, not later
            return _pil_to_rgb_array(image)
    except Exception as pil_error:  # decoders raise many types on bad input
        error = pil_error
    if path.lower().endswith((".tif", ".tiff")):
        try:  # e.g. 16-bit RGB or JPEG-2000-compressed TIFFs
            import tifffile

            return _array_to_rgb_uint8(tifffile.imread(path, key=0))
        except ImportError:
            pass
        except Exception as tiff_error:  # tifffile raises many error types
            error = tiff_error
    raise ValueError(
        f"read_image: cannot decode image file '{path}' "
        f"({type(error).__name__}: {error}). Expected a readable RGB, "
        "greyscale, palette or RGBA image; the file may be corrupt or truncated."
    ) from error


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(height, width)`` of an image file, reading only its header.

    Args:
        path: The image file.

    Returns:
        The size as ``(height, width)``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable image.

    Examples:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "x.png")
        >>> Image.new("RGB", (4, 3)).save(path)
        >>> read_image_size(path)
        (3, 4)
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            return int(height), int(width)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"read_image_size: image file '{path}' does not exist."
        ) from None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        # Fall back to a full decode (tifffile path, clear error message).
        return read_image(path).shape[:2]


def fit_to_size(
    image: np.ndarray, size: Sequence[int], pad_value: int = 0
) -> np.ndarray:
    """Centre-crop and/or pad an image to exactly ``size = (height, width)``.

    Each axis is handled independently: a longer axis is cropped around its
    centre, a shorter one is padded equally on both sides with the constant
    ``pad_value``. Nothing is resampled, so pixel scale (and hence cell size
    in microscopy images) is preserved.

    Args:
        image: Array of shape ``(H, W)`` or ``(H, W, C)``.
        size: Target ``(height, width)``.
        pad_value: Constant used for padding.

    Returns:
        An array of shape ``(height, width[, C])`` with the input's dtype
        (the input itself when it already has that size).

    Raises:
        ValueError: If ``size`` is not two positive integers.

    Examples:
        >>> import numpy as np
        >>> fit_to_size(np.ones((4, 6, 3), "uint8"), (6, 4)).shape
        (6, 4, 3)
        >>> fit_to_size(np.ones((1, 1), "uint8"), (3, 1), pad_value=9)[:, 0].tolist()
        [9, 1, 9]
    """
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(
            f"fit_to_size: size must be (height, width) with positive values, got {size}."
        )
    target_h, target_w = int(size[0]), int(size[1])
    height, width = image.shape[:2]
    if (height, width) == (target_h, target_w):
        return image
    top = max(0, (height - target_h) // 2)
    left = max(0, (width - target_w) // 2)
    image = image[top : top + target_h, left : left + target_w]
    pad_h, pad_w = target_h - image.shape[0], target_w - image.shape[1]
    if pad_h or pad_w:
        pads = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)]
        pads += [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pads, mode="constant", constant_values=pad_value)
    return image
