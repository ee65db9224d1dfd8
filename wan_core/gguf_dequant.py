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
    return b.contiguous().view(torch.float16).to(torch.float32)


def _split(blocks: torch.Tensor, *sizes: int):
    out, start = [], 0
    for s in sizes:
        out.append(blocks[:, start: start + s])
        start += s
    out.append(blocks[:, start:])
    return out


def _nibbles(qs: torch.Tensor, n: int, groups: int) -> torch.Tensor:
    """Low then high 4-bit halves of each byte group: [n, groups, 2, len] & 0xF."""
    shifts = torch.tensor([0, 4], dtype=torch.uint8, device=qs.device).view(1, 1, 2, 1)
    return (qs.reshape(n, groups, 1, -1) >> shifts) & 0x0F


def _bits(q: torch.Tensor, n: int, width: int, count: int) -> torch.Tensor:
    shifts = torch.arange(0, width * count, width, dtype=torch.uint8, device=q.device).view(1, 1, count, 1)
    return q.reshape(n, -1, 1, 32) >> shifts


def q4_0(b):
    n = b.shape[0]
    d, qs = _split(b, 2)
    q = _nibbles(qs, n, 1).reshape(n, -1).to(torch.int8) - 8
    return _f16(d) * q.to(torch.float32)


def q4_1(b):
    n = b.shape[0]
    d, m, qs = _split(b, 2, 2)
    q = _nibbles(qs, n, 1).reshape(n, -1).to(torch.float32)
    return _f16(d) * q + _f16(m)


def _q5_high(qh: torch.Tensor, n: int) -> torch.Tensor:
    words = qh.contiguous().view(torch.int32).reshape(n, 1)
    return ((words >> torch.arange(32, dtype=torch.int32, device=qh.device).view(1, 32)) & 1).to(torch.uint8)


def q5_0(b):
    n = b.shape[0]
    d, qh, qs = _split(b, 2, 4)
    ql = _nibbles(qs, n, 1).reshape(n, -1)
    q = (ql | (_q5_high(qh, n) << 4)).to(torch.int8) - 16
    return _f16(d) * q.to(torch.float32)


def q5_1(b):
    n = b.shape[0]
    d, m, qh, qs = _split(b, 2, 2, 4)
    ql = _nibbles(qs, n, 1).reshape(n, -1)
    q = (ql | (_q5_high(qh, n) << 4)).to(torch.float32)
    return (_f16(d) * q) + _f16(m)


def q8_0(b):
    d, x = _split(b, 2)
    return x.contiguous().view(torch.int8).to(torch.float32) * _f16(d)


