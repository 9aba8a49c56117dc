"""Reading, verifying and downloading the IDX files, on the real MNIST files."""
import glob
import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from convae import data, files

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_load_dataset_real_mnist(mnist_dir):
    X_train, y_train, X_val, y_val, X_test, y_test = data.load_dataset(
        "mnist", mnist_dir, fetch=False)
    assert X_train.shape == (50000, 1, 28, 28) and X_train.dtype == np.float32
    assert X_val.shape == (10000, 1, 28, 28) and X_test.shape == (10000, 1, 28, 28)
    assert y_train.shape == (50000,) and y_val.shape == y_test.shape == (10000,)
    # Scaled as Lasagne's example: raw bytes / 256.
    raw = gzip.open(os.path.join(mnist_dir, TRAIN_IMAGES)).read()
    first = np.frombuffer(raw, np.uint8, count=784, offset=16).reshape(28, 28)
    np.testing.assert_array_equal(X_train[0, 0], first / np.float32(256))
    assert X_train.max() == np.float32(255 / 256) and X_train.min() == 0
    # The well-known first labels of the training and test sets.
    assert list(y_train[:5]) == [5, 0, 4, 1, 9]
    assert list(y_test[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892,
                                            958, 1028, 974, 1009]


def test_recompressed_file_is_accepted_by_its_content(mnist_dir):
    path = os.path.join(mnist_dir, TRAIN_IMAGES)
    gz_hash, _ = data.DATASETS["mnist"]["sha256"][TRAIN_IMAGES]
    assert sha256_file(path) != gz_hash  # the shared copy was recompressed
    assert data.sha256_ok(path, "mnist", TRAIN_IMAGES)


def test_uncompressed_files_are_read_too(mnist_dir, tmp_path):
    for name in data.FILES:
        with gzip.open(os.path.join(mnist_dir, name)) as src:
            (tmp_path / name[:-3]).write_bytes(src.read())
    paths = data.dataset_files("mnist", str(tmp_path), fetch=False)
    assert all(not p.endswith(".gz") for p in paths.values())
    labels = data.read_idx(paths[TEST_LABELS])
    assert labels.shape == (10000,)


def test_kaggle_s_names_for_the_files_are_read_too(mnist_dir, tmp_path):
    """Kaggle's copy of MNIST, a common one, names its uncompressed files
    train-images.idx3-ubyte: --data-dir at them said the files were missing."""
    for name in data.FILES:
        with gzip.open(os.path.join(mnist_dir, name)) as src:
            (tmp_path / name[:-3].replace("-idx", ".idx")).write_bytes(src.read())
    X_train, _, _, _, X_test, _ = data.load_dataset("mnist", str(tmp_path), fetch=False)
    expected = data.load_dataset("mnist", mnist_dir, fetch=False)
    np.testing.assert_array_equal(X_train, expected[0])
    np.testing.assert_array_equal(X_test, expected[4])
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(b"\0" * 10008)  # checked all the same
    with pytest.raises(data.DataError, match="t10k-labels.idx1-ubyte: checksum mismatch"):
        data.load_dataset("mnist", str(tmp_path), fetch=False)


def write_idx(path, magic, dims, payload, compress=True):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + payload)


@pytest.mark.parametrize("magic,dims,payload,message", [
    (1234, (3,), bytes(3), "bad magic number"),
    (2051, (2, 27, 28), bytes(2 * 27 * 28), "wrong dimensions"),
    (2051, (2, 28, 28), bytes(100), "truncated"),
    (2049, (5,), bytes(3), "truncated"),
])
def test_bad_files_get_one_line_errors(tmp_path, magic, dims, payload, message):
    path = tmp_path / "bad.gz"
    write_idx(path, magic, dims, payload)
    with pytest.raises(data.DataError, match=message) as error:
        data.read_idx(str(path))
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_truncated_gzip_is_an_error(tmp_path, mnist_dir):
    blob = open(os.path.join(mnist_dir, TEST_LABELS), "rb").read()
    path = tmp_path / TEST_LABELS
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(str(path))


