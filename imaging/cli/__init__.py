"""The `hourglass` command line."""
