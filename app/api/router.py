"""Every router of the service, in one list that `app.main` includes."""

from fastapi import APIRouter

from app.api.routes import cross_entropy, grading, health, ops, softmax, web

ROUTERS: list[APIRouter] = [
    health.router,
    ops.router,
    softmax.router,
    cross_entropy.router,
    grading.router,
    web.router,
]
