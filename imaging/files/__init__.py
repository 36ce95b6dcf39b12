"""File-level restore: browse any snapshot, list every version of a file, bring files back.

A partition of a snapshot is served as a read-only file by a FUSE server process
(:mod:`imaging.files.server`) that fetches chunks on demand through a cache; the file is
attached to a read-only loop device and mounted read-only with the kernel's own driver
(or a FUSE driver: ntfs-3g, fusefat, exfat-fuse). docs/FILES.md tells the whole story.
"""
