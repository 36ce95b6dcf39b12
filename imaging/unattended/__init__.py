"""Unattended runs: orders from kernel parameters or a config file, one result line."""
