"""Each method's loss, one file per method: ``dcdh.py`` (the dual constraint on
class centers and the regression step), ``opqn.py`` (the orthonormal PQ head
and its loss), ``triplet.py`` (the triplet ranking loss; its miners are
models/miners.py), ``ddh.py`` (DDH's Keras loss: cross-entropy, the 0-1 term
and the l2 on the kernels), ``ddah.py`` (DDAH's ``criteria_softmax`` and the
attention modules' ``loss_s``), ``dpsh.py`` (DPSH's pairwise loss over its U
and B tables), ``dsdh.py`` (DSDH's batch step: per-batch classifier, discrete
codes, output gradient)."""
