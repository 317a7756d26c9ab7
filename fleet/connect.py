"""The one way Flotilla connects to Temporal: CLI, worker, webhook and tests all use it, so
every client has the pydantic converter and, when enabled, tracing."""

from __future__ import annotations

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime


async def connect(
    address: str | None = None, namespace: str | None = None, *, runtime: Runtime | None = None
) -> Client:
    """Connects using the SDK's env config; explicit arguments win over the environment.
    `runtime`: the SDK runtime (the worker's carries its Prometheus metrics)."""
    from fleet.tracing import client_interceptors  # tracing setup is optional and lazy

    config = ClientConfig.load_client_connect_config()
    if address:
        config["target_host"] = address
    if namespace:
        config["namespace"] = namespace
    config.setdefault("target_host", "localhost:7233")
    interceptors: list[Interceptor] = client_interceptors()
    return await Client.connect(
        **config, data_converter=pydantic_data_converter, interceptors=interceptors, runtime=runtime
    )
