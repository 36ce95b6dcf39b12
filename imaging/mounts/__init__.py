"""Mounting filesystems: which driver mounts what (:mod:`.drivers`), what is mounted now
(:mod:`.mountinfo`), and mounting and unmounting (:mod:`.mount`)."""
