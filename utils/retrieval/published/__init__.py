"""The published evaluations of the face baselines, quirks included, one
module per method (``ddh``, ``ddah``, ``dpsh``, ``dsdh``): for reproducing a
number printed by the published code from stored codes.  The toolkit's own
metrics (``utils.retrieval.metrics``) are the reference; each quirk is listed
in docs/differences.md."""