def test_checksum_mismatch_and_length_mismatch(tmp_path, mnist_dir):
    for name in data.FILES:
        shutil.copy(os.path.join(mnist_dir, name), tmp_path / name)
    write_idx(tmp_path / TEST_LABELS, 2049, (10000,), bytes(10000))
    with pytest.raises(data.DataError, match="checksum mismatch"):
        data.dataset_files("mnist", str(tmp_path), fetch=False)
    with pytest.raises(data.DataError, match="nowhere has no train-images-idx3-ubyte.gz$"):
        data.dataset_files("mnist", str(tmp_path / "nowhere"), fetch=False)
    paths = {name: str(tmp_path / name) for name in data.FILES}
    write_idx(tmp_path / "short.gz", 2049, (9999,), bytes(9999))
    paths[TEST_LABELS] = str(tmp_path / "short.gz")
    with pytest.raises(data.DataError, match="10000 images but .* 9999 labels"):
        data._images_and_labels(paths, TEST_IMAGES, TEST_LABELS)


class Mirror(http.server.BaseHTTPRequestHandler):
    """Serves files per path prefix: /good/, /corrupt/, /drop/, /403/, /404/,
    /stall/ (half the file, then nothing until ``stall`` is set)."""

    files = {}
    stall = threading.Event()

    def do_GET(self):
        kind, name = self.path.strip("/").split("/", 1)
        if kind in ("403", "404"):
            self.send_error(int(kind))
            return
        body = self.files[name]
        if kind == "corrupt":
            body = body[:100] + bytes(len(body) - 100)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "stall":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.stall.wait(60)
            return
        if kind == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(mnist_dir):
    Mirror.files = {name: open(os.path.join(mnist_dir, name), "rb").read()
                    for name in data.FILES}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:{}/".format(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_download_good_file(mirror, tmp_path):
    path = data.download("mnist", TEST_LABELS, str(tmp_path), [mirror + "good/"])
    assert path == str(tmp_path / TEST_LABELS)
    assert data.read_idx(path)[:3].tolist() == [7, 2, 1]
    assert os.listdir(tmp_path) == [TEST_LABELS]


def test_a_download_with_standard_error_closed(mirror, tmp_path, monkeypatch):
    """2>&- leaves Python no sys.stderr: the progress bar wrote to None
    ("'NoneType' object has no attribute 'write'") and the download failed."""
    monkeypatch.setattr(sys, "stderr", None)
    path = data.download("mnist", TEST_LABELS, str(tmp_path), [mirror + "good/"])
    assert data.read_idx(path)[:3].tolist() == [7, 2, 1]
    # Readable as any file the user writes (0666 less the umask), not 0600.
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("bad", ["corrupt", "drop", "403", "404"])
def test_bad_mirror_alone_leaves_nothing(mirror, tmp_path, bad):
    with pytest.raises(data.DataError) as error:
        data.download("mnist", TEST_LABELS, str(tmp_path), [mirror + bad + "/"])
    assert str(error.value).startswith(
        "{} has no {}, and it could not be downloaded (offline, point --data-dir or "
        "CONVAE_DATA_DIR at the files): {}{}/{}: ".format(tmp_path, TEST_LABELS, mirror, bad,
                                                          TEST_LABELS))
    assert "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_a_failed_download_leaves_no_directory_it_made(mirror, tmp_path):
    directory = tmp_path / "data" / "mnist"
    with pytest.raises(data.DataError, match="could not be downloaded"):
        data.download("mnist", TEST_LABELS, str(directory), [mirror + "404/"])
    assert os.listdir(tmp_path) == []


# A download under a limit on file size (RLIMIT_FSIZE, as a full disk would
# fail it), in a process of its own: the limit holds for every file a
# process writes, pytest's report among them.
FULL_DISK_DOWNLOAD = """
import resource, signal, sys
from convae import data
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
try:
    data.download("mnist", sys.argv[1], sys.argv[2], sys.argv[3:])
except data.DataError as e:
    print(e)
"""


