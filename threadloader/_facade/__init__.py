"""The parts of the ``DataLoader`` facade: its arguments, torch's attributes, its seed, checkpoints, warnings.

``options`` checks the constructor's arguments by torch's rules and makes the
default samplers; ``compat`` gives the loader the attributes torch's code and
the frameworks read, ``len()`` and pickling; ``seeding`` keeps the base seed
and draws from torch's generator where torch's loader draws; ``resume``
encodes and restores ``state_dict()``; ``advice`` words the warnings about how
a loader is used. Each takes values from the loader; none imports it.
"""
