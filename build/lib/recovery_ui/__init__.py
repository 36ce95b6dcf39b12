"""The Hourglass recovery app (Textual). Calls the engine in worker threads."""
