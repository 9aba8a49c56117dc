"""MNIST and Fashion-MNIST: find, download, verify and read the IDX files.

Both datasets are the same four IDX files (gzip-compressed or not; Kaggle's
copy of MNIST names them train-images.idx3-ubyte, and so on). Pixels are
returned as float32 of shape (N, 1, 28, 28) divided by 256, as Lasagne's
``examples/mnist.py`` does, so values lie in [0, 255/256]. The split is that
example's: the last 10,000 training images are the validation set, the 10,000
t10k images the test set.

Where the files come from, first match wins: ``--data-dir`` (or the
``data_dir`` argument), else ``$CONVAE_DATA_DIR/<dataset>`` if that directory
exists, else for Fashion-MNIST Debian's ``dataset-fashion-mnist`` package if
installed, else ``$CONVAE_DATA_DIR/<dataset>`` (when set) or the per-user
cache ``$XDG_CACHE_HOME/convae/<dataset>`` (``~/.cache/convae/<dataset>``).
Missing files are downloaded into the chosen directory from a list of public
mirrors. Every file is checked against its known SHA-256 before it is used:
either the gzip file's own hash, or the hash of its decompressed content (so a
recompressed copy of the official data is accepted). A download is written to
a temporary name and renamed only once verified.
"""
import functools
import glob
import gzip
import hashlib
import os
import sys
import urllib.error
import urllib.request
import zlib
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from convae.files import (dead_link, make_directories, plain_file_mode, remove_abandoned,
                          remove_empty, temporary_file)

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# A download in progress: ".<file>.<random>.part", beside where the file goes.
PART = ".part"

