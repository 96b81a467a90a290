"""Celery with its Redis broker (kombu's list transport), one worker process started in
this process (`app.Worker`, what `celery worker` runs): pool solo, threads or gevent
(`--variant`), acks_late (acked after the task, as the others), results ignored, remote
control, mingle, gossip and heartbeats off. Filled with `apply_async` on one producer.
With gevent, the handler's time.sleep is gevent's (monkey-patched), as in production.

    .venv-bench/bin/python bench/peers/peer_celery.py --variant solo --mode noop --n 20000
"""

from __future__ import annotations

import sys

if "gevent" in sys.argv:  # before anything imports socket, threading or time
    from gevent import monkey

    monkey.patch_all()

import logging
import os
import signal
import threading
import time

from _common import SLEEP_S, Clock, namespace, parse_args, report, wait_acked
from celery import Celery
from redis import Redis

PREFETCH_MULTIPLIER = 4  # Celery's default


def main() -> None:
    args = parse_args(__doc__)
    args.variant = args.variant or "solo"
    logging.basicConfig(level=logging.WARNING)
    ns = namespace(f"celery-{args.variant}")
    prefix = f"{ns}:"
    queue = "bench"
    concurrency = 1 if args.variant == "solo" else args.in_flight
    args.in_flight = concurrency
    app = Celery(ns, broker=args.redis_url, set_as_current=True)
    app.conf.update(
        # kombu's pool holds 10 connections by default: too few for acks from 200 threads.
        broker_transport_options={"global_keyprefix": prefix, "max_connections": concurrency + 10},
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_acks_late=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_disable_rate_limits=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    clock = Clock(args.n)

    @app.task(name="noop")
    def noop(_i: int) -> None:
        clock.begin()
        if args.mode == "io":
            time.sleep(SLEEP_S)
        clock.done()

    redis = Redis.from_url(args.redis_url)
    result: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for i in range(args.n):
                noop.apply_async((i,), producer=producer)
        fill_s = time.perf_counter() - t0

        def all_acked() -> bool:
            with redis.pipeline(transaction=False) as pipe:
                pipe.llen(prefix + queue)
                pipe.hlen(prefix + "unacked")
                waiting, unacked = pipe.execute()
            return waiting == 0 and unacked == 0

        def monitor() -> None:
            try:
                result["end"] = wait_acked(clock, all_acked)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # a warm shutdown, as an operator would

        threading.Thread(target=monitor, daemon=True).start()
        worker = app.Worker(
            hostname=f"{ns}@bench",
            pool_cls=args.variant,
            concurrency=concurrency,
            queues=[queue],
            loglevel="WARNING",
            without_mingle=True,
            without_gossip=True,
            without_heartbeat=True,
            quiet=True,
        )
        worker.start()
    finally:
        keys = list(redis.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            redis.delete(*keys)
        redis.close()
    if "end" not in result:
        raise SystemExit(f"the worker stopped before the end: {clock.count} of {args.n} done")
    report(
        system="celery",
        args=args,
        clock=clock,
        end=result["end"],
        fill_s=fill_s,
        config={
            "broker": "redis (kombu)",
            "pool": args.variant,
            "concurrency": concurrency,
            "prefetch_multiplier": PREFETCH_MULTIPLIER,
            "max_connections": concurrency + 10,
            "acks_late": True,
            "publish": "apply_async, one at a time",
        },
        packages=("celery", "kombu", "redis", "hiredis", "gevent"),
    )


if __name__ == "__main__":
    main()
