"""The thread executor: worker threads over one task queue (or one per worker), one result queue."""
