"""One whole-slide image on disk, read lazily: regions decode only their tiles."""

import math
import os
import threading
from typing import NamedTuple

import numpy as np

# A strip or tile larger than this is decoded whole for any region that
# touches it; past it, a file is refused rather than read eagerly.
MAX_CHUNK_BYTES = 256 * 2**20
# The rows of a streamed view are read in stripes of at most this many bytes.
_STRIPE_BYTES = 64 * 2**20


class SlideError(ValueError):
    """A slide that cannot be read as asked; the message names the file."""


class SlideLevel(NamedTuple):
    """One level of a slide's pyramid."""

    shape: tuple
    """`(height, width, channels)` of the level."""
    downsample: float
    """Level-0 pixels per pixel of this level (the mean over both axes)."""


def _imports(path):
    try:
        import tifffile
        import zarr
    except ImportError as error:
        raise ImportError(
            f"Reading the slide {path} needs the [slides] extra: "
            "pip install 'keras-attention-sampling[slides]' (tifffile, zarr, "
            f"imagecodecs). {error}"
        ) from error
    return tifffile, zarr


def _reflect(index, size):
    # As the in-memory sampler mirrors (`sampling._reflect`): no edge repeat.
    index = np.abs(index)
    return (size - 1) - np.abs((size - 1) - index)


