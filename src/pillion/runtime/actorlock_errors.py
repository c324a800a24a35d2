"""The actor turn lock's error, shared by both twins (``pillion._pure.actorlock`` and
``pillion._ext.actorlock``), so one ``except StackDepthError`` catches either.

Imports nothing from the runtime: the twins import it while ``pillion.runtime`` loads.
"""

from __future__ import annotations

__all__ = ["StackDepthError"]


class StackDepthError(RuntimeError):
    """A reentrant call would nest deeper than ``max_stack_depth`` (Dapr ``ERR_ACTOR_STACK_DEPTH``).

    Raised before anything changes: the chain keeps its turns and the queue is untouched.
    """

    def __init__(self, key, max_stack_depth: int) -> None:
        super().__init__(f"maximum stack depth exceeded ({max_stack_depth}) for actor {key!r}")
        self.key = key
        self.max_stack_depth = max_stack_depth

    def __reduce__(self):
        return type(self), (self.key, self.max_stack_depth)
