"""Vectorised torch dequantization of GGML blocks, on whatever device the bytes are on.

Each kernel takes raw blocks [n_blocks, type_size] (uint8) and returns [n_blocks, block_size]
fp32, with the same arithmetic, in the same order, as ``gguf.quants`` (so fp32 results are
bit-identical).  Types without a kernel fall back to ``gguf.quants.dequantize`` (numpy, on the
CPU) with a warning that names the tensor and type.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict

import torch

log = logging.getLogger(__name__)

QK_K = 256
K_SCALE_SIZE = 12
IQ4_KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _f16(b: torch.Tensor) -> torch.Tensor:
    return b.view(torch.float16).to(torch.float32)


def _split(blocks: torch.Tensor, *sizes: int):
    out, start = [], 0
    for s in sizes:
        out.append(blocks[:, start: start + s])
        start += s
    out.append(blocks[:, start:])
    return out


# Bit fields are unpacked in uint8 (one byte per value), converted to fp32 once, and the scales
# applied in place: fewer full-size temporaries is what makes these fast on CPUs and GPUs alike.
# Float operations keep gguf.quants' order, so fp32 results stay bit-identical.


def _fields(q: torch.Tensor, width: int, count: int, groups: int) -> torch.Tensor:
    """Split each byte of q [n, groups*L] into ``count`` fields of ``width`` bits, low first:
    [n, groups, count, L] (the ggml layout: field k of every byte forms the k-th run of L values)."""
    n = q.shape[0]
    q = q.reshape(n, groups, 1, -1)
    mask = (1 << width) - 1
    return torch.cat([(q >> (width * k)) & mask if k else q & mask for k in range(count)], dim=2)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n, 16] bytes -> [n, 32]: the 16 low nibbles, then the 16 high ones."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1)


def _q5_high(qh: torch.Tensor) -> torch.Tensor:
    """The 32 high bits of a Q5 block (a little-endian uint32 in 4 bytes), one per value."""
    return torch.stack([(qh >> k) & 1 for k in range(8)], dim=2).reshape(qh.shape[0], 32)


def q4_0(b):
    d, qs = _split(b, 2)
    return _nibbles(qs).to(torch.float32).sub_(8).mul_(_f16(d))


def q4_1(b):
    d, m, qs = _split(b, 2, 2)
    return _nibbles(qs).to(torch.float32).mul_(_f16(d)).add_(_f16(m))


def q5_0(b):
    d, qh, qs = _split(b, 2, 4)
    q = _nibbles(qs) | (_q5_high(qh) << 4)
    return q.to(torch.float32).sub_(16).mul_(_f16(d))


def q5_1(b):
    d, m, qh, qs = _split(b, 2, 2, 4)
    q = _nibbles(qs) | (_q5_high(qh) << 4)
    return q.to(torch.float32).mul_(_f16(d)).add_(_f16(m))


def q8_0(b):
    d, x = _split(b, 2)
    return x.view(torch.int8).to(torch.float32).mul_(_f16(d))


def q2_k(b):
    n = b.shape[0]
    scales, qs, d, dmin = _split(b, QK_K // 16, QK_K // 4, 2)
    dl = (_f16(d) * (scales & 0xF).to(torch.float32)).reshape(n, QK_K // 16, 1)
    ml = (_f16(dmin) * (scales >> 4).to(torch.float32)).reshape(n, QK_K // 16, 1)
    q = _fields(qs, 2, 4, 2).reshape(n, QK_K // 16, 16).to(torch.float32)
    return q.mul_(dl).sub_(ml).reshape(n, QK_K)


def q3_k(b):
    n = b.shape[0]
    hmask, qs, scales, d = _split(b, QK_K // 8, QK_K // 4, 12)
    lsc = torch.cat([scales[:, :8] & 0x0F, scales[:, :8] >> 4], dim=1)
    hsc = _fields(scales[:, 8:], 2, 4, 1).reshape(n, 16)
    sc = (lsc | (hsc << 4)).view(torch.int8) - 32
    dl = (_f16(d) * sc.to(torch.float32)).reshape(n, 16, 1)
    ql = _fields(qs, 2, 4, 2).reshape(n, 16, QK_K // 16)
    qh = _fields(hmask, 1, 8, 1).reshape(n, 16, QK_K // 16) ^ 1
    q = ql.view(torch.int8) - (qh << 2).view(torch.int8)
    return q.to(torch.float32).mul_(dl).reshape(n, QK_K)


def _scale_min_k4(scales: torch.Tensor, n: int):
    s = scales.reshape(n, 3, 4)
    d, m, m_d = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k4_scales(d, dmin, scales, n):
    sc, mn = _scale_min_k4(scales, n)
    return ((_f16(d) * sc.to(torch.float32)).reshape(n, -1, 1),
            (_f16(dmin) * mn.to(torch.float32)).reshape(n, -1, 1))


def q4_k(b):
    n = b.shape[0]
    d, dmin, scales, qs = _split(b, 2, 2, K_SCALE_SIZE)
    dd, dm = _k4_scales(d, dmin, scales, n)
    q = _fields(qs, 4, 2, 4).reshape(n, -1, 32).to(torch.float32)
    return q.mul_(dd).sub_(dm).reshape(n, QK_K)


def q5_k(b):
    n = b.shape[0]
    d, dmin, scales, qh, qs = _split(b, 2, 2, K_SCALE_SIZE, QK_K // 8)
    dd, dm = _k4_scales(d, dmin, scales, n)
    ql = _fields(qs, 4, 2, 4).reshape(n, -1, 32)
    hi = _fields(qh, 1, 8, 1).reshape(n, -1, 32)
    q = (ql | (hi << 4)).to(torch.float32)
    return q.mul_(dd).sub_(dm).reshape(n, QK_K)


def q6_k(b):
    n = b.shape[0]
    ql, qh, scales, d = _split(b, QK_K // 2, QK_K // 4, QK_K // 16)
    dd = (_f16(d) * scales.view(torch.int8).to(torch.float32)).reshape(n, QK_K // 16, 1)
    lo = _fields(ql, 4, 2, 2).reshape(n, -1, 32)
    hi = _fields(qh, 2, 4, 2).reshape(n, -1, 32)
    q = (lo | (hi << 4)).view(torch.int8) - 32
    return q.reshape(n, QK_K // 16, -1).to(torch.float32).mul_(dd).reshape(n, QK_K)


_KVALUES: Dict[torch.device, torch.Tensor] = {}


def _kvalues(device):
    """The IQ4 value table on ``device``, made once per device (a copy per call is a host-to-device
    transfer and a sync per layer on a GPU)."""
    table = _KVALUES.get(device)
    if table is None:
        table = _KVALUES[device] = torch.tensor(IQ4_KVALUES, dtype=torch.float32, device=device)
    return table


def iq4_nl(b):
    d, qs = _split(b, 2)
    return _kvalues(b.device)[_nibbles(qs).long()].mul_(_f16(d))


def iq4_xs(b):
    n = b.shape[0]
    d, sh, sl, qs = _split(b, 2, 2, QK_K // 64)
    dev = b.device
    sh = sh.contiguous().view(torch.int16).reshape(n, 1, 1)
    sh = (sh >> torch.arange(0, 16, 2, dtype=torch.int16, device=dev).view(1, -1, 1)).reshape(n, -1).to(torch.uint8) & 0x03
    sl = torch.stack([sl & 0x0F, sl >> 4], dim=2).reshape(n, -1)
    sc = (sl | (sh << 4)).view(torch.int8) - 32
    dl = (_f16(d) * sc.to(torch.float32)).reshape(n, -1, 1)
    q = _fields(qs, 4, 2, QK_K // 32).reshape(n, -1, 32)
    return _kvalues(dev)[q.long()].mul_(dl).reshape(n, -1)


def _kernels() -> Dict[int, Callable]:
    from gguf import GGMLQuantizationType as T

    return {T.Q4_0: q4_0, T.Q4_1: q4_1, T.Q5_0: q5_0, T.Q5_1: q5_1, T.Q8_0: q8_0, T.Q2_K: q2_k, T.Q3_K: q3_k,
            T.Q4_K: q4_k, T.Q5_K: q5_k, T.Q6_K: q6_k, T.IQ4_NL: iq4_nl, T.IQ4_XS: iq4_xs}


_KERNELS: Dict[int, Callable] = {}
_WARNED: set = set()


def supported_types():
    if not _KERNELS:
        _KERNELS.update(_kernels())
    return set(_KERNELS)


def dequantize(raw: torch.Tensor, qtype: int, shape, dtype: torch.dtype = torch.float32, name: str = "tensor"):
    """Raw GGML bytes (uint8, [..., bytes_per_row]) -> tensor of ``shape`` in ``dtype`` on raw's device."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType(qtype)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
        torch_dtype = {GGMLQuantizationType.F32: torch.float32, GGMLQuantizationType.F16: torch.float16,
                       GGMLQuantizationType.BF16: torch.bfloat16}[qtype]
        return raw.contiguous().view(torch_dtype).reshape(shape).to(dtype)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    supported_types()
    kernel = _KERNELS.get(qtype)
    if kernel is None:
        if (name, qtype) not in _WARNED:
            _WARNED.add((name, qtype))
            log.warning("GGUF tensor %s has type %s, which has no torch kernel here; using the slow numpy "
                        "dequantizer of the gguf package on the CPU", name, qtype.name)
        from gguf.quants import dequantize as np_dequantize

        out = np_dequantize(raw.cpu().numpy(), qtype)
        return torch.from_numpy(out).reshape(shape).to(device=raw.device, dtype=dtype)
    blocks = raw.reshape(-1, type_size)
    step = max(1, CHUNK_VALUES // block_size)
    if dtype == torch.float32 or blocks.shape[0] <= step:
        return kernel(blocks).reshape(shape).to(dtype)
    # a narrower dtype: decoded in chunks of rows into the output, so the fp32 values the kernels
    # compute (bit-identical to gguf.quants) exist for one chunk at a time, not the whole weight
    out = torch.empty(blocks.shape[0], block_size, dtype=dtype, device=raw.device)
    for i in range(0, blocks.shape[0], step):
        out[i: i + step] = kernel(blocks[i: i + step])
    return out.reshape(shape)


# Values decoded at a time when the result is narrower than fp32: the kernels' fp32 values and
# temporaries exist for one chunk (8M values: at most about 110 MiB) instead of the whole weight (a
# 13824 x 5120 A14B FFN weight decoded to bf16 whole peaked at 6.6 bytes a value, 464 MB; in chunks
# 191 MB), for a few more kernel launches.
CHUNK_VALUES = 1 << 23
# the kernels' peak per value, fp32 result included (measured on the CPU with a dispatch mode that
# tracks live storages: 5.2 (Q8_0) to 8.1 (Q6_K), 12.6 / 13.8 for IQ4_NL / IQ4_XS's int64 indices)
_KERNEL_BYTES_PER_VALUE = 14


def dequant_workspace_bytes(qtype: int, numel: int, dtype: torch.dtype) -> int:
    """Peak memory :func:`dequantize` allocates for a tensor of ``numel`` values in ``dtype``: the
    result, plus the kernels' temporaries for one chunk (the whole tensor when the result is fp32)."""
    if dtype == torch.float32:
        return numel * _KERNEL_BYTES_PER_VALUE
    return numel * dtype.itemsize + min(numel, CHUNK_VALUES) * _KERNEL_BYTES_PER_VALUE
