"""Drop-in replacements for the losses and scoring functions of the libraries people train
rankers with. Each submodule imports its library and fails with an ImportError naming the
package when it is missing; nothing here is imported by ``import kdops``.

- ``kdops.integrations.sentence_transformers``: dense ``MarginMSELoss``; multi-vector
  (ColBERT) scorers for the losses, the evaluators and encoded outputs, and losses for
  ``MultiVectorEncoder``; ``patch()`` / ``unpatch()`` swap them into the installed library.
- ``kdops.integrations.pylate``: ColBERT scoring (a ``score_metric`` for PyLate's losses),
  distillation with PyLate's conventions, drop-ins for its ``Distillation``, ``Contrastive``
  and ``CachedContrastive`` losses; ``patch()`` / ``unpatch()`` swap them into PyLate.
- ``kdops.integrations.transformers``: a loss hook for ``transformers.Trainer``.
"""
