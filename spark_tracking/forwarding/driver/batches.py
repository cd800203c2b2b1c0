"""Cutting what a round gathered for one run into ``log_batch`` requests within the store's limits."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from ... import validation


def new_pending() -> dict:
    """What a round gathers for one run: metrics, params, tags and artifacts."""
    return {"metrics": [], "params": {}, "tags": {}, "artifacts": []}


def entities(request: dict) -> int:
    """Metrics, params and tags in a request (what MLflow counts against its limits)."""
    return len(request["metrics"]) + len(request["params"]) + len(request["tags"])


def cut_requests(run: str, data: dict, batch_max_metrics: int, max_values_per_key: int | None) -> list[dict]:
    """Cut one run's pending data into log_batch requests within the store's limits: at most
    ``batch_max_metrics`` metrics, 100 params and tags, 1000 entities in all, and a JSON
    body under 1 MB (``validation``), plus ``max_values_per_key`` when set."""
    requests: list[dict] = []
    current: dict[str, Any] = {"run_id": run, "metrics": [], "params": [], "tags": []}
    size = 0
    per_key: dict[str, int] = defaultdict(int)
    key_cost: dict[str, int] = {}
    budget = validation.MAX_REQUEST_BYTES - 10_000  # the envelope and run id

    def close():
        nonlocal current, size
        if entities(current):
            requests.append(current)
        current = {"run_id": run, "metrics": [], "params": [], "tags": []}
        size = 0
        per_key.clear()

    # metrics come first: while they are cut, a request holds metrics only (entities = metrics)
    most = min(batch_max_metrics, validation.MAX_ENTITIES_PER_BATCH)
    metrics = current["metrics"]
    for point in data["metrics"]:
        key = point[0]
        cost = key_cost.get(key)
        if cost is None:  # the JSON of one metric: key, value, timestamp and step at full length
            cost = key_cost[key] = len(json.dumps(key)) + 110
        if len(metrics) >= most or size + cost > budget or (max_values_per_key and per_key[key] >= max_values_per_key):
            close()
            metrics = current["metrics"]
        metrics.append(point)  # the point tuple itself: no copy the collector must track
        if max_values_per_key:
            per_key[key] += 1
        size += cost
    for kind, pairs in (("params", data["params"]), ("tags", data["tags"])):
        for key, value in pairs.items():
            cost = len(json.dumps(key)) + len(json.dumps(value)) + 30
            if (
                len(current["params"]) + len(current["tags"]) >= validation.MAX_PARAMS_TAGS_PER_BATCH
                or entities(current) >= validation.MAX_ENTITIES_PER_BATCH
                or size + cost > budget
            ):
                close()
            current[kind].append([key, value])
            size += cost
    close()
    return requests
