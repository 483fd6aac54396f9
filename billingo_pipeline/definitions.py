"""The code location's single entry point (workspace.yaml and ``[tool.dg]`` in pyproject.toml name it).

Every definition lives under ``defs/`` and is found there by ``dg.load_from_defs_folder``, as
``dg dev``, ``dg check defs`` and ``dg list defs`` find it.
"""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
