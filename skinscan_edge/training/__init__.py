"""Images to a trained run: the InceptionV3 model (``model``), two-phase fine-tuning
(``fine_tune``), phases on cached activations (``features``), mixed precision (``precision``) and
where training runs (``distribute``).

May import: ``core``, ``data``.
"""
