"""The appliance build pipeline: ``python -m build`` from the repository (docs/APPLIANCE.md).

This package shadows PyPA's ``build`` when run from the repository; it is never installed.
"""
