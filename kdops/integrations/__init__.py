"""Drop-in replacements for the losses and scoring functions of the libraries people train
rankers with. Each submodule imports its library and fails with an ImportError naming the
package when it is missing; nothing here is imported by ``import kdops``.

- ``kdops.integrations.sentence_transformers``: dense ``MarginMSELoss``; multi-vector
  (ColBERT) scorers for the losses, the evaluators and encoded outputs, and losses for
  ``MultiVectorEncoder``.
- ``kdops.integrations.pylate``: ColBERT scoring (a ``score_metric`` for PyLate's losses) and
  distillation with PyLate's conventions.
- ``kdops.integrations.transformers``: a loss hook for ``transformers.Trainer``.
"""
