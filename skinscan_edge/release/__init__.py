"""The release stage: what ships to phones, decided after the gate and the benchmark.

``choose`` picks the export (the report's "Which file to ship" calls the same function);
``bundle`` writes the Android bundle from it; ``guide`` renders the bundle's README and Kotlin
example; ``golden`` makes the golden image and its tolerance. It reads the run's files through
``runfiles`` and the exports through the manifest; nothing below it imports it.
"""
