"""Shared fixtures: one temporary ppg_nb cache per test session (the tests start from an empty cache) and the tiny
embedded base model built in it once."""
import os

import pytest

TINY_BASE = dict(base_conversations=48, base_steps=4)  # a base model of 4 SFT steps: seconds to build, enough to run


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    "A fresh ppg_nb cache for the session (`PPG_NB_CACHE`), shared by every test and the subprocesses they start."
    path = tmp_path_factory.getbasetemp() / "ppg_nb_cache"
    old = os.environ.get("PPG_NB_CACHE")
    os.environ["PPG_NB_CACHE"] = str(path)
    yield path
    if old is None: os.environ.pop("PPG_NB_CACHE", None)
    else: os.environ["PPG_NB_CACHE"] = old


@pytest.fixture(scope="session")
def cache_env(cache) -> dict:
    "The environment of a subprocess that uses the session's cache."
    return {**os.environ, "PPG_NB_CACHE": str(cache)}


@pytest.fixture(scope="session")
def base_dir(cache):
    "The tiny embedded base model (education), built once per session in the session's cache."
    from ppg_nb.train import embedded_base
    return embedded_base("education", TINY_BASE["base_conversations"], TINY_BASE["base_steps"], seed=0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: tests of tens of seconds (several processes); choose with -m slow, skip with -m 'not slow'")
