"""From uint8 pixels to tensors and back out of a model: the in-memory image store, tensor augmentation
and normalisation, batched inference and the on-disk feature cache. Training and evaluation both sit
above this folder; it imports neither."""
