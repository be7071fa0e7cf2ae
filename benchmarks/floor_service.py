"""The framework floor for benchmarks/serving.py: BentoML endpoints that take the same payloads as the
churnguard service and return a constant. Whatever the service costs above this is churnguard's own
work (validation, scoring, explanation, logging); below it nothing written on BentoML can go.

Same BentoML settings as the service (async handlers, the same access-log and worker settings).
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import Response

WORKERS = int(os.environ.get("FLOOR_WORKERS", "1"))
ACCESS_LOG = os.environ.get("FLOOR_ACCESS_LOG", "true") == "true"
RESULT = {
    "customer_id": "floor",
    "churn_probability": 0.5,
    "health_score": 50,
    "alert_tier": "medium",
    "reasons": None,
    "group_scores": None,
    "flags": [],
    "model_version": "floor",
}


@bentoml.service(name="floor", workers=WORKERS, logging={"access": {"enabled": ACCESS_LOG}})
class Floor:
    @bentoml.api(route="/predict")
    async def predict(self, customer: dict[str, Any], explain: bool = True) -> dict[str, Any]:
        return RESULT

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, customers: list[dict[str, Any]], explain: bool = True) -> dict[str, Any]:
        return {"model_version": "floor", "count": len(customers), "results": []}


# The transport alone: a 10,000-row JSON body received as bytes (no parsing at all), a constant answer.
transport = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@transport.post("/receive_batch")
async def receive_batch(request: Request) -> Response:
    body = await request.body()
    return Response(b'{"received":%d}' % len(body), media_type="application/json")


Floor.mount_asgi_app(transport, path="/")