def q2_k(b):
    n = b.shape[0]
    scales, qs, d, dmin = _split(b, QK_K // 16, QK_K // 4, 2)
    d, dmin = _f16(d), _f16(dmin)
    dl = (d * (scales & 0xF).to(torch.float32)).reshape(n, QK_K // 16, 1)
    ml = (dmin * (scales >> 4).to(torch.float32)).reshape(n, QK_K // 16, 1)
    q = (_bits(qs, n, 2, 4) & 3).reshape(n, QK_K // 16, 16).to(torch.float32)
    return (dl * q - ml).reshape(n, -1)


def q3_k(b):
    n = b.shape[0]
    hmask, qs, scales, d = _split(b, QK_K // 8, QK_K // 4, 12)
    d = _f16(d)
    dev = b.device
    lsc = (scales[:, :8].reshape(n, 1, 8) >> torch.tensor([0, 4], dtype=torch.uint8, device=dev).view(1, 2, 1)).reshape(n, 16)
    hsc = (scales[:, 8:].reshape(n, 1, 4) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=dev).view(1, 4, 1)).reshape(n, 16)
    sc = ((lsc & 0x0F) | ((hsc & 0x03) << 4)).to(torch.int8) - 32
    dl = (d * sc.to(torch.float32)).reshape(n, 16, 1)
    ql = _bits(qs, n, 2, 4).reshape(n, 16, QK_K // 16) & 3
    qh = (_bits(hmask, n, 1, 8).reshape(n, 16, QK_K // 16) & 1) ^ 1
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).to(torch.float32)
    return (dl * q).reshape(n, QK_K)


def _scale_min_k4(scales: torch.Tensor, n: int):
    s = scales.reshape(n, 3, 4)
    d, m, m_d = s[:, 0:1], s[:, 1:2], s[:, 2:3]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc.reshape(n, 8), mn.reshape(n, 8)


def q4_k(b):
    n = b.shape[0]
    d, dmin, scales, qs = _split(b, 2, 2, K_SCALE_SIZE)
    sc, mn = _scale_min_k4(scales, n)
    dd = (_f16(d) * sc.to(torch.float32)).reshape(n, -1, 1)
    dm = (_f16(dmin) * mn.to(torch.float32)).reshape(n, -1, 1)
    q = _nibbles(qs, n, 4).reshape(n, -1, 32).to(torch.float32)
    return (dd * q - dm).reshape(n, QK_K)


def q5_k(b):
    n = b.shape[0]
    d, dmin, scales, qh, qs = _split(b, 2, 2, K_SCALE_SIZE, QK_K // 8)
    sc, mn = _scale_min_k4(scales, n)
    dd = (_f16(d) * sc.to(torch.float32)).reshape(n, -1, 1)
    dm = (_f16(dmin) * mn.to(torch.float32)).reshape(n, -1, 1)
    ql = _nibbles(qs, n, 4).reshape(n, -1, 32)
    hi = (_bits(qh, n, 1, 8) & 1).reshape(n, -1, 32)
    q = (ql | (hi << 4)).to(torch.float32)
    return (dd * q - dm).reshape(n, QK_K)


def q6_k(b):
    n = b.shape[0]
    ql, qh, scales, d = _split(b, QK_K // 2, QK_K // 4, QK_K // 16)
    dd = (_f16(d) * scales.contiguous().view(torch.int8).to(torch.float32)).reshape(n, QK_K // 16, 1)
    lo = (ql.reshape(n, -1, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8, device=b.device).view(1, 1, 2, 1)) & 0x0F
    lo = lo.reshape(n, -1, 32)
    hi = (_bits(qh, n, 2, 4) & 0x03).reshape(n, -1, 32)
    q = (lo | (hi << 4)).to(torch.int8) - 32
    return (dd * q.reshape(n, QK_K // 16, -1).to(torch.float32)).reshape(n, QK_K)


def _kvalues(device):
    return torch.tensor(IQ4_KVALUES, dtype=torch.float32, device=device)


def iq4_nl(b):
    n = b.shape[0]
    d, qs = _split(b, 2)
    q = _nibbles(qs, n, 1).reshape(n, -1).long()
    return _f16(d) * _kvalues(b.device)[q]


def iq4_xs(b):
    n = b.shape[0]
    d, sh, sl, qs = _split(b, 2, 2, QK_K // 64)
    dev = b.device
    sh = sh.contiguous().view(torch.int16).reshape(n, 1, 1)
    sh = (sh >> torch.arange(0, 16, 2, dtype=torch.int16, device=dev).view(1, -1, 1)).reshape(n, -1).to(torch.uint8) & 0x03
    sl = (sl.reshape(n, -1, 1) >> torch.tensor([0, 4], dtype=torch.uint8, device=dev).view(1, 1, 2)).reshape(n, -1) & 0x0F
    sc = (sl | (sh << 4)).to(torch.int8) - 32
    dl = (_f16(d) * sc.to(torch.float32)).reshape(n, -1, 1)
    q = (qs.reshape(n, -1, 1, 16) >> torch.tensor([0, 4], dtype=torch.uint8, device=dev).view(1, 1, 2, 1))
    q = (q.reshape(n, -1, 32) & 0x0F).long()
    return (dl * _kvalues(dev)[q]).reshape(n, -1)


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
    return kernel(blocks).reshape(shape).to(dtype)
