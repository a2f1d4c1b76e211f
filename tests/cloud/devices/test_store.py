"""The device part of the store on real databases: tags, filters, pages, and the state columns later filled
from MQTT."""

from __future__ import annotations

import pytest
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.store.device_records import Device
from edgewise.cloud.store.sql import SqlStore

from tests.cloud.store.conftest import db_url, store

__all__ = ["db_url", "store"]


def test_create_get_and_duplicates(store: SqlStore) -> None:
    created = store.create_device("cam-1", tags={"site": "berlin"})
    assert store.get_device("cam-1") == created
    with pytest.raises(ConflictError, match="exists already"):
        store.create_device("cam-1")
    with pytest.raises(NotFoundError, match="no device 'cam-2'"):
        store.get_device("cam-2")


def test_tag_filters_and_pages(store: SqlStore) -> None:
    for index in range(5):
        store.create_device(f"d{index}", tags={"tier": "prod" if index % 2 else "dev", "rack": str(index)})
    assert [d.id for d in store.list_devices(tags={"tier": "prod"}).items] == ["d1", "d3"]
    assert [d.id for d in store.list_devices(tags={"tier": "dev", "rack": "4"}).items] == ["d4"]
    assert [d.id for d in store.list_devices(tags={"rack": None}).items] == ["d0", "d1", "d2", "d3", "d4"]
    first = store.list_devices(page_size=2)
    second = store.list_devices(page_size=2, page_token=first.next_page_token)
    third = store.list_devices(page_size=2, page_token=second.next_page_token)
    assert [d.id for page in (first, second, third) for d in page.items] == ["d0", "d1", "d2", "d3", "d4"]
    assert third.next_page_token is None


def test_set_and_remove_tags_then_delete(store: SqlStore) -> None:
    store.create_device("cam", tags={"a": "1", "b": "2"})
    assert store.set_device_tags("cam", set={"b": "3", "c": "4"}, remove=["a", "missing"]).tags == {"b": "3", "c": "4"}
    with pytest.raises(InvalidInputError, match="list of tag keys"):
        store.set_device_tags("cam", remove="b")
    store.delete_device("cam")
    with pytest.raises(NotFoundError, match="no devices are registered"):
        store.set_device_tags("cam", set={"x": "y"})


def test_state_columns_change_only_where_given(store: SqlStore) -> None:
    store.create_device("edge")
    report = {"lastDesiredVersion": 3, "lastDesiredStatus": {"code": 200}}
    assert store.update_device_state("edge", status="online", reported=report, seen_at=1000.0)
    assert store.update_device_state("edge", desired_version=4)
    device = store.get_device("edge")
    assert (device.status, device.last_seen_at, device.desired_version) == ("online", 1000.0, 4)
    assert device.reported == report and device.reported_version == 3
    assert Device.from_dict(device.to_dict()) == device
    assert store.update_device_state("edge", status="offline", seen_at=1001.0)
    assert store.get_device("edge").reported == report
    assert not store.update_device_state("unknown", status="online")
    with pytest.raises(InvalidInputError, match="online, offline"):
        store.update_device_state("edge", status="sleeping")
