"""The appliance build pipeline (see build/README.md)."""
