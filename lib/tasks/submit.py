"""Putting a task on the pipeline: admit it, then publish its message (a ticket).

Used by `POST /api/tasks` and by services (for their steps, from the producer and from
the worker). A failed publish undoes the admission; an idempotent hit on a task that is
still queued publishes again under the same deduplication id, so a task whose first
publish never happened (a crash between the two) still gets its ticket, and one that was
published is not published twice (QStash deduplicates by id).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from lib.errors import PublishFailed
from lib.qstash.publisher import Publisher
from lib.routing import slot_limit
from lib.settings import Settings
from lib.tasks.admission import Admission, Admitted
from lib.tasks.message import TaskMessage
from lib.tasks.store import TaskStore

logger = logging.getLogger(__name__)


async def submit(
    store: TaskStore, publisher: Publisher, settings: Settings, a: Admission
) -> Admitted:
    """Admit `a` and publish its message (again, for a still queued idempotent hit).

    Raises:
        RateLimited, TaskAlreadyRunning, QueueFull: from the admission.
        PublishFailed: the message was not published and the admission was undone.
    """
    admitted = await store.admit(a)
    if admitted.existing and admitted.position is None:
        return admitted  # it has started (or ended): its message did its work
    if admitted.existing:
        a = replace(a, task_id=admitted.task_id)
    await _publish(store, publisher, settings, a, admitted)
    return admitted


async def _publish(
    store: TaskStore, publisher: Publisher, settings: Settings, a: Admission, admitted: Admitted
) -> None:
    r = admitted.route
    message = TaskMessage.build(a.spec(), r)
    try:
        await publisher.publish_task(
            r,
            message.model_dump(mode="json"),
            task_id=a.task_id,
            slot_limit=slot_limit(settings, r.model_id),
        )
    except Exception as exc:
        # Whatever went wrong, the admission must not outlive the lost message.
        if not isinstance(exc, PublishFailed):
            logger.exception("publish of task %s failed unexpectedly", a.task_id)
        else:
            logger.warning("publish of task %s failed: %s", a.task_id, exc.detail)
        if admitted.existing:
            # The task was admitted (and maybe published) by an earlier request: keep it.
            raise PublishFailed(task_id=a.task_id) from exc
        if await store.abort(a, admitted):
            raise PublishFailed(task_id=a.task_id) from exc
        # Not queued any more: the message did get through (e.g. the reply was lost) and
        # a worker started it, or it was cancelled meanwhile. Undoing nothing is right,
        # and "nothing was charged" would be false: answer with the task as it is.
        logger.warning("task %s left the queue during a failed publish; keeping it", a.task_id)
