"""Reading safetensors checkpoints (single files and sharded diffusers folders) tensor by tensor.

``safetensors.safe_open`` validates the file (header, coverage, truncation) and lists tensors.
The data of each tensor is then read straight into the buffer it will live in, converting dtype
at most once, so loading never holds a second copy of the model (peak RSS about the model size
plus the largest tensor), and nothing of the file stays mapped afterwards.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle")

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
if hasattr(torch, "float8_e4m3fn"):
    _DTYPES.update({"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2})
if hasattr(torch, "float8_e8m0fnu"):  # MXFP8 block scales (ComfyUI's per-layer quantized files)
    _DTYPES["F8_E8M0"] = torch.float8_e8m0fnu


def check_model_path(path, what: str, alternatives: str = "a .safetensors or .gguf file") -> Path:
    """Refuse missing paths and pickle files with a message naming the file and what to use instead."""
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{p.name}: {p.suffix} files are Python pickles, which can run code when loaded; this pack never "
            f"loads them. Use {alternatives} of the same {what} (e.g. the ComfyUI repackaged "
            "'*.safetensors' or a '*.gguf' from QuantStack/city96)."
        )
    if not p.exists():
        raise CheckpointError(f"{what} file not found: {p}. Check the path and that the download finished.")
    return p


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies: its file, byte range, dtype and shape."""

    file: Path
    start: int
    end: int
    dtype: torch.dtype
    shape: tuple


def _read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, 8 + n


def _scan_file(path: Path, what: str) -> tuple[Dict[str, TensorEntry], dict]:
    try:
        with safe_open(str(path), framework="pt") as f:  # validates the whole layout
            keys = set(f.keys())
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path.name} is not a readable safetensors file ({err}); it may be truncated or corrupt: "
            f"download the {what} again."
        ) from None
    header, base = _read_header(path)
    entries = {}
    for key in keys:
        info = header[key]
        if info["dtype"] not in _DTYPES:
            raise CheckpointError(f"{path.name}: tensor {key} has dtype {info['dtype']}, which this pack cannot read.")
        start, end = info["data_offsets"]
        entries[key] = TensorEntry(path, base + start, base + end, _DTYPES[info["dtype"]], tuple(info["shape"]))
    return entries, metadata


class SafetensorsCheckpoint:
    """The tensors of one safetensors file or a sharded folder, read on demand."""

    def __init__(self, entries: Dict[str, TensorEntry], metadata: dict, source: Path):
        self.entries = entries
        self.metadata = metadata
        self.source = source

    @classmethod
    def open(cls, path, what: str = "model", subfolder: Optional[str] = None) -> "SafetensorsCheckpoint":
        """Open ``path``: a .safetensors file, or a diffusers folder (sharded with an index json or not).

        ``subfolder`` (e.g. ``"transformer"``) is looked into when ``path`` is a whole pipeline folder.
        """
        p = check_model_path(path, what)
        if p.is_dir():
            files = _folder_files(p, subfolder, what)
        elif p.suffix.lower() == ".safetensors":
            files = [p]
        else:
            raise CheckpointError(f"{p.name}: expected a .safetensors file or a diffusers folder for the {what}.")
        entries, metadata = {}, {}
        for file in files:
            e, m = _scan_file(file, what)
            entries.update(e)
            metadata.update(m)
        return cls(entries, metadata, p)

    def keys(self) -> Iterable[str]:
        return self.entries.keys()

    def shapes(self) -> Dict[str, tuple]:
        return {k: e.shape for k, e in self.entries.items()}

    def read(self, key: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Read one tensor into fresh memory, converting to ``dtype`` if given.

        A conversion streams through a small reused staging buffer into the final tensor, so no
        full-size temporary of the stored dtype is ever made.
        """
        e = self.entries[key]
        nbytes = e.end - e.start
        out = torch.empty(e.shape, dtype=dtype or e.dtype)
        if nbytes == 0:
            return out
        with open(e.file, "rb") as f:
            f.seek(e.start)
            if out.dtype == e.dtype:
                self._fill(f, out.view(-1).view(torch.uint8), key, e)
                return out
            step = max(1, _STAGING_BYTES // _itemsize(e.dtype))
            flat = out.view(-1)
            staging = self._staging()
            for i in range(0, flat.numel(), step):
                n = min(step, flat.numel() - i)
                chunk = staging[: n * _itemsize(e.dtype)]
                self._fill(f, chunk, key, e)
                flat[i : i + n].copy_(chunk.view(e.dtype))
        return out

    def _staging(self) -> torch.Tensor:
        if getattr(self, "_staging_buffer", None) is None:
            self._staging_buffer = torch.empty(_STAGING_BYTES, dtype=torch.uint8)
        return self._staging_buffer

    @staticmethod
    def _fill(f, buf: torch.Tensor, key: str, e: TensorEntry) -> None:
        if f.readinto(memoryview(buf.numpy())) != buf.numel():
            raise CheckpointError(f"{e.file.name}: tensor {key} is cut short (file truncated?).")


_STAGING_BYTES = 8 * 2**20


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _folder_files(folder: Path, subfolder: Optional[str], what: str) -> list:
    candidates = [folder] + ([folder / subfolder] if subfolder else [])
    for d in candidates:
        indexes = sorted(d.glob("*.safetensors.index.json"))
        if indexes:
            with open(indexes[0]) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted({d / name for name in weight_map.values()})
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise CheckpointError(
                    f"{indexes[0]} lists shards that are missing: {', '.join(missing)}; download them again."
                )
            return files
        single = sorted(d.glob("*.safetensors"))
        if single:
            return single
    pickles = [p.name for d in candidates for p in d.glob("*") if p.suffix in PICKLE_SUFFIXES]
    hint = f" It holds only pickle files ({', '.join(pickles[:3])}), which are refused." if pickles else ""
    raise CheckpointError(f"{folder} holds no .safetensors weights for the {what}.{hint}")
