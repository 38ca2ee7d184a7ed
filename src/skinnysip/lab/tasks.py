"""What the lab's long-running parts share: ``async with`` over ``start()``/``close()``, and
background tasks kept (so they are not garbage-collected) until they end or ``close`` cancels them."""

from __future__ import annotations

import asyncio
from typing import Any, Self

__all__ = ["TaskOwner"]


class TaskOwner:
    """A base for the lab's parts: ``async with part`` runs ``start()`` then ``close()``;
    ``_spawn(coro)`` runs a task kept in ``_tasks`` until it is done."""

    _tasks: set[asyncio.Task[Any]]

    async def start(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        if not hasattr(self, "_tasks"):
            self._tasks = set()
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
