"""glibc malloc settings for a training process (part of the fast path)."""
import ctypes

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory():
    """Keep freed per-batch temporaries in the heap instead of returning them to the OS.

    Blocks up to 128 MiB (a layer's output up to batch ~3000) come from the
    heap and are reused batch after batch; larger ones, such as the dataset
    arrays, still get their own mapping, which the kernel can back with huge
    pages (serving those from the heap made loading MNIST ten times slower).
    Returns True if glibc accepted the settings (False elsewhere, e.g. musl).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, 128 << 20),   # mmap only blocks over 128 MiB
        (M_TRIM_THRESHOLD, 1 << 30),     # give memory back only beyond 1 GiB free
        (M_TOP_PAD, 64 << 20),           # grow the heap 64 MiB at a time
    ))
