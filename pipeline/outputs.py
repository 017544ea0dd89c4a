"""What a call writes besides checkpoints, in one place: --json, --save-codes,
--plot / --show-results / --report, and the printed table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from utils.cli.output import format_metrics, write_json
from utils.engine.files import Output, claim_outputs
from utils.report.outputs import ReportOptions, check_outputs


def claim_call_outputs(json_path: Optional[str], save_codes: Sequence[str],
                       report: ReportOptions, inputs=(), outputs: Sequence[Output] = (),
                       continuing: bool = False, overwrite: bool = False, lock: bool = True):
    """Check (and lock) every output of a call before any long work: the
    call's own ``outputs`` (checkpoints), --json, --save-codes, --report;
    none may be one of the ``inputs`` or another output."""
    files = list(outputs)
    if json_path:
        files.append(Output(json_path, "--json"))
    files += [Output(p, "--save-codes") for p in save_codes]
    files += [Output(p, flag) for p, flag in report.outputs()]
    claim = claim_outputs(files, inputs, continuing=continuing, overwrite=overwrite, lock=lock)
    try:
        if report.wanted:
            check_outputs(report)
    except BaseException:
        claim.release()
        raise
    return claim


def text_of(evaluation) -> str:
    """What a script prints for one evaluation: the published script's own
    lines where it has them, else the metrics table."""
    return evaluation.text or format_metrics(evaluation.metrics, evaluation.title)


def json_value(evaluations: Sequence):
    return evaluations[0].metrics if len(evaluations) == 1 else [e.metrics for e in evaluations]


def write_results(evaluations: Sequence, json_path: Optional[str], save_codes: Sequence[str],
                  report: ReportOptions, title: str, settings: dict, value=None) -> None:
    """--json (``value``, else the evaluations' metrics), --save-codes (one
    file per evaluation), plots, grid and report."""
    for path, evaluation in zip(save_codes, evaluations):
        evaluation.save(path)
    if json_path:
        write_json(json_path, json_value(evaluations) if value is None else value)
    if report.wanted:
        from utils.report.outputs import write_outputs

        runs = [(_label(e, task), metrics) for e in evaluations for task, metrics in e.rows]
        labels = [label for label, _ in runs]
        if len(set(labels)) < len(labels):  # e.g. two models of one length: add the files
            runs = [(f"{_label(e, task)} ({Path(e.title.split(' on ')[0]).name})", metrics)
                    for e in evaluations for task, metrics in e.rows]
        tables = [t for e in evaluations for t in e.tables] + [provenance_rows(evaluations)]
        grid = next((e.grid for e in evaluations if e.grid is not None), None)
        write_outputs(report, title, settings, runs, grid, tables)


def _label(evaluation, task) -> str:
    """A legend names the method and bits (and the task), not file names."""
    base = evaluation.label or evaluation.title
    return f"{base} {task}" if task else base


def provenance_rows(evaluations: Sequence) -> tuple:
    """The report's table of how each evaluated model was made."""
    from utils.engine.provenance import summary

    rows = []
    for e in evaluations:
        records = e.metrics.get("provenance") or {"known": False}
        for record in records if isinstance(records, list) else [records]:
            rows.append([e.label or e.title, str(record.get("file", "")), summary(record)])
    return "provenance", ["model", "file", "how it was made"], rows
