"""Fixtures of the firmware tests."""
from __future__ import annotations

import pytest
from firmware_models import FirmwareModels


@pytest.fixture(scope="session")
def firmware_models(zoo, tmp_path_factory):
    return FirmwareModels(zoo, tmp_path_factory.mktemp("firmware_models"))
