"""Everything between files on disk and device batches."""
