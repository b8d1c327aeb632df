"""mlpack's build-time library: conversion, optimization, OCI images, bases, targets and delivery.

The `mlpack` CLI (`mlpk.packager.cli`) is a thin layer over this library; nothing here imports click.
"""

__version__ = "0.1.0"
