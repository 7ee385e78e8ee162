"""critperiods.train.native: the 2×2 max-pool kernel is PyTorch's, bit for bit, and used where
it applies; elsewhere (or without a compiler) PyTorch's kernel runs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from critperiods.measure import workers
from critperiods.train import native
from critperiods.train.copies import copies_forward, stack_like
from critperiods.train.memory_format import to_channels_last
from critperiods.train.models import build_model

HAVE_CC = shutil.which(os.environ.get("CC", "cc")) is not None


@pytest.fixture
def one_thread() -> Iterator[None]:
    with workers.one_thread():
        yield


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _awkward(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Small integers (many ties in every window), NaN, ±inf and -0, channels-last."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, shape, generator=g).float()
    flat = x.view(-1)
    flat[::7], flat[::11], flat[::13], flat[::17] = float("nan"), -0.0, -float("inf"), float("inf")
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("shape", [(3, 8, 6, 4), (32, 16, 28, 28), (5, 24, 14, 14), (2, 32, 2, 2)])
def test_values_and_gradients_are_pytorchs_bit_for_bit(shape: tuple[int, ...],
                                                       one_thread: None) -> None:
    assert native._library() is not None, "a compiler is here, so the kernel must build"
    pool = nn.MaxPool2d(2)
    x = _awkward(shape, seed=sum(shape)).requires_grad_()
    ours = native.max_pool2(pool, x)
    assert ours is not None
    theirs = F.max_pool2d(x, 2)
    grad = torch.randn(theirs.shape).contiguous(memory_format=torch.channels_last)
    grad.permute(0, 2, 3, 1).reshape(-1)[::5] = -0.0  # a view: -0 in every 5th element
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    assert torch.equal(_bits(ours), _bits(theirs)) and ours.stride() == theirs.stride()
    assert torch.equal(_bits(g_ours), _bits(g_theirs)) and g_ours.stride() == g_theirs.stride()


@pytest.mark.parametrize("case", ["odd width", "4 channels", "stride 1", "NCHW", "float64",
                                  "two threads", "switched off"])
def test_it_stands_aside_where_it_does_not_apply(case: str, one_thread: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shape = {"odd width": (2, 8, 6, 5), "4 channels": (2, 4, 6, 6)}.get(case, (2, 8, 6, 6))
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    pool = nn.MaxPool2d(2, stride=1) if case == "stride 1" else nn.MaxPool2d(2)
    if case == "NCHW":
        x = x.contiguous()
    elif case == "float64":
        x = x.double()
    elif case == "two threads":
        torch.set_num_threads(2)
    elif case == "switched off":
        monkeypatch.setenv("CRITPERIODS_NATIVE", "0")
        native._library.cache_clear()
    try:
        assert native.max_pool2(pool, x) is None
    finally:
        native._library.cache_clear()


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_the_grouped_network_uses_it_without_changing_a_bit(
        one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three copies of the default CNN, forward and backward: the native pools run (both of
    them) and the outputs and gradients are those of PyTorch's pools, bit for bit."""
    model = to_channels_last(build_model("small_cnn", 8, 1, 28, 10, seed=0)).eval()
    params = {k: torch.stack([p.detach() + 0.01 * i for i in range(3)])
              for k, p in model.named_parameters()}
    x = torch.randn(3, 16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    calls = []
    apply = native._MaxPool2.apply
    monkeypatch.setattr(native._MaxPool2, "apply", lambda *a: calls.append(1) or apply(*a))

    def run() -> tuple[torch.Tensor, ...]:
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        out = copies_forward(model)(leaves, stack_like({}, 3), x)
        return (out, *torch.autograd.grad(out.square().sum(), list(leaves.values())))

    with_native = run()
    assert len(calls) == 2
    monkeypatch.setenv("CRITPERIODS_NATIVE", "0")
    native._library.cache_clear()
    try:
        without = run()
    finally:
        native._library.cache_clear()
    assert len(calls) == 2  # not used when switched off
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(with_native, without, strict=True))


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_the_kernel_is_built_once_into_the_cache(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CRITPERIODS_CACHE_DIR", str(tmp_path))
    native._library.cache_clear()
    try:
        assert native._library() is not None
        built = list(tmp_path.glob("max_pool2-*.so"))
        assert len(built) == 1 and not list(tmp_path.glob("*.tmp"))
        stamp = built[0].stat().st_mtime_ns
        native._library.cache_clear()
        assert native._library() is not None and built[0].stat().st_mtime_ns == stamp
    finally:
        native._library.cache_clear()


def test_a_failing_compiler_leaves_pytorchs_kernel(tmp_path, monkeypatch,  # noqa: ANN001
                                                   one_thread: None) -> None:
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: fatal error' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("CRITPERIODS_CACHE_DIR", str(tmp_path / "cache"))
    native._library.cache_clear()
    try:
        assert native._library() is None
        x = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        assert native.max_pool2(nn.MaxPool2d(2), x) is None
        assert not list((tmp_path / "cache").glob("*"))
    finally:
        native._library.cache_clear()
