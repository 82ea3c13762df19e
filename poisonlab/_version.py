"""The package's version and the versions of the documents it writes: one home for each.

``__version__`` is what ``poisonlab --version`` prints and what results.json and a
baseline record as ``poisonlab_version``; the schema versions are the layouts of
results.json (schemas/results.schema.json) and of a baseline file that this poisonlab
reads and writes.
"""

from __future__ import annotations

__version__ = "0.1.0"
#: The version of results.json's layout (schemas/results.schema.json).
RESULTS_SCHEMA_VERSION = 1
#: The version of a baseline file's layout (``poisonlab baseline``).
BASELINE_SCHEMA_VERSION = 1
