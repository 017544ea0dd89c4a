"""Retrieval: Hamming-ranking and score-ranking metrics (``metrics``, with the
numba kernel ``_hamming_kernel``), product-quantization search (``pq``) and the
stored-codes file format (``codes_io``)."""
