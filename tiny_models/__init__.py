"""Tiny Wan models with random weights, written in the exact layouts of the real files.

Used by the tests (parity, file layouts) and by the stand-in run of the main job when the real
checkpoints are absent (``stand_ins.py``). Sizes follow the real models where detectors need it
(head size 128, text width 4096); everything else is small.
"""
