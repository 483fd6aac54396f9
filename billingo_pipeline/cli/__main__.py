"""`python -m billingo_pipeline.cli`: the same CLI as the `billingo-pipeline` entry point."""

from . import main

main()
