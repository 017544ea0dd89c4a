"""Stored codes (``evaluation.py --codes``) and stored PQ features
(``opqn_main.py -e --features``): the metrics of files, no network.  Nothing
here imports torch on the CPU path of stored codes."""

from __future__ import annotations

from typing import Sequence

from utils.errors import UsageError
from utils.report.results import Evaluation


def evaluate_codes_file(path, metrics, device=None) -> dict:
    """Every Hamming metric of a stored-codes file (no torch on the CPU path)."""
    from utils.retrieval.codes_io import load_npz
    from utils.retrieval.metrics import evaluate_codes

    z = load_npz(path)
    try:
        return evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"],
                              radius=metrics.radius, device=device, backend=metrics.backend,
                              **metrics.ranking_kwargs())
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc


def evaluate_features_file(path, metrics) -> dict:
    """OPQN's stored features: every score-ranking metric of the PQ search."""
    from utils.retrieval.codes_io import load_npz
    from utils.retrieval.pq import evaluate_pq

    z = load_npz(path, required=("query_features", "query_labels", "db_labels", "mlp"))
    if "db_features" in z:
        db = z["db_features"]
    elif "db_index" in z:
        db = z["db_index"].T  # stored as [M, N], as the official indexing returns it
    else:
        raise UsageError(f"{path} lacks array db_features (or db_index)")
    try:
        return evaluate_pq(z["query_features"], db, z["query_labels"], z["db_labels"], z["mlp"],
                           **metrics.ranking_kwargs())
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc


def evaluate_stored(paths: Sequence, kind: str, metrics, json_path=None, report=None,
                    device=None) -> list:
    """Evaluations of stored codes (``kind`` "codes") or PQ features
    ("features"), with --json and the report options written."""
    from pipeline.outputs import claim_call_outputs, write_results
    from utils.report.outputs import ReportOptions

    report = report or ReportOptions()
    if report.show_results:
        raise UsageError(f"--show-results needs images: evaluate a checkpoint on a dataset "
                         f"(stored {kind} hold none)")
    claim = claim_call_outputs(json_path, (), report, inputs=[(p, f"--{kind}") for p in paths])
    try:
        out = []
        for path in paths:
            result = evaluate_codes_file(path, metrics, device) if kind == "codes" else \
                evaluate_features_file(path, metrics)
            # a stored file records numbers only: how the codes were made is the user's to say
            result["provenance"] = {"known": False, "file": str(path), "stored": kind}
            result["protocol"] = stored_statement(path, result, metrics)
            out.append(Evaluation(title=f"{kind} {path}", metrics=result, rows=[(None, result)],
                                  label=f"{result.get('bits')} bits ({path})"))
        write_results(out, json_path, (), report, f"stored {kind}: {' '.join(map(str, paths))}",
                      {kind: " ".join(map(str, paths))})
        return out
    finally:
        claim.release()


def stored_statement(path, result: dict, metrics) -> dict:
    """The protocol of stored codes: the database and queries the file holds,
    ranked by the toolkit's rules (the file names no protocol)."""
    from data.protocols import NO_RELEVANT, NO_RELEVANT_SKIPPED, TIES, _file_record

    return {"name": None, "summary": f"the database and queries stored in {path}",
            "found": {"database": result.get("num_database"), "queries": result.get("num_queries")},
            "map_at": "all", "relevance": "equal class ids, or label vectors sharing a label",
            "no_relevant": NO_RELEVANT_SKIPPED if metrics.skip_no_relevant else NO_RELEVANT,
            "ties": TIES, "files": [_file_record(str(path))]}
