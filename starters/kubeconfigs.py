"""Client-side checks of what an operator types about kubeconfigs, before anything starts.

The worker resolves credentials itself (activities/kube.py); the CLI only reads the
kubeconfig to catch a wrong path or context early and to list contexts for bulk
onboarding, through the same resolver (fleet/kubeconfig.py), so the context it checks is
the one the worker opens. It never sends anything from the file, only its path and a
context name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet import kubeconfig
from starters.errors import usage


@dataclass(frozen=True)
class Kubeconfig:
    path: str  # the file, or the `:`-separated list of files, the contexts come from
    contexts: tuple[str, ...]
    explicit: bool  # given on the command line (so the credential reference names it)

    def require(self, context: str, *, flag: str = "--context") -> str:
        if context not in self.contexts:
            known = ", ".join(self.contexts) or "none"
            raise usage(f"{flag}: no context {context!r} in {self.path} (contexts: {known})")
        return context


def load(path: Path | None) -> Kubeconfig:
    """Reads the contexts of `path`, or without it of the worker's default kubeconfig in the
    order fleet/kubeconfig.py documents (a `KUBECONFIG` list merged as kubectl does); a
    missing or malformed file is a usage error."""
    explicit = path is not None
    source = str(path.expanduser().absolute()) if path is not None else kubeconfig.default_source()
    flag = "--kubeconfig" if explicit else "kubeconfig"
    try:
        config = kubeconfig.load(source)
    except kubeconfig.KubeconfigError as exc:
        missing = "does not exist" in str(exc)
        hint = "" if explicit or not missing else " (pass --kubeconfig, or set FLOTILLA_KUBECONFIG)"
        raise usage(f"{flag}: {exc}{hint}") from None
    return Kubeconfig(source, tuple(kubeconfig.contexts(config)), explicit)
