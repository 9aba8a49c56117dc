"""Compiled functions kept for the next process compute what a fresh compile does."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lasagne
from convae import train
from convae.runtime import function_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = train.Settings(seed=7, optimizer="adam", lr=1e-3, noise="mask", noise_level=0.2)
# What the function cache is keyed by.
GRAPH = {name: getattr(SETTINGS, name) for name in train.GRAPH_SETTINGS}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(function_cache, "cache_path",
                        lambda key: str(tmp_path / (key + ".pkl")))
    return tmp_path


@pytest.fixture(scope="module")
def batches(mnist_dir):
    from convae import data
    images = data.load_dataset("mnist", mnist_dir)[0]
    return [images[i * 64:(i + 1) * 64] for i in range(3)]


def steps(built, batches):
    """Losses of three training steps, then validation loss, reconstructions, weights."""
    losses = [float(built.train_fn(batch)) for batch in batches]
    return (losses, float(built.val_fn(batches[0])), built.reconstruct_fn(batches[0][:4]),
            lasagne.layers.get_all_param_values(built.network))


def assert_same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, list) and x and isinstance(x[0], np.ndarray):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(x, y)


def test_cached_functions_train_bit_for_bit_like_fresh_ones(cache_dir, batches, monkeypatch):
    fresh = train.compile_run(SETTINGS)
    assert len(list(cache_dir.iterdir())) == 1
    fresh_results = steps(fresh, batches)

    def no_compiling(*args):
        raise AssertionError("compiled although the cache had the functions")
    monkeypatch.setattr(train.theano, "function", no_compiling)
    cached = train.compile_run(SETTINGS)
    assert cached.train_fn is not fresh.train_fn
    # Training moves the cached network's own weights, from the same start.
    assert_same(steps(cached, batches), fresh_results)


def test_use_cache_false_compiles_and_keeps_nothing(cache_dir, batches):
    built = train.compile_run(SETTINGS, use_cache=False)
    assert np.isfinite(float(built.train_fn(batches[0])))
    assert list(cache_dir.iterdir()) == []


def test_any_setting_or_source_change_is_another_key(monkeypatch, tmp_path):
    key = function_cache.cache_key(GRAPH)
    assert function_cache.cache_key(dict(GRAPH)) == key
    for name, value in [("seed", 8), ("lr", 2e-3), ("noise", "gaussian"),
                        ("noise_level", 0.3), ("optimizer", "nesterov")]:
        assert function_cache.cache_key(dict(GRAPH, **{name: value})) != key
    # A copy of convae's source gives the same key; any edit to a .py file or
    # a C kernel in a subfolder gives another.
    copy = tmp_path / "convae"
    shutil.copytree(function_cache.SOURCE_DIR, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "weights"))
    monkeypatch.setattr(function_cache, "SOURCE_DIR", str(copy))
    assert function_cache.cache_key(GRAPH) == key
    for edited in ("model.py", os.path.join("runtime", "c_code", "corr_avx2.c"),
                   os.path.join("runtime", "c_code", "convae_ops.h")):
        original = (copy / edited).read_text()
        (copy / edited).write_text(original + "\n/* edited */\n")
        assert function_cache.cache_key(GRAPH) != key, edited
        (copy / edited).write_text(original)


def test_damaged_entry_is_a_miss_and_gets_replaced(cache_dir, batches):
    key = function_cache.cache_key(GRAPH)
    (cache_dir / (key + ".pkl")).write_bytes(b"\x80\x04 not a pickle")
    assert function_cache.load(key) is None
    built = train.compile_run(SETTINGS)
    assert np.isfinite(float(built.train_fn(batches[0])))
    assert function_cache.load(key) is not None


def test_only_the_most_recently_used_entries_are_kept(tmp_path):
    for i in range(function_cache.KEEP + 3):
        entry = tmp_path / ("%d.pkl" % i)
        entry.write_bytes(b"x")
        os.utime(entry, (1000 + i, 1000 + i))
    function_cache.prune(str(tmp_path))
    kept = sorted(int(p.name.split(".")[0]) for p in tmp_path.iterdir())
    assert kept == list(range(3, function_cache.KEEP + 3))


PROBE = """
import json, sys, time
start = time.time()
import convae, theano
from convae import data, train
convae.runtime.enable()
from theano.gof import cmodule
probes = []
real_probe = cmodule.try_march_flag
def counting(flags):
    probes.append(flags)
    return real_probe(flags)
cmodule.try_march_flag = counting
compiled = []
real_compile = theano.function
def compiling(*args, **kwargs):
    compiled.append(1)
    return real_compile(*args, **kwargs)
theano.function = compiling
images = data.load_dataset("mnist", sys.argv[1])[0]
built = train.compile_run(
    train.Settings(seed=11, optimizer="adam", lr=1e-3, noise="none", noise_level=0.0))
loss = float(built.train_fn(images[:128]))
print(json.dumps(dict(compiled=bool(compiled), probed=bool(probes), loss=loss,
                      seconds=time.time() - start)))
"""


def test_a_second_process_starts_from_the_cache(mnist_dir):
    import json
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", PROBE, mnist_dir], cwd=REPO,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    second = runs[1]
    assert not second["compiled"] and not second["probed"]
    assert second["loss"] == runs[0]["loss"]
