"""One epoch of batches: its plan, its pool, the iterator that issues tickets and yields batches in order.

``plans`` makes what an epoch starts with (its number, index batches, fetch
rules); ``pools`` starts the worker pool, new or kept; ``choosing`` is the
default mode's pool, which measures threads, replicas and processes and keeps
the fastest, by ``choice``'s rule, first against ``owner_probe``'s yardstick;
``_epoch.scheduler`` holds the epoch iterators, which issue tickets through
``dispatch`` (one strategy per dataset style), keep ``progress`` and hold
results in the ``reorder`` buffer. The executors (``_threads.executor``,
``_processes.executor``) are below this package; the facade above it.
"""
