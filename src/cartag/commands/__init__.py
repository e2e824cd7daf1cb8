"""Sub-commands of the ``cartag`` CLI, one Typer app per module, registered in cli.py.

Like cli.py they only translate arguments and errors; the work lives in plain functions.
"""
