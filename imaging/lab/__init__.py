"""A room of PCs restored from one snapshot at once (docs/LAB.md).

The server multicasts the snapshot's stored chunks (ciphertext, as the repository holds
them) in passes at a rate that follows the bulk of the room; each receiver authenticates
every chunk by its id before it writes it, fills in what it missed by HTTP from the same
server, and verifies what it wrote as a single restore does.
"""