def test_a_download_that_cannot_be_written_stops_at_the_first_mirror(mirror, tmp_path):
    directory = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", FULL_DISK_DOWNLOAD, TEST_LABELS,
                           str(directory)] + [mirror + "good/"] * 2,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cannot download {} into {}: File too large\n".format(
        TEST_LABELS, directory)
    assert os.listdir(tmp_path) == []


def test_a_data_directory_that_cannot_be_written_is_one_line_naming_it(mirror):
    """A directory the user may read but not write (sysfs refuses even root)."""
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("no sysfs here")
    with pytest.raises(data.DataError) as error:
        data.download("mnist", TEST_LABELS, "/sys/kernel", [mirror + "good/"])
    assert str(error.value) == ("/sys/kernel has no {}, and it cannot be downloaded there "
                                "(Permission denied)".format(TEST_LABELS))


def test_the_directory_above_the_files_is_named_with_the_one_that_holds_them(mnist_dir,
                                                                            tmp_path):
    """--data-dir ../shared/data where the files are in ../shared/data/mnist (what
    CONVAE_DATA_DIR names): said, not a download of them into the wrong place."""
    (tmp_path / "mnist").mkdir()
    for name in data.FILES:
        os.symlink(os.path.join(mnist_dir, name), tmp_path / "mnist" / name)
    with pytest.raises(data.DataError) as error:
        data.dataset_files("mnist", str(tmp_path))
    assert str(error.value) == ("{} has no {}, but {} has: the data directory is the one "
                                "that holds the files".format(tmp_path, data.FILES[0],
                                                              tmp_path / "mnist"))
    assert sorted(os.listdir(tmp_path)) == ["mnist"]


def test_a_convae_data_dir_that_holds_the_files_themselves_is_said(mnist_dir, tmp_path,
                                                                   monkeypatch):
    """CONVAE_DATA_DIR=../shared/data/mnist, one level too deep: said, not an
    attempt to download the files into ../shared/data/mnist/mnist."""
    for name in data.FILES:
        os.symlink(os.path.join(mnist_dir, name), tmp_path / name)
    monkeypatch.setenv("CONVAE_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", ("http://127.0.0.1:9/",))
    with pytest.raises(data.DataError) as error:
        data.dataset_files("mnist")
    assert str(error.value) == (
        "CONVAE_DATA_DIR={0} holds {1}, but is read as the directory above one per "
        "dataset (looked in {0}/mnist): set it to the directory above, or give "
        "--data-dir {0}".format(tmp_path, data.FILES[0]))
    assert sorted(os.listdir(tmp_path)) == sorted(data.FILES)
    assert data.dataset_files("mnist", str(tmp_path))  # as the message says
    monkeypatch.setenv("CONVAE_DATA_DIR", os.path.dirname(str(tmp_path)))
    with pytest.raises(data.DataError, match="could not be downloaded"):
        data.dataset_files("mnist")  # a directory above with no mnist/: not this message


def test_the_other_dataset_s_files_are_named_as_such(mnist_dir):
    """MNIST's directory given for Fashion-MNIST (the two share file names):
    the mismatch says whose files they are."""
    with pytest.raises(data.DataError) as error:
        data.dataset_files("fashion", mnist_dir, fetch=False)
    assert str(error.value) == (
        "{}: checksum mismatch: not the official fashion file: it is mnist's (give "
        "--dataset mnist, or the directory of fashion's files)".format(
            os.path.join(mnist_dir, data.FILES[0])))


def test_bad_mirrors_then_a_good_one(mirror, tmp_path):
    mirrors = [mirror + kind + "/" for kind in ("403", "404", "drop", "corrupt", "good")]
    path = data.download("mnist", TEST_LABELS, str(tmp_path), mirrors)
    assert data.sha256_ok(path, "mnist", TEST_LABELS)
    assert os.listdir(tmp_path) == [TEST_LABELS]


