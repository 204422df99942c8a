"""Settings that depend on the machine: precision, DataLoader workers and memory format ('auto' resolved here).

Measured on a 2-core AMD EPYC (AVX2 only, fp32, batch 4, 320x640; issue 13): channels-last speeds the
depthwise-conv encoders up (EfficientNetV2-B0 3.5 -> 2.9 s/step, MobileNetV3 3.3 -> 2.75) but slows ResNet-18
down (4.4 -> 12.8), so 'auto' turns it on only for those families, and only on CPU.
"""

from __future__ import annotations

import os

import torch

# oneDNN's ISA names in increasing order; bf16 kernels exist from AVX512_CORE_BF16 on.
_ISA_ORDER = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
              "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
_CHANNELS_LAST_FAMILIES = ("efficientnet", "mobilenet", "mnasnet", "ghostnet", "regnet", "convnext")


def onednn_isa_allows_bf16(env: dict[str, str] | None = None) -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) caps oneDNN below AVX512_CORE_BF16."""
    env = os.environ if env is None else env
    cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return True
    if cap not in _ISA_ORDER:
        return False  # an ISA name we do not know: do not bet on bf16 kernels
    return _ISA_ORDER.index(cap) >= _ISA_ORDER.index("AVX512_CORE_BF16")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX in the CPU. oneDNN's own check (``_is_mkldnn_bf16_supported``) also says yes on AVX-512
    cores without them, where it emulates bf16: measured on such a 2-core Xeon, a cpu-preset training step took
    2.1 s in bf16 autocast against 0.8-1.1 s in fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cpu_has_bf16() -> bool:
    """bf16 kernels that are faster than fp32: native instructions, and oneDNN allowed to use them."""
    return cpu_has_native_bf16() and onednn_isa_allows_bf16()


def use_channels_last(setting: bool | str, encoder: str, device_type: str) -> bool:
    """``encoder``: the smp encoder name, or '' for families without one (SAM-ViT)."""
    if setting != "auto":
        return bool(setting)
    return device_type == "cpu" and any(f in encoder.lower() for f in _CHANNELS_LAST_FAMILIES)


def resolve_workers(setting: int | str, cache: bool, on_gpu: bool, cores: int | None = None) -> int:
    """'auto': no worker processes where they would compete with training for the cores (up to 2 cores, or a
    CPU-only run whose data is cached in memory), else min(4, cores // 2)."""
    if setting != "auto":
        return int(setting)
    cores = cores or os.cpu_count() or 1
    if cores <= 2 or (cache and not on_gpu):
        return 0
    return min(4, cores // 2)