class Slide:
    """A pyramidal (Big)TIFF, SVS or OME-TIFF slide, read tile by tile.

    Open one with `open_slide`. Nothing is decoded when it opens: the file's
    structure is checked (every tile inside the file, 8-bit samples, a codec
    that imagecodecs can decode, tiles or strips small enough to read
    lazily) and each level is wrapped as a zarr array over the file's tiles
    (tifffile's `aszarr`), so `read_region` decodes only the tiles it touches
    and a view is made from the smallest level that is fine enough.

    Colour channels past the third (an alpha channel, mostly) are dropped:
    the model sees RGB as the in-memory path does; a single-channel slide
    keeps its one channel. Reads are thread-safe, so loader threads can share
    one `Slide`.

    Args:
        path: the file.
        series: index of the image series that holds the slide (0: the
            baseline of SVS and OME-TIFF files; their thumbnails, labels and
            macro images are other series).

    Attributes:
        path: the file, as given.
        shape: `(H, W, C)` at level 0, after dropping extra channels.
        levels: a `SlideLevel` per pyramid level, level 0 first.

    Examples:
        >>> import os, tempfile, numpy as np, tifffile
        >>> from keras_attention_sampling import slides
        >>> path = os.path.join(tempfile.mkdtemp(), "slide.tif")
        >>> pixels = np.arange(64 * 96 * 3, dtype="uint8").reshape(64, 96, 3)
        >>> tifffile.imwrite(path, pixels, tile=(32, 32), photometric="rgb")
        >>> with slides.open_slide(path) as slide:
        ...     region = slide.read_region((-2, 90), (4, 8))
        ...     slide.shape, region.shape, bool((region[2:, :6] == pixels[:2, 90:]).all())
        ((64, 96, 3), (4, 8, 3), True)
    """

    def __init__(self, path, series=0):
        self.path = os.fspath(path)
        tifffile, zarr = _imports(self.path)
        self._zarr = zarr
        if not os.path.exists(self.path):
            raise SlideError(f"{self.path}: no such file.")
        try:
            self._tiff = tifffile.TiffFile(self.path)
        except Exception as error:  # tifffile raises many kinds for bad files
            raise SlideError(
                f"{self.path}: not a readable TIFF slide ({type(error).__name__}: "
                f"{error})."
            ) from error
        try:
            self._open_series(series)
        except Exception:
            self._tiff.close()
            raise
        self._lock = threading.Lock()
        self._arrays = {}

    def _open_series(self, series):
        if not 0 <= series < len(self._tiff.series):
            raise SlideError(
                f"{self.path}: has {len(self._tiff.series)} image series, no "
                f"series {series}."
            )
        self._series = self._tiff.series[series]
        self._squeeze = []  # per level: index that makes (H, W, C)
        levels = []
        size = os.path.getsize(self.path)
        for number, level in enumerate(self._series.levels):
            axes, shape = level.axes, level.shape
            self._check_pages(level, number, size)
            index, level_shape = self._layout(axes, shape, number)
            self._squeeze.append(index)
            levels.append(level_shape)
        height, width = levels[0][:2]
        self.levels = [
            SlideLevel(shape, (height / shape[0] + width / shape[1]) / 2)
            for shape in levels
        ]
        self.shape = self.levels[0].shape

    def _layout(self, axes, shape, number):
        """The index that turns a level's array into `(H, W, C)` (RGB at most)."""
        where = f"{self.path}, level {number}"
        if "Y" not in axes or "X" not in axes:
            raise SlideError(f"{where}: axes {axes!r} have no Y and X.")
        channel_axis = next((a for a in "SC" if a in axes), None)
        index, kept = [], []
        for axis, length in zip(axes, shape):
            if axis in "YX":
                index.append(slice(None))
                kept.append(axis)
            elif axis == channel_axis:
                index.append(slice(0, min(length, 3)))  # alpha and beyond dropped
                kept.append("C")
            elif length == 1:
                index.append(0)
            else:
                raise SlideError(
                    f"{where}: axis {axis!r} has {length} entries; a slide has "
                    f"one plane (axes {axes!r}, shape {shape})."
                )
        channels = min(shape[axes.index(channel_axis)], 3) if channel_axis else 1
        order = [kept.index(a) for a in "YX"] + (
            [kept.index("C")] if channel_axis else []
        )
        height, width = shape[axes.index("Y")], shape[axes.index("X")]
        return (tuple(index), order, channel_axis is not None), (
            height,
            width,
            channels,
        )

    def _check_pages(self, level, number, file_size):
        where = f"{self.path}, level {number}"
        for page in level.pages:
            if page is None:
                continue
            page = page.keyframe if hasattr(page, "keyframe") else page
            if np.dtype(page.dtype) != np.uint8:
                raise SlideError(
                    f"{where}: samples are {page.dtype}; slides of 8-bit samples "
                    "(uint8) are supported."
                )
            chunk_bytes = math.prod(page.chunks) * np.dtype(page.dtype).itemsize
            if chunk_bytes > MAX_CHUNK_BYTES:
                kind = "tile" if page.is_tiled else "strip"
                raise SlideError(
                    f"{where}: one {kind} of {page.chunks} holds "
                    f"{chunk_bytes / 2**20:.0f} MiB, and any read decodes a whole "
                    f"{kind}; a file this large must be tiled to be read lazily "
                    "(e.g. tifffile.imwrite(..., tile=(256, 256)) or "
                    "`vips tiffsave --tile --pyramid`)."
                )
            ends = np.asarray(page.dataoffsets, "int64") + np.asarray(
                page.databytecounts, "int64"
            )
            if ends.size and int(ends.max()) > file_size:
                raise SlideError(
                    f"{where}: tiles end at byte {int(ends.max())} but the file "
                    f"has {file_size} bytes; it is truncated."
                )
            self._check_codec(page, where)

    def _check_codec(self, page, where):
        from tifffile import TIFF

        try:
            TIFF.DECOMPRESSORS[page.compression]
        except KeyError as error:
            raise SlideError(
                f"{where}: tiles are compressed with {page.compression!r}, which "
                "neither tifffile nor the installed imagecodecs can decode "
                "(pip install -U imagecodecs)."
            ) from error

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Closes the file; the slide cannot be read afterwards."""
        self._arrays.clear()
        self._tiff.close()

    def __repr__(self):
        return f"Slide({self.path!r}, shape={self.shape}, levels={len(self.levels)})"

    def _level_index(self, level):
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise SlideError(f"{self.path}: level must be an int, got {level!r}.")
        if not 0 <= level < len(self.levels):
            raise SlideError(
                f"{self.path}: has levels 0..{len(self.levels) - 1}, no level {level}."
            )
        return int(level)

    def _array(self, level):
        with self._lock:
            if level not in self._arrays:
                store = self._series.aszarr(level=level)
                self._arrays[level] = self._zarr.open(store, mode="r")
            return self._arrays[level]

    def _read(self, level, rows, cols):
        """The pixels of rows `[r0, r1)` and columns `[c0, c1)` of a level."""
        index, order, has_channels = self._squeeze[level]
        axes = self._series.levels[level].axes
        full = list(index)
        full[axes.index("Y")] = slice(*rows)
        full[axes.index("X")] = slice(*cols)
        array = self._array(level)
        try:
            pixels = np.asarray(array[tuple(full)])
        except Exception as error:
            raise SlideError(
                f"{self.path}, level {level}: decoding rows {rows} and columns "
                f"{cols} failed ({type(error).__name__}: {error}); the file may "
                "be corrupt."
            ) from error
        pixels = np.transpose(pixels, order)
        return pixels if has_channels else pixels[..., None]

    def read_region(self, corner, size, level=0, padding="reflect", fill_value=0):
        """The pixels of a region, padded where it leaves the slide.

        Args:
            corner: `(y, x)` of the region's top-left pixel, in the level's
                pixels; it may be negative or past the slide's edge.
            size: `(h, w)` of the region.
            level: pyramid level.
            padding: `"reflect"` (mirrored without repeating the edge pixel,
                as `PatchSampler` pads) or `"constant"` (`fill_value`).
            fill_value: the constant of `"constant"` padding.

        Returns:
            `uint8` numpy array `(h, w, C)`.
        """
        level = self._level_index(level)
        height, width, _ = self.levels[level].shape
        (y, x), (h, w) = (int(v) for v in corner), (int(v) for v in size)
        if h <= 0 or w <= 0:
            raise SlideError(f"{self.path}: region size must be positive, got {size}.")
        rows, cols = np.arange(y, y + h), np.arange(x, x + w)
        if padding == "reflect":
            if h > height or w > width:
                raise SlideError(
                    f"{self.path}, level {level}: a {h}x{w} region is larger than "
                    f"the level ({height}x{width}); it cannot be mirrored in."
                )
            rows, cols = _reflect(rows, height), _reflect(cols, width)
            inside_rows, inside_cols = rows, cols
        elif padding == "constant":
            inside_rows = rows[(rows >= 0) & (rows < height)]
            inside_cols = cols[(cols >= 0) & (cols < width)]
        else:
            raise SlideError(
                f"{self.path}: padding must be 'reflect' or 'constant', got "
                f"{padding!r}."
            )
        channels = self.levels[level].shape[2]
        if not inside_rows.size or not inside_cols.size:
            return np.full((h, w, channels), fill_value, np.uint8)
        r0, r1 = int(inside_rows.min()), int(inside_rows.max()) + 1
        c0, c1 = int(inside_cols.min()), int(inside_cols.max()) + 1
        pixels = self._read(level, (r0, r1), (c0, c1))
        if padding == "reflect":
            return pixels[np.ix_(rows - r0, cols - c0)]
        region = np.full((h, w, channels), fill_value, np.uint8)
        keep_r = (rows >= 0) & (rows < height)
        keep_c = (cols >= 0) & (cols < width)
        region[np.ix_(keep_r, keep_c)] = pixels
        return region

    def best_level(self, downsample):
        """The coarsest level at least as fine as `downsample`."""
        fine = [i for i, lv in enumerate(self.levels) if lv.downsample <= downsample]
        return max(fine, key=lambda i: self.levels[i].downsample) if fine else 0

    def view(self, downsample=None, shape=None):
        """A low-resolution view of the whole slide, area-averaged.

        Made from the coarsest pyramid level at least as fine as asked, read
        in stripes of rows, so a slide without a pyramid is streamed through
        level 0 and never held whole. The view spans the whole slide: its
        pixel `(i, j)` averages the level-0 area centred at
        `((i + 0.5) H / h, (j + 0.5) W / w)`, as a cell of the attention map
        is placed.

        Args:
            downsample: level-0 pixels per view pixel; the view is then
                `(H // downsample, W // downsample)`.
            shape: `(h, w)` of the view instead.

        Returns:
            `uint8` numpy array `(h, w, C)`.
        """
        from PIL import Image

        height, width, channels = self.shape
        if (downsample is None) == (shape is None):
            raise SlideError(f"{self.path}: view needs downsample or shape, not both.")
        if shape is None:
            shape = (height // int(downsample), width // int(downsample))
        out_h, out_w = (int(v) for v in shape)
        if out_h < 1 or out_w < 1:
            raise SlideError(
                f"{self.path}: a view of {shape} is empty (slide {height}x{width})."
            )
        level = self.best_level(min(height / out_h, width / out_w))
        level_h, level_w, _ = self.levels[level].shape
        scale_y = level_h / out_h
        stripe = max(1, int(_STRIPE_BYTES // (level_w * channels * max(scale_y, 1))))
        view = np.empty((out_h, out_w, channels), np.uint8)
        for start in range(0, out_h, stripe):
            stop = min(out_h, start + stripe)
            top, bottom = start * scale_y, stop * scale_y
            r0, r1 = int(math.floor(top)), min(level_h, int(math.ceil(bottom)))
            pixels = self._read(level, (r0, r1), (0, level_w))
            box = (0.0, top - r0, float(level_w), bottom - r0)
            planes = [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(
                        (out_w, stop - start), Image.Resampling.BOX, box=box
                    )
                )
                for c in range(channels)
            ]
            view[start:stop] = np.stack(planes, axis=-1)
        return view


class ArraySlide(Slide):
    """An image already in memory, read as a `Slide` is.

    Lets `SlideDataset` cut patches on the host for in-memory images too, so
    the training step receives only the view and the patches, never the
    full-resolution image.

    Args:
        pixels: `uint8` array `(H, W, C)` (or `(H, W)`); not copied.
        name: how errors name it.

    Examples:
        >>> import numpy as np
        >>> slide = ArraySlide(np.arange(24, dtype="uint8").reshape(2, 4, 3))
        >>> slide.shape, slide.read_region((0, 3), (1, 2))[0, :, 0].tolist()
        ((2, 4, 3), [9, 6])
    """

    def __init__(self, pixels, name="an in-memory image"):
        pixels = np.asarray(pixels)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.ndim != 3 or pixels.dtype != np.uint8:
            raise SlideError(
                f"{name}: an ArraySlide holds a uint8 (H, W, C) image, got "
                f"{pixels.dtype} of shape {pixels.shape}."
            )
        self.path = name
        self._pixels = pixels[..., :3]
        self.levels = [SlideLevel(self._pixels.shape, 1.0)]
        self.shape = self.levels[0].shape

    def _read(self, level, rows, cols):
        return self._pixels[slice(*rows), slice(*cols)]

    def close(self):
        pass

    def __repr__(self):
        return f"ArraySlide(shape={self.shape})"


def open_slide(path, series=0):
    """Opens a slide for lazy reading; see `Slide`.

    Args:
        path: a pyramidal (Big)TIFF, SVS, OME-TIFF or other TIFF-based file.
        series: the image series that holds the slide.

    Returns:
        A `Slide`, also a context manager that closes the file.

    Raises:
        SlideError: the file is missing, not a TIFF, truncated, not tiled and
            too large to read lazily, compressed with a codec that is not
            installed, or not of 8-bit samples. The message names the file.
    """
    return Slide(path, series=series)