def test_missing_files_are_downloaded_into_the_cache(mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", (mirror + "404/", mirror + "good/"))
    monkeypatch.setenv("CONVAE_DATA_DIR", str(tmp_path))
    paths = data.dataset_files("mnist")
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(data.FILES)
    assert paths[TEST_LABELS] == str(tmp_path / "mnist" / TEST_LABELS)


def test_the_test_set_alone_fetches_only_the_test_files(mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", (mirror + "good/",))
    X_test, y_test = data.load_test_set("mnist", str(tmp_path))
    assert X_test.shape == (10000, 1, 28, 28) and y_test[:3].tolist() == [7, 2, 1]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])


def test_a_data_directory_that_is_not_one_is_named(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(data.DataError, match="file: not a directory"):
        data.dataset_files("mnist", str(tmp_path / "file"))
    with pytest.raises(data.DataError, match=r"cannot make the data directory .*file/mnist "
                       r"for train-images-idx3-ubyte.gz \(Not a directory\)"):
        data.dataset_files("mnist", str(tmp_path / "file" / "mnist"))
    # A link leading nowhere, as `ls` shows it, was 'cannot make ... (File exists)'.
    os.symlink(str(tmp_path / "moved"), tmp_path / "link")
    with pytest.raises(data.DataError) as error:
        data.dataset_files("mnist", str(tmp_path / "link"))
    assert str(error.value) == ("{}: a symbolic link to {}, which does not exist (the data "
                                "directory must be one)".format(tmp_path / "link",
                                                                tmp_path / "moved"))
    # A loop of links was 'a link to loop, which does not exist': loop exists.
    os.symlink("link2", tmp_path / "loop")
    os.symlink("loop", tmp_path / "link2")
    with pytest.raises(data.DataError) as error:
        data.dataset_files("mnist", str(tmp_path / "loop"))
    assert str(error.value) == ("{}: a loop of symbolic links (the data directory must be "
                                "one)".format(tmp_path / "loop"))


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CONVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_data_dir("mnist") == str(tmp_path / "convae" / "mnist")
    # A relative XDG_CACHE_HOME is to be ignored (XDG Base Directory spec), not
    # taken relative to wherever the command runs.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for ignored in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert data.default_data_dir("mnist") == str(tmp_path / "home" / ".cache" / "convae"
                                                     / "mnist")


def test_convae_data_dir_without_the_dataset_leaves_it_to_debian_s_package(
        monkeypatch, tmp_path):
    """CONVAE_DATA_DIR set for MNIST (data/mnist only), --dataset fashion: the
    installed Debian package, not a download into data/fashion."""
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in data.FILES:
        (debian / name).write_bytes(b"")
    monkeypatch.setitem(data.DATASETS["fashion"], "debian_dir", str(debian))
    monkeypatch.setenv("CONVAE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    assert data.default_data_dir("mnist") == str(tmp_path / "data" / "mnist")
    assert data.default_data_dir("fashion") == str(debian)
    # A data/fashion of the user's own comes first, whatever it holds yet.
    (tmp_path / "data" / "fashion").mkdir()
    assert data.default_data_dir("fashion") == str(tmp_path / "data" / "fashion")
    # Without the package, data/fashion is where the download goes.
    os.rmdir(tmp_path / "data" / "fashion")
    os.remove(debian / data.FILES[0])
    assert data.default_data_dir("fashion") == str(tmp_path / "data" / "fashion")


def test_a_tilde_in_convae_data_dir_means_the_home_directory(monkeypatch, tmp_path):
    """export CONVAE_DATA_DIR="~/data", quoted, leaves the ~ to convae."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CONVAE_DATA_DIR", "~/data")
    assert data.default_data_dir("mnist") == str(tmp_path / "data" / "mnist")


def test_fashion_mnist_from_debian_package():
    directory = data.DATASETS["fashion"]["debian_dir"]
    if not os.path.isdir(directory):
        if os.environ.get("CI"):
            pytest.fail("Debian's dataset-fashion-mnist is not installed at " + directory)
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    X_train, y_train, X_val, y_val, X_test, y_test = data.load_dataset(
        "fashion", directory, fetch=False)
    assert X_train.shape == (50000, 1, 28, 28) and X_test.shape == (10000, 1, 28, 28)
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_a_download_killed_where_it_stood_is_cleared_by_the_next(mirror, tmp_path, aged):
    """SIGKILL (or a power cut) mid-download leaves its hidden .part file; the
    next download of that file into the directory removes it. It keeps the
    .part of a download still at work (it holds a lock on its file; a fresh
    one, not held yet for a few microseconds, is kept too) and another file's."""
    def part(name, tag, content):
        path = tmp_path / ".{}.{}.part".format(name, tag)
        path.write_bytes(content)
        return path
    abandoned = part(TEST_LABELS, "x1y2z3", b"half a file")
    at_work = part(TEST_LABELS, "a1b2c3", b"a third of a file")
    other = part(TEST_IMAGES, "d4e5f6", b"another file's part")
    for path in (abandoned, at_work, other):
        aged(path)
    fresh = part(TEST_LABELS, "g7h8i9", b"just made")
    held = files.lock(str(at_work))  # as the running download holds it
    try:
        data.download("mnist", TEST_LABELS, str(tmp_path), [mirror + "good/"])
    finally:
        os.close(held)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [TEST_LABELS, at_work.name, other.name, fresh.name])


