"""FastAPI routers, one per resource: systems, agents and pools, buffers, queues, signals,
code objects, and inspection of every layer."""

from rocr.service.routes import agents, buffers, code, copies, inspect, queues, signals, systems

ROUTERS = [
    systems.router,
    agents.router,
    buffers.router,
    queues.router,
    signals.router,
    code.router,
    inspect.router,
    copies.router,
]

__all__ = ["ROUTERS"]
