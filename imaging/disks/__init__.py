"""Disks: discovery, partition tables, used-block maps, whole-disk backup and restore."""