def test_a_killed_download_s_part_file_is_the_one_the_next_clears(mirror, tmp_path, aged):
    """The same, for real: a download at work keeps its file, even untouched
    for long, while another downloads the same file there; killed with
    SIGKILL mid-file, it leaves it to the next."""
    script = ("import sys; from convae import data\n"
              "data.download('mnist', {!r}, {!r}, [sys.argv[1]])\n").format(TEST_IMAGES,
                                                                          str(tmp_path))
    Mirror.stall.clear()
    child = subprocess.Popen([sys.executable, "-c", script, mirror + "stall/"])
    try:
        deadline = time.time() + 120
        while not glob.glob(str(tmp_path / ".*.part")) and time.time() < deadline:
            time.sleep(0.05)
        [part] = glob.glob(str(tmp_path / ".*.part"))
        aged(part)
        data.download("mnist", TEST_IMAGES, str(tmp_path), [mirror + "good/"])
        assert os.path.exists(part)  # held: at work
        child.kill()
        child.wait(timeout=60)
    finally:
        Mirror.stall.set()
    aged(part)
    data.download("mnist", TEST_IMAGES, str(tmp_path), [mirror + "good/"])
    assert os.listdir(tmp_path) == [TEST_IMAGES]


def test_a_link_leading_nowhere_is_named_as_such(mirror, tmp_path):
    """Setup links ../shared/data/mnist into the cache; once those files have
    moved away, the cache holds links leading nowhere. `ls` shows the file,
    so 'has no t10k-labels-idx1-ubyte.gz' would puzzle: the message says what
    the link leads to. A download that works puts the file in the link's place."""
    gone = str(tmp_path / "moved" / TEST_LABELS)
    os.symlink(gone, tmp_path / TEST_LABELS)
    said = "{} has {} only as a symbolic link to {}, which does not exist".format(
        tmp_path, TEST_LABELS, gone)
    with pytest.raises(data.DataError) as error:
        data.download("mnist", TEST_LABELS, str(tmp_path), [mirror + "404/"])
    assert str(error.value).startswith(said + ", and it could not be downloaded")
    with pytest.raises(data.DataError) as error:
        data.dataset_files("mnist", str(tmp_path), fetch=False, names=[TEST_LABELS])
    assert str(error.value) == said
    data.download("mnist", TEST_LABELS, str(tmp_path), [mirror + "good/"])
    assert not os.path.islink(tmp_path / TEST_LABELS)
    assert data.read_idx(str(tmp_path / TEST_LABELS))[:3].tolist() == [7, 2, 1]
