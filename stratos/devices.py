"""Which precision training uses on this machine.

bf16 autocast pays only where the hardware has bf16 units: GPUs that report bf16 support, and
CPUs with AVX512_BF16 or AMX (oneDNN's bf16 kernels). On a CPU without them (e.g. AVX2 only)
every bf16 op is emulated: on an AVX2-only 2-core AMD EPYC, bench/training.py measured forced bf16
autocast at 0.12x (nano) and 0.08x (micro) of float32's tokens/s, while on the AVX512_BF16 machine
the same autocast was ~8% faster. So "auto" (training.bf16 left empty, a zoo recipe's
"auto") means: bf16 where it is native, float32 elsewhere; an explicit true on a CPU without
bf16 units is honoured with a warning.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """True where oneDNN runs bf16 natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def native_bf16() -> bool:
    """bf16 is native on the device training uses: the GPU if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def resolve_bf16(requested: bool | None) -> bool:
    """`requested` if given (warning when it is emulated here), else whether bf16 is native."""
    native = native_bf16()
    if requested is None:
        return native
    if requested and not native:
        log.warning(
            "training.bf16 is true but this machine has no bf16 units (%s): bf16 autocast is emulated, "
            "8-12x slower than float32 on an AVX2-only CPU (bench/training.py); leave training.bf16 "
            "empty to use bf16 only where it is native",
            "CPU capability " + torch.backends.cpu.get_cpu_capability()
            if not torch.cuda.is_available()
            else "GPU",
        )
    return requested
