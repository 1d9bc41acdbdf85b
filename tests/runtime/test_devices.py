"""ddpm.runtime.devices: what a device request resolves to, and the canonical form the samplers compare."""

from __future__ import annotations

import pytest
import torch

from ddpm.runtime.devices import DeviceError, canonical_device, resolve_device


def test_cpu_requests_resolve_to_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default is the GPU where there is one")
def test_the_default_without_a_gpu_is_the_cpu():
    assert resolve_device(None) == torch.device("cpu")


@pytest.mark.parametrize(("request_", "match"), [
    ("tpu", "unknown device 'tpu'"),
    ("meta", "unsupported device 'meta'"),
    ("cuda:x", "unknown device 'cuda:x'"),
])
def test_bad_requests_are_one_line_errors(request_, match):
    with pytest.raises(DeviceError, match=match) as caught:
        resolve_device(request_)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


def test_canonical_device_fills_in_the_current_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert canonical_device("cuda") == torch.device("cuda", 1) == canonical_device(torch.device("cuda:1"))
    assert canonical_device("cuda") != canonical_device("cuda:0")
    assert canonical_device("cpu") == torch.device("cpu")
