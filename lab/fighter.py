"""Another controller, for testing fights: keeps setting one field of one object through
the lab's API with its own field manager (a merge patch every `every` seconds), the way a
second operator or an autoscaler that disagrees with Git would.

    with Fighter(api_client, "/api/v1/namespaces/a/resourcequotas/q",
                 {"spec": {"hard": {"pods": "99"}}}, manager="quota-tuner"):
        ...
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from kubernetes import client


class Fighter:
    def __init__(
        self,
        api: client.ApiClient,
        path: str,
        patch: dict[str, Any],
        *,
        manager: str,
        every: float = 0.5,
    ) -> None:
        self.api, self.path, self.patch, self.manager, self.every = api, path, patch, manager, every
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"fighter-{manager}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.api.call_api(
                    *self.api.param_serialize(
                        method="PATCH",
                        resource_path=self.path,
                        query_params=[("fieldManager", self.manager)],
                        header_params={
                            "Content-Type": "application/merge-patch+json",
                            "Accept": "application/json",
                        },
                        body=self.patch,
                        auth_settings=["BearerToken"],
                    )[:4]
                ).read()
                self.writes += 1
            except Exception:  # the lab restarting, a conflict: try again next round
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> Fighter:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
