"""A native 2×2 max-pool for the grouped network, compiled on first use; exact fallback.

PyTorch's CPU max-pool takes ~50-80 ns per output pixel on the default CNN's few channels
(it tracks int64 indices and zero-fills the gradient before scattering into it): with its
backward, ~15 % of an SGLD step of the default CNN.  ``max_pool2.c`` does the same 2×2,
stride-2 pool in one pass each way, bit for bit PyTorch's values and gradients (the same
scan order, the first maximum wins, NaN wins; checked in ``tests/test_native.py``), about
4× faster.  The grouped network (``critperiods.train.grouped``) uses it where it applies, so it
speeds up LLC sampling and stacked training without changing a bit of either.

The C file is compiled with the system C compiler (``$CC``, else ``cc``) for this machine's
CPU (``-march=native``) into a cache folder (``$CRITPERIODS_CACHE_DIR``, else
``$XDG_CACHE_HOME/critperiods``, else ``~/.cache/critperiods``), under a name made from the
source, the compiler and the CPU, so nodes of a cluster with different CPUs never share a
binary.  That takes ~0.3 s once per machine.  Where there is no compiler, the compilation
fails, or ``CRITPERIODS_NATIVE=0`` is set, :func:`max_pool2` returns None and callers use
PyTorch's kernel: the same results, slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from critperiods.pipeline.files import atomic_path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("max_pool2.c")
FLAGS = ("-O3", "-march=native", "-std=gnu11", "-shared", "-fPIC")


def max_pool2(module: nn.MaxPool2d, x: Tensor) -> Tensor | None:
    """``module(x)`` by the native kernel, or None where it does not apply.

    It applies to a 2×2 window with stride 2 and no padding, dilation, ceil mode or indices,
    on a float32 CPU image batch that is channels-last with even height and width and a
    multiple of 8 channels, at one intra-op thread (the kernel has one thread; at more,
    PyTorch's parallel kernel), when the kernel could be built.
    """
    if not (_pools_2x2(module) and _fits(x) and torch.get_num_threads() == 1):
        return None
    lib = _library()
    return None if lib is None else _MaxPool2.apply(x, lib)


def _pools_2x2(module: nn.MaxPool2d) -> bool:
    """Whether ``module`` is a plain 2×2 max-pool with stride 2."""
    def pair(v: Any) -> tuple:
        return tuple(v) if isinstance(v, tuple | list) else (v, v)

    return (pair(module.kernel_size) == (2, 2) and pair(module.stride) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1)
            and not module.ceil_mode and not module.return_indices)


def _fits(x: Tensor) -> bool:
    """Whether ``x`` has the layout the kernel reads."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.shape[1] % 8 == 0 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and x.is_contiguous(memory_format=torch.channels_last))


class _MaxPool2(torch.autograd.Function):
    """The kernel's forward and backward; the backward needs only the winners' codes."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lib: ctypes.CDLL) -> Tensor:
        b, c, h, w = x.shape
        out = torch.empty((b, c, h // 2, w // 2), memory_format=torch.channels_last)
        code = torch.empty((b, h // 2, w // 2, c), dtype=torch.uint8)
        lib.max_pool2_forward(x.data_ptr(), out.data_ptr(), code.data_ptr(), b, h, w, c)
        ctx.save_for_backward(code)
        ctx.lib, ctx.shape = lib, x.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (code,) = ctx.saved_tensors
        b, c, h, w = ctx.shape
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = torch.empty((b, c, h, w), memory_format=torch.channels_last)
        ctx.lib.max_pool2_backward(grad.data_ptr(), code.data_ptr(), grad_x.data_ptr(),
                                   b, h, w, c)
        return grad_x, None


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The compiled kernel (built into the cache on first use), or None."""
    if os.environ.get("CRITPERIODS_NATIVE", "1") == "0":
        return None
    try:
        path = _build()
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        log.info("native max-pool unavailable, PyTorch's is used: %s", err)
        return None
    for fn in (lib.max_pool2_forward, lib.max_pool2_backward):
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_ssize_t] * 4
        fn.restype = None
    return lib


def _build() -> Path:
    """Compile the kernel into the cache unless it is there; return the library's path."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError("no C compiler ($CC or cc)")
    key = hashlib.sha256("\0".join(
        [SOURCE.read_text(), compiler, *FLAGS, _cpu_signature()]).encode()).hexdigest()[:16]
    path = _cache_dir() / f"max_pool2-{key}.so"
    if not path.exists():
        with atomic_path(path) as tmp:  # concurrent builders each install a whole file
            done = subprocess.run([compiler, *FLAGS, "-o", str(tmp), str(SOURCE)],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise OSError(f"{compiler} failed: {done.stderr.strip()[-500:]}")
    return path


def _cache_dir() -> Path:
    """Where compiled kernels are kept."""
    if env := os.environ.get("CRITPERIODS_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "critperiods"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [ln for ln in info if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
