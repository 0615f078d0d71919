"""torchvision datasets that download once when online, and fail fast with a fix when not.

torchvision retries unreachable mirrors for a long time before giving up; on an offline
machine that looks like a hang. We look for the files first, then probe the download hosts
with a short timeout, and only then let torchvision download.
"""

from __future__ import annotations

from urllib.parse import urlparse

from trainlab.utils.internet import host_reachable


class DatasetUnavailableError(RuntimeError):
    """The dataset is not on disk and cannot be downloaded from here."""


def _download_urls(dataset_class) -> list[str]:
    mirrors = getattr(dataset_class, "mirrors", None)  # MNIST, FashionMNIST
    url = getattr(dataset_class, "url", None)  # CIFAR
    return list(mirrors) if mirrors else [url] if url else []


def load_torchvision_split(class_name: str, root: str, train: bool, download: bool = True):
    """Return a torchvision dataset, downloading it into `root` only if needed and possible."""
    import torchvision.datasets as tvd

    dataset_class = getattr(tvd, class_name)
    try:  # already on disk: no network at all
        return dataset_class(root=root, train=train, download=False)
    except RuntimeError:
        pass
    urls = _download_urls(dataset_class)
    fix = (
        f'Download it once on a machine with internet access (python -c "import '
        f"torchvision.datasets as d; d.{class_name}(root='{root}', download=True)\") and copy "
        f"'{root}' here, point data.source.root at an existing copy, or use an embedded source "
        f"(data=mnist5k or data=digits), which needs no download."
    )
    if not download:
        raise DatasetUnavailableError(
            f"{class_name} is not under data.source.root={root!r} and data.source.download=false. {fix}"
        )
    if urls and not any(host_reachable(u) for u in urls):
        raise DatasetUnavailableError(
            f"{class_name} is not under data.source.root={root!r} and its download hosts "
            f"({', '.join(urlparse(u).hostname or u for u in urls)}) cannot be reached: this "
            f"machine looks offline. {fix}"
        )
    try:
        return dataset_class(root=root, train=train, download=True)
    except Exception as error:  # network failed mid-way, a mirror is down, ...
        raise DatasetUnavailableError(
            f"Downloading {class_name} into {root!r} failed: {error}. {fix}"
        ) from error
