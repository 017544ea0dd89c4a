"""Shared pieces that know no method, network or dataset: ``engine/`` (training),
``retrieval/`` (metrics, PQ search, stored codes), ``cli/`` (script edges),
``errors`` and ``atomic`` (files replaced only once fully written)."""
