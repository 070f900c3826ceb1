"""One worker's runtime, wherever it runs (a thread, a process, the calling thread).

``fetch`` loads and collates a batch; ``intra_op`` gives a worker thread one
torch intra-op thread; ``priority`` lowers a worker's CPU priority;
``ownership`` gives the shared dataset's dict keys a reference from a worker
thread; ``rng_watch`` sees a worker thread draw from torch's default
generator; ``spec`` holds the rules every worker fetches by; ``runtime`` is
the worker itself: its setup, its batches, their timing. User code asks who
a worker is through ``threadloader.worker``.
"""
