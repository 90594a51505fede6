"""One-off studies beside the benchmark: sampler and training speed, duplicates' effect, text encoders."""
