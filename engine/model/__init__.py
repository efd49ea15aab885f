"""The transformer both stages share: config, layers, attention, KV cache, embedding, sampling, strict loader."""
