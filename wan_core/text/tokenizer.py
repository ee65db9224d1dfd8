"""The umt5 tokenizer, rebuilt from what users' files carry; never fetched from the network.

Sources: the ``spiece_model`` uint8 tensor embedded in ComfyUI's umt5 files, a ``tokenizer/``
folder (diffusers layout: ``spiece.model`` or ``tokenizer.json``), or GGUF metadata (see
``gguf_text_encoder``).  Prompts are cleaned as the official code does before tokenizing.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import List, Optional

log = logging.getLogger(__name__)

TEXT_LEN = 512


def clean_prompt(text: str) -> str:
    """ftfy fix, HTML unescape (twice), collapse whitespace, strip: the official ``clean='whitespace'``."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class PromptTokenizer:
    """Text -> umt5 token ids with EOS, truncated to 512 (with a warning that says so)."""

    def __init__(self, encode_fn, eos_id: int, pad_id: int, source: str):
        self._encode = encode_fn
        self.eos_id, self.pad_id, self.source = eos_id, pad_id, source

    @classmethod
    def from_sentencepiece(cls, model_proto: bytes, source: str = "spiece_model") -> "PromptTokenizer":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_proto=bytes(model_proto))
        eos = sp.eos_id() if sp.eos_id() >= 0 else 1
        pad = sp.pad_id() if sp.pad_id() >= 0 else 0
        return cls(lambda t: sp.encode(t), eos, pad, source)

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> "PromptTokenizer":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        eos = tok.token_to_id("</s>")
        pad = tok.token_to_id("<pad>")
        return cls(lambda t: tok.encode(t, add_special_tokens=False).ids, 1 if eos is None else eos,
                   0 if pad is None else pad, str(path))

    @classmethod
    def from_folder(cls, folder: Path) -> Optional["PromptTokenizer"]:
        """A tokenizer from a diffusers-style folder, or None when it holds none."""
        folder = Path(folder)
        if (folder / "spiece.model").is_file():
            return cls.from_sentencepiece((folder / "spiece.model").read_bytes(), str(folder / "spiece.model"))
        if (folder / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(folder / "tokenizer.json")
        return None

    def count(self, prompt: str) -> int:
        """The prompt's length in tokens with its end token, before any truncation."""
        return len(self._encode(clean_prompt(prompt))) + 1

    def __call__(self, prompt: str, max_len: int = TEXT_LEN, what: str = "prompt") -> List[int]:
        ids = list(self._encode(clean_prompt(prompt)))
        if len(ids) + 1 > max_len:
            log.warning("%s is %d tokens; umt5 takes %d, so it was truncated to its first %d tokens: %r...",
                        what, len(ids) + 1, max_len, max_len - 1, prompt[:60])
            ids = ids[: max_len - 1]
        return ids + [self.eos_id]


def find_tokenizer(weights: Path, explicit: Optional[Path] = None) -> Optional[PromptTokenizer]:
    """Look for a tokenizer folder: the one given, or ``tokenizer/`` in/next to the weights."""
    weights = Path(weights)
    candidates = [explicit] if explicit else []
    base = weights if weights.is_dir() else weights.parent
    candidates += [base / "tokenizer", base.parent / "tokenizer", base]
    for c in candidates:
        if c is not None and Path(c).is_dir():
            tok = PromptTokenizer.from_folder(Path(c))
            if tok is not None:
                return tok
    return None
