"""The Hourglass agent on a running Linux host: fanotify on the protected filesystems, the
file journal written into the repository (docs/FORMAT.md, "File journal")."""
