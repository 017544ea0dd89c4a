"""The published evaluations of the face baselines, quirks included, one
module per method (``ddh``, ``ddah``, ``dpsh``, ``dsdh``): for reproducing a
number printed by the published code from stored codes.  The toolkit's own
metrics (``utils.retrieval.metrics``) are the reference; each quirk is listed
in docs/differences.md."""


def class_id_codes(path, method: str):
    """Stored codes whose labels are one class id per item (what the published
    DDH and DDAH evaluations take), else one line."""
    from utils.errors import UsageError
    from utils.retrieval.codes_io import load_npz

    z = load_npz(path)
    if z["db_labels"].ndim != 1 or z["query_labels"].ndim != 1:
        raise UsageError(f"{path}: the published {method} evaluation takes one class id per "
                         f"item, not label matrices")
    return z
