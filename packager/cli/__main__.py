"""`python -m mlpk.packager.cli` runs the CLI, as the `mlpack` console script does."""

from mlpk.packager.cli import console

console()
