"""Datasets: readers (one per published layout), transform presets per method,
loaders and samplers.

* ``registry.py``: names -> builders (``build_splits(name, DataRequest)``),
  ``Splits`` and the ``DataFacts`` a method is built from.
* ``faces.py``: DCDH / OPQN face datasets (facescrub, youtube, cfw, vggface2,
  folder, synthetic), on ``ddh.py`` (DDH pickles), ``folders.py`` (identity
  folder trees) and ``synthetic.py`` (built-in procedural faces).
* ``fine_grained.py``: CUB-200-2011 and Stanford Dogs in their official
  release layouts (triplet hashing).
* ``imagelist.py``: DeepHash-pytorch list files (train.txt, database.txt,
  test.txt: an image path and a 0/1 label vector per line).
* ``cifar.py``: CIFAR-10 from torchvision's python batches in DeepHash-pytorch's
  three protocols (cifar10, cifar10-1, cifar10-2).
* ``protocols.py``: the named protocols (sizes, mAP@R, relevance, ties, source)
  and the statement a result carries; ``check.py``: a dataset checked
  against its protocol (check_data.py).
* ``multiview.py``: DCHN's multi-view, multi-label feature sets in the
  published layouts and splits (and a built-in synthetic one), one view at a time.
* ``transforms.py``: one preset per method, each its published pipeline.
* ``samplers.py``: class-balanced and random batch samplers.
* ``loaders.py``: the training, database and query loaders of a run.

Problems a user can fix raise :class:`DatasetError` with a one-line message.
"""

from data import faces, fine_grained, multiview  # noqa: F401  (register their datasets)
from data import imagelist, cifar  # noqa: F401  (after them: --help lists names in this order)
from data.ddh import DDHFaces
from data.faces import locate_faces
from data.errors import DatasetError
from data.loaders import Loaders, make_loaders
from data.registry import (DataFacts, DataRequest, Splits, build_splits, canonical_dataset,
                           dataset_names, dataset_spec, register_dataset)

__all__ = ["DDHFaces", "DataFacts", "DataRequest", "DatasetError", "Loaders", "Splits",
           "canonical_dataset",
           "build_splits", "dataset_names", "dataset_spec", "locate_faces", "make_loaders",
           "register_dataset"]
