"""The one path from a source's bytes to a training or evaluation tensor, whatever the layout: decode, then timm's
transform (up to uint8 pixels, see `module`) under the sample's own seed."""

import multiprocessing
import warnings
from pathlib import Path

from torch.utils.data import Dataset

from .images import IMAGE_EXTENSIONS, DatasetError, UnreadableImageError, decode, is_image_file, load_rgb
from .seeding import seeded_randomness

NEIGHBOURS_TRIED = 20  # as timm's ImageDataset: past this many unreadable samples in a row, something else is wrong


class LabelledImages(Dataset):
    """(image, label) pairs of a source's split (a `readers.Reader`).

    With `skip_unreadable`, an unreadable sample is named once in a warning and the next readable one is returned in
    its place; `skipped` (shared with the loader's worker processes) counts them. `decoder`: bytes and name -> what
    the transform takes (`images.decode`: an RGB PIL image; `images.peek` leaves JPEGs to the device).
    """

    def __init__(self, reader, transform=None, skip_unreadable=False, decoder=decode):
        self.reader, self.transform, self.skip_unreadable, self.decoder = reader, transform, skip_unreadable, decoder
        # The platform's own start method, as the loader's workers use: on Linux (fork) the counter's semaphore is
        # unnamed, so no resource tracker races a job's signals over it at exit.
        self.skipped = multiprocessing.Value("i", 0) if skip_unreadable else None
        self._warned = set()

    def __len__(self):
        return len(self.reader)

    @property
    def blocks(self):
        """The reader's blocks (see `readers.Reader`), which the sampler keeps together."""
        return self.reader.blocks

    def _report(self, index, error):
        if index not in self._warned:
            self._warned.add(index)
            warnings.warn(f"skipping {error}", stacklevel=3)
        with self.skipped.get_lock():
            self.skipped.value += 1

    def __getitem__(self, index):
        """`index`, or (index, seed) from ResumableSampler: the seed makes the augmentation reproducible."""
        index, seed = index if isinstance(index, tuple) else (index, None)
        if not 0 <= index < len(self.reader):
            raise IndexError(f"sample {index} of {len(self.reader)}")
        for attempt in range(min(NEIGHBOURS_TRIED, len(self.reader))):
            sample = (index + attempt) % len(self.reader)
            try:
                image = self.decoder(self.reader.read(sample), self.reader.describe(sample))
                break
            except UnreadableImageError as error:
                if not self.skip_unreadable:
                    raise
                if attempt == 0:  # count the sample asked for, not the neighbours tried in its place
                    self._report(sample, error)
        else:
            raise DatasetError(f"{self.reader.source}: {NEIGHBOURS_TRIED} unreadable samples in a row from "
                               f"{self.reader.describe(index)}; expected readable images")
        label = self.reader.label(sample)
        if self.transform is None:
            return image, label
        if seed is None:
            return self.transform(image), label
        with seeded_randomness(seed):
            return self.transform(image), label


class UnlabelledImages(Dataset):
    """Image files under a folder (recursively), for prediction: (image, path) pairs."""

    def __init__(self, root, transform):
        self.paths = sorted(p for p in Path(root).rglob("*") if p.is_file() and is_image_file(p))
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        index = index[0] if isinstance(index, tuple) else index  # from ResumableSampler: (index, unused seed)
        return self.transform(load_rgb(self.paths[index])), str(self.paths[index])


def prediction_set(root, transform):
    """The images under `root` (`data.predict_root`), for `predict`."""
    if not root:
        raise DatasetError("data.predict_root is not set: expected a folder of images to predict "
                           "(--data.predict_root my_images/)")
    if not Path(root).expanduser().is_dir():
        raise DatasetError(f"data.predict_root {root}: no such folder; expected a folder of images to predict")
    images = UnlabelledImages(Path(root).expanduser(), transform)
    if not len(images):
        raise DatasetError(f"data.predict_root {root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return images
