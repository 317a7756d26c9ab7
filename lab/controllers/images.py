"""Simulated image pulls: which references parse, which images exist, what the kubelet says.

References follow the distribution/reference grammar the kubelet parses with
(`[domain[:port]/]path[:tag][@digest]`, lower-case path components, at most 255
characters for the name). An unparseable reference never gets pulled: the container waits
with InvalidImageName. A parseable reference is missing when its tag is `broken` or
starts with `broken-`, or when the cluster's `image-missing` fault lists it: the pull
fails (ErrImagePull), then the kubelet backs off (ImagePullBackOff) and retries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
)
_REFERENCE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
NAME_MAX = 255

# The kubelet's back-off between pull attempts: 10s doubling up to 300s.
BACKOFF_INITIAL, BACKOFF_MAX = 10.0, 300.0

INVALID, PULL_ERROR, PULL_BACKOFF = "InvalidImageName", "ErrImagePull", "ImagePullBackOff"


@dataclass(frozen=True)
class Reference:
    """A parsed reference in its normalized form (`docker.io/library/nginx:latest`)."""

    normalized: str


def parse(image: str) -> Reference | str:
    """The normalized reference, or the parse error the kubelet reports."""
    match = _REFERENCE.match(image)
    if match is None:
        lowered = _REFERENCE.match(image.lower())
        if lowered is not None and image.lower() != image:
            return f"invalid reference format: repository name ({image}) must be lowercase"
        return "invalid reference format"
    name = match["name"]
    if len(name) > NAME_MAX:
        return "invalid reference format: repository name must not be more than 255 characters"
    domain = match["domain"]
    if domain is None or ("." not in domain and ":" not in domain and domain != "localhost"):
        domain, path = "docker.io", name
    else:
        path = name[len(domain) + 1 :]
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    tag = match["tag"] or ("" if match["digest"] else "latest")
    normalized = f"{domain}/{path}" + (f":{tag}" if tag else "")
    if match["digest"]:
        normalized += f"@{match['digest']}"
    return Reference(normalized)


def invalid_message(image: str, error: str) -> str:
    """The waiting message (and InspectFailed event) for an unparseable reference."""
    return (
        f'Failed to apply default image tag "{image}": '
        f'couldn\'t parse image name "{image}": {error}'
    )


def pull_error(ref: Reference) -> str:
    """What containerd answers when the image does not exist."""
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref.normalized}": '
        f'failed to resolve reference "{ref.normalized}": {ref.normalized}: not found'
    )


def marked_broken(image: str) -> bool:
    """`nginx:broken`, `repo/app:broken-1`: the lab's never-pullable tags."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0]
    tag = name.split(":", 1)[1] if ":" in name else ""
    return tag == "broken" or tag.startswith("broken-")


def missing(image: str, ref: Reference, marked: frozenset[str]) -> bool:
    """Whether pulling `image` fails: a broken tag, or listed (as written or normalized)."""
    return marked_broken(image) or image in marked or ref.normalized in marked
