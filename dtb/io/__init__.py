"""Run files: the writer, the recorder that feeds it, and readers."""
