"""Stage 17 experiments: the KV cache's memory and speed, the roofline, speculative decoding,
continuous vs static batching, paged-cache fragmentation, and a load test of the server."""
