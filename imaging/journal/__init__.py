"""The file journal: segments of file events with content-defined chunks (docs/FORMAT.md,
"File journal"): its records, the chunker, the writer and the replay."""
