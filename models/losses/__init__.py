"""Each method's loss, one file per method: ``dcdh.py`` (the dual constraint on
class centers and the regression step), ``opqn.py`` (the orthonormal PQ head
and its loss), ``triplet.py`` (the triplet ranking loss; its miners are
models/miners.py)."""
