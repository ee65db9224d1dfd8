"""GGUF files: memory-mapped reading, vectorised torch dequantization, layers that stay quantized."""
