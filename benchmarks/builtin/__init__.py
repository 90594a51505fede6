"""The built-in embeddings and methods, registered on import (in this order: an embedding before the
embeddings and methods that name it)."""
from benchmarks.builtin import embeddings, fusion, meta, methods, text

__all__ = ["embeddings", "text", "meta", "fusion", "methods"]