# name -> (SHA-256 of the official .gz file or None, SHA-256 of its content)
DATASETS = {
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "debian_dir": None,
        "classes": tuple("0123456789"),  # what each label 0-9 stands for
        "sha256": {
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        },
    },
    "fashion": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "debian_dir": "/usr/share/datasets/fashion-mnist",
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                    "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "sha256": {
            "train-images-idx3-ubyte.gz": (
                None,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            "train-labels-idx1-ubyte.gz": (
                None,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            "t10k-images-idx3-ubyte.gz": (
                None,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            "t10k-labels-idx1-ubyte.gz": (
                None,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
    },
}

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
VALIDATION_SIZE = 10000


class DataError(Exception):
    """A data file is missing, corrupt or inconsistent; the message is one line."""


def _read_bytes(path):
    """The (decompressed) content of path; DataError if it cannot be read."""
    try:
        stat = os.stat(path)
        return _read_bytes_of(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError("{}: unreadable or truncated ({})".format(path, e))


@functools.lru_cache(maxsize=1)
def _read_bytes_of(path, size, mtime_ns, inode):
    # The last file read, kept while the same file is read again: checking a
    # recompressed file's content and then parsing it decompress it once.
    # Gunzipped in one call (checking its CRC and length as a GzipFile
    # would): MNIST's training images in 0.25 s instead of the 0.37 that
    # reading a GzipFile took in 1,400 chunks.
    with open(path, "rb") as f:
        content = f.read()
    return gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content


def read_idx(path):
    """Read an IDX image or label file (gzip or raw) into a uint8 array.

    Returns shape (N, 28, 28) for images and (N,) for labels. Raises DataError
    for a bad magic number, wrong dimensions or a truncated file.
    """
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError("{}: truncated (only {} bytes)".format(path, len(data)))
    magic, count = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
    if magic == IMAGE_MAGIC:
        if len(data) < 16:
            raise DataError("{}: truncated image header".format(path))
        rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        if (rows, cols) != (28, 28):
            raise DataError("{}: wrong dimensions {}x{}, expected 28x28".format(
                path, rows, cols))
        header, shape = 16, (count, rows, cols)
    elif magic == LABEL_MAGIC:
        header, shape = 8, (count,)
    else:
        raise DataError("{}: bad magic number {:#010x}, expected {:#010x} "
                        "(images) or {:#010x} (labels)".format(
                            path, magic, IMAGE_MAGIC, LABEL_MAGIC))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError("{}: truncated or padded: {} bytes, header says {}".format(
            path, len(data), expected))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def sha256_ok(path, dataset, name):
    """True if the file's SHA-256, or that of its decompressed content, is the known one."""
    gz_hash, raw_hash = DATASETS[dataset]["sha256"][name]
    with open(path, "rb") as f:
        if gz_hash is not None and hashlib.sha256(f.read()).hexdigest() == gz_hash:
            return True
    try:
        return hashlib.sha256(_read_bytes(path)).hexdigest() == raw_hash
    except DataError:
        return False


def _data_root():
    """$CONVAE_DATA_DIR, with a leading ~ expanded ("~/data" in quotes: the
    shell left the ~), or None where it is unset or empty."""
    root = os.environ.get("CONVAE_DATA_DIR")
    return os.path.expanduser(root) if root else None


def default_data_dir(dataset):
    """The directory convae reads ``dataset`` from when none is given (see the
    module docstring): ``$CONVAE_DATA_DIR/<dataset>`` where it exists, else
    Debian's package where it is installed whole, else where missing files
    are to be downloaded: ``$CONVAE_DATA_DIR/<dataset>`` or the cache."""
    root = _data_root()
    chosen = os.path.join(root, dataset) if root else None
    if chosen and os.path.isdir(chosen):
        return chosen
    debian = DATASETS[dataset]["debian_dir"]
    if debian and all(_locate(debian, name) for name in FILES):
        return debian
    if chosen:
        return chosen
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # unset, empty or relative: the XDG spec says ignore it
        cache = os.path.expanduser("~/.cache")
    return os.path.join(cache, "convae", dataset)


def _locate(directory, name):
    """Path of ``name`` in ``directory``, compressed or not, or None. Uncompressed,
    the name Kaggle's copy of MNIST gives it is taken too (train-images.idx3-ubyte:
    a dot for the hyphen); the checksum says whether it is the file."""
    raw = name[:-len(".gz")]
    for candidate in (name, raw, raw.replace("-idx", ".idx")):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _absence(directory, name):
    """How ``directory`` lacks ``name``, for a message: 'has no NAME', or for a
    link leading nowhere (the files it linked to moved away; setup links
    ../shared/data/mnist into the cache) 'has NAME only as a symbolic link to
    TARGET, which does not exist'."""
    link = dead_link(os.path.join(directory, name))
    return "has {} only as {}".format(name, link) if link else "has no " + name


class _CannotWrite(Exception):
    """Writing a download failed (a full disk, say): no other mirror would help."""


def _write_all(out, chunk):
    """Write all of ``chunk`` to the unbuffered file ``out``; _CannotWrite if the
    disk refuses (a full one takes part of a write, then fails the next)."""
    view = memoryview(chunk)
    try:
        while view:
            view = view[out.write(view):]
    except OSError as e:
        raise _CannotWrite(e.strerror or e)


def download(dataset, name, directory, mirrors=None, timeout=60):
    """Fetch ``name`` into ``directory``, trying each mirror until one verifies.

    The file is streamed to a temporary name in ``directory``, checked against
    its SHA-256 and only then renamed into place. Returns the final path;
    raises DataError naming every mirror's failure if none succeeds, or at
    once naming the directory if the file cannot be written there.
    """
    try:
        made = make_directories(directory)
    except OSError as e:
        raise DataError("cannot make the data directory {} for {} ({})".format(
            directory, name, e.strerror or e))
    failures = []
    try:
        # The part a download killed mid-file left (one at work holds its lock).
        remove_abandoned(glob.escape(os.path.join(directory, "." + name + ".")) + "*" + PART)
        for mirror in mirrors or DATASETS[dataset]["mirrors"]:
            url = mirror + name
            try:
                fd, tmp, held = temporary_file(directory, "." + name + ".", PART)
            except OSError as e:  # a directory the user may read but not write
                raise DataError("{} {}, and it cannot be downloaded there ({})".format(
                    directory, _absence(directory, name), e.strerror or e))
            try:
                os.chmod(tmp, plain_file_mode())  # as any file the user downloads, not 0600
                # Unbuffered: closing it writes nothing, so cannot fail as the disk fills.
                with os.fdopen(fd, "wb", buffering=0) as out, \
                        urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    size = 0
                    # A progress bar on a terminal (quiet otherwise, and where
                    # standard error is closed), gone when done.
                    with tqdm(total=int(length) if length else None, desc=name, unit="B",
                              unit_scale=True, leave=False,
                              disable=None if sys.stderr is not None else True) as bar:
                        for chunk in iter(lambda: response.read(1 << 20), b""):
                            _write_all(out, chunk)
                            size += len(chunk)
                            bar.update(len(chunk))
                if length is not None and size != int(length):
                    raise DataError("got {} of {} bytes".format(size, length))
                if not sha256_ok(tmp, dataset, name):
                    raise DataError("checksum mismatch")
                final = os.path.join(directory, name)
                os.replace(tmp, final)
                return final
            except _CannotWrite as e:
                raise DataError("cannot download {} into {}: {}".format(
                    name, directory, e)) from None
            except (OSError, urllib.error.URLError, DataError, ValueError) as e:
                failures.append("{}: {}".format(url, e))
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
                os.close(held)
    finally:
        remove_empty(made)  # no empty data directory left behind by a failed download
    raise DataError("{} {}, and it could not be downloaded (offline, point "
                    "--data-dir or CONVAE_DATA_DIR at the files): {}".format(
                        directory, _absence(directory, name), "; ".join(failures)))


def dataset_files(dataset="mnist", data_dir=None, fetch=True, names=FILES):
    """Paths of the verified files ``names`` of ``dataset``, downloading missing ones.

    Returns a dict name -> path (keys as in ``FILES``). Raises DataError.
    """
    if dataset not in DATASETS:
        raise DataError("unknown dataset {!r}; choose from {}".format(
            dataset, ", ".join(sorted(DATASETS))))
    data_dir = data_dir and os.path.expanduser(data_dir)  # "~/mnist", as --data-dir takes it
    directory = data_dir or default_data_dir(dataset)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DataError("{}: not a directory (the data directory must be one)".format(
            directory))
    link = dead_link(directory)
    if link:
        raise DataError("{}: {} (the data directory must be one)".format(directory, link))
    paths, root = {}, _data_root()
    for name in names:
        path = _locate(directory, name)
        if path is None and data_dir and _locate(os.path.join(data_dir, dataset), name):
            # The directory CONVAE_DATA_DIR names, given as the data directory.
            raise DataError("{} has no {}, but {} has: the data directory is the one that "
                            "holds the files".format(directory, name,
                                                     os.path.join(data_dir, dataset)))
        if path is None and not data_dir and root and _locate(root, name):
            # CONVAE_DATA_DIR set to the directory of the files themselves.
            raise DataError("CONVAE_DATA_DIR={0} holds {1}, but is read as the directory "
                            "above one per dataset (looked in {2}): set it to the directory "
                            "above, or give --data-dir {0}".format(
                                os.environ["CONVAE_DATA_DIR"], name,
                                os.path.join(root, dataset)))
        if path is None:
            if not fetch:
                raise DataError("{} {}".format(directory, _absence(directory, name)))
            path = download(dataset, name, directory)
        elif not sha256_ok(path, dataset, name):
            # The other dataset's file of the same name (a directory mixed up)?
            other = next((o for o in DATASETS if o != dataset and sha256_ok(path, o, name)),
                         None)
            raise DataError("{}: checksum mismatch: not the official {} file{}".format(
                path, dataset, "" if other is None else
                ": it is {}'s (give --dataset {}, or the directory of {}'s files)".format(
                    other, other, dataset)))
        paths[name] = path
    return paths


def _images_and_labels(paths, images, labels):
    x, y = read_idx(paths[images]), read_idx(paths[labels])
    if x.ndim != 3 or y.ndim != 1:
        raise DataError("{} and {} are not an image file and a label file".format(
            paths[images], paths[labels]))
    if len(x) != len(y):
        raise DataError("{} has {} images but {} has {} labels".format(
            paths[images], len(x), paths[labels], len(y)))
    # Straight to float32: a float32 temporary and a copy of it would touch
    # twice the memory (188 MB more for MNIST's training set).
    return np.divide(x[:, None, :, :], np.float32(256), dtype=np.float32), y


def load_test_set(dataset="mnist", data_dir=None, fetch=True):
    """The test set alone, as ``load_dataset`` gives it: X_test, y_test.

    Only the two t10k files are looked for (and downloaded if missing).
    """
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return _images_and_labels(dataset_files(dataset, data_dir, fetch, names), *names)


class LabelledImages(NamedTuple):
    """A dataset's test images (N, 1, 28, 28), their labels (N,), and the
    names of labels 0-9."""
    images: np.ndarray
    labels: np.ndarray
    classes: tuple


def labelled_test_set(dataset="mnist", data_dir=None):
    """``dataset``'s test set with its class names, as LabelledImages (the
    test set as ``load_test_set`` finds it)."""
    return LabelledImages(*load_test_set(dataset, data_dir), DATASETS[dataset]["classes"])


def load_dataset(dataset="mnist", data_dir=None, fetch=True):
    """Load ``dataset`` as Lasagne's MNIST example does.

    Returns X_train, y_train, X_val, y_val, X_test, y_test: images float32
    (N, 1, 28, 28) in [0, 1), labels uint8 (N,). 50,000 / 10,000 / 10,000.
    """
    paths = dataset_files(dataset, data_dir, fetch)
    X_train, y_train = _images_and_labels(
        paths, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    X_test, y_test = _images_and_labels(
        paths, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    X_train, X_val = X_train[:-VALIDATION_SIZE], X_train[-VALIDATION_SIZE:]
    y_train, y_val = y_train[:-VALIDATION_SIZE], y_train[-VALIDATION_SIZE:]
    return X_train, y_train, X_val, y_val, X_test, y_test
