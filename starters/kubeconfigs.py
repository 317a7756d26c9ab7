"""Client-side checks of what an operator types about kubeconfigs, before anything starts.

The worker resolves credentials itself (activities/kube.py); the CLI only reads the
kubeconfig to catch a wrong path or context early and to list contexts for bulk
onboarding. It never sends anything from the file, only its path and a context name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from fleet.config import Settings
from starters.errors import usage


@dataclass(frozen=True)
class Kubeconfig:
    path: Path
    contexts: tuple[str, ...]
    explicit: bool  # given on the command line (so the credential reference names it)

    def require(self, context: str, *, flag: str = "--context") -> str:
        if context not in self.contexts:
            known = ", ".join(self.contexts) or "none"
            raise usage(f"{flag}: no context {context!r} in {self.path} (contexts: {known})")
        return context


def default_path() -> Path:
    """Where the CLI looks without --kubeconfig: FLOTILLA_KUBECONFIG, the local stack's lab
    kubeconfig, KUBECONFIG (first entry), ~/.kube/config."""
    settings = Settings.from_env()
    if settings.kubeconfig:
        return Path(settings.kubeconfig).expanduser()
    lab = settings.state_dir / "lab" / "kubeconfig"
    if lab.exists():
        return lab
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(env or "~/.kube/config").expanduser()


def load(path: Path | None) -> Kubeconfig:
    """Reads the contexts of a kubeconfig; a missing or malformed file is a usage error."""
    explicit = path is not None
    resolved = (path or default_path()).expanduser().absolute()
    flag = "--kubeconfig" if explicit else "kubeconfig"
    try:
        data = yaml.safe_load(resolved.read_text())
    except FileNotFoundError:
        hint = "" if explicit else " (pass --kubeconfig, or set FLOTILLA_KUBECONFIG)"
        raise usage(f"{flag}: {resolved} does not exist{hint}") from None
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise usage(f"{flag}: cannot read {resolved}: {reason}") from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts", []), list):
        raise usage(f"{flag}: {resolved} is not a kubeconfig")
    contexts = tuple(
        str(c["name"]) for c in data.get("contexts") or [] if isinstance(c, dict) and "name" in c
    )
    return Kubeconfig(resolved, contexts, explicit)
