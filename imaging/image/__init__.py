"""Images of block devices: what to read (plans, used-block maps), reading and writing
devices fast (blockio, devices), and the backup and restore engines."""
