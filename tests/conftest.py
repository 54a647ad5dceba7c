"""Fixtures that start the local platform's real services on free ports and stop them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.run.services import Azurite, LocalCloud, MailDev, start_azurite, start_cloud, start_maildev


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding a test marked `slow` run first (stable order otherwise): `make test` hands whole modules to
    its workers (pytest-xdist, --dist loadfile) in this order, so the long ones start early and the workers end
    together instead of one finishing a long module alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    service = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def maildev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailDev]:
    service = start_maildev(tmp_path_factory.mktemp("maildev"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    service = start_cloud(tmp_path_factory.mktemp("cloud"))
    yield service
    service.stop()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
