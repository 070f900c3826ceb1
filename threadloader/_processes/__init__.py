"""The process executor: worker processes, their channels, deaths, and the batches' trip through shared memory.

``executor`` routes tickets and collects results; ``handle`` is the parent's
side of one worker process; ``main`` is what runs inside it; ``deaths`` turns a
dead worker's batches into errors; ``shm`` and ``shm_collate`` move batches
through shared memory without names.
"""
