"""Prompt encoding node: umt5 embeddings as standard CONDITIONING."""

from __future__ import annotations

import logging
import os

import comfy.model_management as mm
import torch

from ..wan_core.text.tokenizer import TEXT_LEN as TEXT_TOKENS

log = logging.getLogger("wan_core")

# The official default negative prompt (used when the negative is left empty).
OFFICIAL_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                     "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
                     "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")


def split_prompts(text: str, per_line: bool):
    if not per_line:
        return [text]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines or [""]


class WanCoreEncodePrompts:
    DESCRIPTION = ("Encodes the positive and negative prompts with umt5-xxl (English or Chinese). With "
                   "one_prompt_per_line, each line of the positive prompt becomes one video of the batch.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("WANCORE_TEXT_ENCODER", {"tooltip": "From Wan Load Text Encoder."}),
            "positive": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "What the video shows. Empty is allowed (unconditional)."}),
            "negative": ("STRING", {"multiline": True, "default": OFFICIAL_NEGATIVE,
                                    "tooltip": "What to avoid; prefilled with the official default negative prompt. "
                                               "Left empty, the official default is used."}),
            "one_prompt_per_line": ("BOOLEAN", {"default": False,
                                                "tooltip": "Each non-empty line is a separate prompt -> a batch of "
                                                           "videos (seeds seed, seed+1, ...). The negative may have "
                                                           "one line for all or one line per prompt."}),
        }}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("umt5 embeddings [B, 512, 4096], zero past each prompt.",
                       "Negative embeddings (one row, or one per prompt).")
    FUNCTION = "encode"
    CATEGORY = "Wan Video (wan_core)"

    def encode(self, text_encoder, positive, negative, one_prompt_per_line):
        prompts = split_prompts(positive, one_prompt_per_line)
        negatives = split_prompts(negative, one_prompt_per_line) if negative.strip() else [OFFICIAL_NEGATIVE]
        if len(negatives) not in (1, len(prompts)):
            raise ValueError(f"{len(prompts)} positive prompts but {len(negatives)} negative lines; give one negative "
                             "line for all prompts or one per prompt")
        encoder = text_encoder.model
        encoder.compute_device = text_encoder.load()  # the host may keep some layers (the token table) off it
        out = mm.intermediate_device()
        pos = encoder.encode(prompts, "positive prompt").to(out)
        neg = encoder.encode(negatives, "negative prompt").to(out)
        if not (bool(torch.isfinite(pos).all()) and bool(torch.isfinite(neg).all())):
            raise ValueError(f"the text encoder {os.path.basename(str(text_encoder.source))} gave NaN or infinite "
                             "embeddings: its weights hold non-finite values (download the file again) or its dtype "
                             "overflows (try dtype fp32 or bf16)")
        # how long each prompt was, in the history for clients (python -m wan_client prints what was cut)
        tokens = [{"which": which, "line": i + 1, "tokens": n, "kept": min(n, TEXT_TOKENS), "truncated": n > TEXT_TOKENS}
                  for which, texts in (("positive", prompts), ("negative", negatives))
                  for i, n in enumerate(encoder.tokenizer.count(t) for t in texts)]
        return {"ui": {"wan_prompt_tokens": tokens},
                "result": ([[pos, {"wan_core_prompts": prompts}]], [[neg, {"wan_core_prompts": negatives}]])}


def embeddings_from_conditioning(conditioning, what: str):
    """The [B, L, 4096] tensor of a CONDITIONING (ours or core's CLIPTextEncode with a Wan text encoder)."""
    if not conditioning:
        raise ValueError(f"the {what} conditioning is empty")
    if len(conditioning) > 1:
        log.warning("%s conditioning has %d entries; Wan uses the first (combine prompts in the text instead)",
                    what, len(conditioning))
    emb = conditioning[0][0]
    if emb.dim() != 3 or emb.shape[-1] != 4096:
        raise ValueError(f"the {what} conditioning has shape {tuple(emb.shape)}; Wan needs umt5-xxl embeddings "
                         "[B, tokens, 4096] (use Wan Encode Prompts or a umt5 text encoder)")
    return emb
