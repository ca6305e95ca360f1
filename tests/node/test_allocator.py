"""The allocator set-up a node does at start: applied on glibc, a no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform
import sys

import pytest

from qora_p2p.node import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_thresholds():
    assert allocator.tune_allocator() is True


def test_elsewhere_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune_allocator() is False


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert allocator.tune_allocator() is False
