"""A pool of worker processes for per-clip jobs, in which a crash fails only its own clip.

A decoder crashing on a damaged file (FFmpeg's segfault, an out-of-memory kill) takes its worker process
with it and breaks the whole :class:`concurrent.futures.ProcessPoolExecutor`. :func:`run_jobs` reruns the
jobs that were in flight one by one in a pool of one, so the job that crashes again is known, gets the
caller's ``on_crash`` result, and the rest continue. Workers end with the command (:mod:`sspl.processes`)
and leave Ctrl-C to it: closing the generator stops them at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch

from ..processes import init_worker

__all__ = ["JOBS_PER_WORKER", "run_jobs"]

log = logging.getLogger(__name__)

#: jobs queued per worker: enough to keep processes busy, few enough that a crash has few suspects
JOBS_PER_WORKER = 4

Job = TypeVar("Job")
Result = TypeVar("Result")


def run_jobs(
    jobs: Sequence[Job],
    fn: Callable[[Job], Result],
    workers: int,
    *,
    on_crash: Callable[[Job], Result],
    preload: Sequence[str] = (),
) -> Iterator[Result]:
    """Yield ``fn(job)`` for every job, in completion order, using ``workers`` processes.

    A worker that dies (FFmpeg crashing on a damaged file) breaks the pool: the jobs then in flight are
    rerun one by one in isolation, the one that crashes again yields ``on_crash(job)``, and the rest
    continue. Closing the generator early (Ctrl-C, an error in the caller) stops the workers at once.
    With one worker the jobs run in this process, on one torch thread.

    Args:
        jobs: the jobs, picklable.
        fn: picklable (a module-level function or an instance of a module-level class).
        workers: processes.
        on_crash: the result of a job whose process died on it.
        preload: modules the forkserver imports once for all workers (those ``fn`` needs).
    """
    if workers <= 1:
        yield from _run_here(jobs, fn)
        return
    pending = deque(jobs)
    while pending:
        pool = _pool(workers, preload)
        in_flight: dict[cf.Future, Job] = {}
        suspects: list[Job] = []
        completed = False
        try:
            while pending or in_flight:
                while pending and len(in_flight) < workers * JOBS_PER_WORKER:
                    job = pending.popleft()
                    in_flight[pool.submit(fn, job)] = job
                finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    job = in_flight.pop(future)
                    try:
                        result = future.result()
                    except cf.process.BrokenProcessPool:
                        suspects.append(job)
                        continue
                    yield result
                if suspects:
                    suspects.extend(in_flight.values())
                    in_flight.clear()
                    break
            completed = True
        finally:
            _close_pool(pool, completed)  # left early (Ctrl-C in the caller's loop, an error): at once
        if suspects:
            log.warning("a worker process died; rerunning %d clip(s) one by one", len(suspects))
            yield from _run_isolated(suspects, fn, on_crash, preload)


def _run_here(jobs: Iterable[Job], fn: Callable[[Job], Result]) -> Iterator[Result]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            yield fn(job)
    finally:
        torch.set_num_threads(previous)


def _run_isolated(
    jobs: Iterable[Job],
    fn: Callable[[Job], Result],
    on_crash: Callable[[Job], Result],
    preload: Sequence[str],
) -> Iterator[Result]:
    """Run jobs one at a time in a one-process pool, so a crash points at the job that caused it."""
    pool = _pool(1, preload)
    completed = False
    try:
        for job in jobs:
            try:
                yield pool.submit(fn, job).result()
            except cf.process.BrokenProcessPool:
                yield on_crash(job)
                pool.shutdown(cancel_futures=True)
                pool = _pool(1, preload)
        completed = True
    finally:
        _close_pool(pool, completed)


def _mp_context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that imported the preloaded modules (and torch) once, rather than
        # each importing them again as spawned processes do: start-up falls from about 1.5 s per worker
        # to one import per session. Forking the caller itself is avoided: it may hold threads.
        context.set_forkserver_preload(list(preload))
        return context
    return multiprocessing.get_context("spawn")


def _pool(workers: int, preload: Sequence[str]) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_mp_context(preload),
        initializer=init_worker,
        initargs=(os.getpid(),),
    )


def _close_pool(pool: cf.ProcessPoolExecutor, completed: bool) -> None:
    """Shut a pool down; after a run that ended early (Ctrl-C, an error), at once: pending jobs are
    cancelled and the jobs running are abandoned, as waiting for a long video to finish decoding would
    make Ctrl-C seem to hang. An abandoned job yielded nothing, so the caller's next run redoes it.
    """
    if completed:
        pool.shutdown(cancel_futures=True)
        return
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    processes = list((pool._processes or {}).values())  # no public handle on the workers before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
