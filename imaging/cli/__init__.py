"""The `hourglass` command line: `main` gathers one module per command; they share `common`."""
