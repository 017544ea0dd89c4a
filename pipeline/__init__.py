"""The pipeline every script calls: ``train``, ``evaluate`` and their
outputs (JSON, stored codes, plots, the retrieval grid, the HTML report),
on typed options (``pipeline.options``).  It knows no method by name: it
asks the method registry."""
