"""Make `import models` (repo root) and `from weight_fill import ...` (tests/) work
under a plain `pytest`, not only `python -m pytest` from the repo root."""

import sys
from pathlib import Path

for path in (Path(__file__).resolve().parent.parent, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
