"""The release stage: what ships to phones, decided after the gate and the benchmark.

``choose`` picks the export (the report's "Which file to ship" calls the same function);
``bundle`` writes the Android bundle from it; ``guide`` renders the bundle's README and Kotlin
example from ``templates/android``; ``golden`` makes the golden image and its tolerance;
``model_card`` writes the run's model card.

May import: ``core`` to ``benchmark``. Only ``report``, the API and the commands import it.
"""
