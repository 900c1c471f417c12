"""What every source gives the data module: a split as a random-access list of (image bytes, label)."""

import os
from pathlib import Path

from ..images import DatasetError, UnreadableImageError


def cache_folder():
    """Where the package keeps what it can make again: the demo dataset, shard indexes."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "inception_next"


class Reader:
    """One split of one source. Labels index the dataset's classes in sorted-wnid order, whatever the source.

    `blocks`: None, or the sizes of consecutive index ranges that are cheap to read together and dear to read apart
    (a parquet row group), so that the sampler shuffles within windows of blocks rather than globally.
    """

    source = ""  # the split's folder or files, for messages
    blocks = None

    def __len__(self):
        raise NotImplementedError

    def label(self, index):
        raise NotImplementedError

    def read(self, index):
        """The sample's encoded image; UnreadableImageError naming it when it cannot be read."""
        raise NotImplementedError

    def describe(self, index):
        """Where the sample lives, for messages: a path, or a shard and key."""
        raise NotImplementedError

    def filename(self, index):
        """The sample's own file name (as ImageNet named it), for `prepare`."""
        raise NotImplementedError

    def check_readable(self):
        """Called before validation: sources whose samples are separate files open each one's header here (shards
        were checked whole when indexed)."""


def read_error(name, error):
    return UnreadableImageError(f"{name}: unreadable image ({getattr(error, 'strerror', None) or error})")


def label_outside(source, label, classes):
    """A label (an index or a class name) that is not one of the classes."""
    expected = f"0..{len(classes) - 1}" if isinstance(label, int) else f"{classes[0]} ... {classes[-1]}"
    return DatasetError(f"{source}: label {label} is outside the {len(classes)} classes; expected {expected} "
                        "(data.classes names your own dataset's classes in label order)")


class Relabel:
    """A shard's integer labels (indices into the source's class `names`) as indices into `classes`: by name when
    every class is one the source names (ImageNet's wnids, a subset of them, a checkpoint's order), as they are
    otherwise (your own dataset, its classes given as data.classes)."""

    def __init__(self, names, classes):
        self.names, self.classes = names, classes
        if set(classes) <= set(names):
            index = {name: position for position, name in enumerate(classes)}
            self.mapping = [index.get(name) for name in names]
        else:
            self.mapping = list(range(len(classes)))

    def __call__(self, label, source):
        """`label` as an index into the classes; one line naming `source` if it is none of them."""
        known = isinstance(label, int) and 0 <= label < len(self.mapping)
        if not known or self.mapping[label] is None:
            named = isinstance(label, int) and 0 <= label < len(self.names)
            raise label_outside(source, f"{label} ({self.names[label]})" if named else label, self.classes)
        return self.mapping[label]
