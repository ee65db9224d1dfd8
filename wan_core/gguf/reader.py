"""Opening GGUF files with the ``gguf`` package (memory-mapped), with clear errors for bad files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch

from ..safetensors_io import CheckpointError, check_model_path

FLOAT_TYPES = (0, 1, 30)  # F32, F16, BF16


@dataclass
class GGUFTensor:
    """One tensor: raw data (zero-copy from the mapped file), GGML type, logical torch shape."""

    data: torch.Tensor
    qtype: int
    shape: Tuple[int, ...]

    @property
    def quantized(self) -> bool:
        return self.qtype not in FLOAT_TYPES

    def as_float(self) -> torch.Tensor:
        """Float tensors as a torch tensor of their logical shape (F32/F16/BF16 only)."""
        if self.qtype == 30:  # numpy has no bf16: the reader gives raw bytes
            return self.data.view(torch.uint8).reshape(-1).view(torch.bfloat16).reshape(self.shape)
        return self.data.reshape(self.shape)


def _field_value(field):
    """A metadata field as a Python value (string, number or list)."""
    from gguf import GGUFValueType

    if not field.types:
        return None
    if field.types[0] == GGUFValueType.ARRAY:
        if len(field.types) > 1 and field.types[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] if len(field.parts[i]) == 1 else field.parts[i].tolist() for i in field.data]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0]


class GGUFFile:
    """A GGUF file's metadata and tensors, validated on open."""

    def __init__(self, path, what: str):
        self.path = check_model_path(path, what)
        from gguf import GGUFReader

        size = self.path.stat().st_size
        try:
            self.reader = GGUFReader(str(self.path), "c")
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad file for the user
            raise CheckpointError(
                f"{self.path.name} is not a readable GGUF file ({type(err).__name__}: {err}); it may be truncated, "
                f"corrupt or not a GGUF at all: download the {what} again."
            ) from None
        for t in self.reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise CheckpointError(f"{self.path.name}: tensor {t.name} runs past the end of the file (truncated?).")
        self.metadata: Dict[str, object] = {k: _field_value(f) for k, f in self.reader.fields.items()
                                            if not k.startswith("tokenizer.ggml.") or k in _SMALL_TOKENIZER_KEYS}
        self.architecture = self.metadata.get("general.architecture")

    @property
    def mapped_range(self) -> Tuple[int, int]:
        """(first address, end address) of the file's memory map, which every tensor of
        :meth:`tensors` points into (a host must not page-lock these: they are the file's pages)."""
        start = int(self.reader.data.ctypes.data)
        return start, start + int(self.reader.data.nbytes)

    def field(self, key):
        f = self.reader.fields.get(key)
        return None if f is None else _field_value(f)

    def tensors(self) -> Dict[str, GGUFTensor]:
        from gguf import GGML_QUANT_SIZES

        from .dequant import supported_types

        out = {}
        for t in self.reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            qtype = int(t.tensor_type)
            if qtype not in FLOAT_TYPES and qtype not in supported_types() and not _numpy_can_dequantize(qtype):
                raise CheckpointError(
                    f"{self.path.name}: tensor {t.name} has GGML type {t.tensor_type.name}, which neither this pack "
                    "nor the gguf package can dequantize. Use a file with Q2_K..Q8_0, IQ4_NL/IQ4_XS, F16 or BF16."
                )
            data = torch.from_numpy(np.asarray(t.data))
            if qtype in FLOAT_TYPES and qtype != 30:
                data = data.reshape(shape)
            elif qtype == 30:
                data = data.view(torch.uint8)
            if qtype not in FLOAT_TYPES:
                block, type_size = GGML_QUANT_SIZES[t.tensor_type]
                data = data.reshape(-1, shape[-1] // block * type_size)
            out[t.name] = GGUFTensor(data, qtype, shape)
        return out


_SMALL_TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                         "tokenizer.ggml.unknown_token_id")


def _numpy_can_dequantize(qtype: int) -> bool:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        qt = GGMLQuantizationType(qtype)
        dequantize(np.zeros((1, GGML_QUANT_SIZES[qt][1]), dtype=np.uint8), qt)
        return True
    except Exception:  # noqa: BLE001
        return False
