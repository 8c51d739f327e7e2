"""The device-to-coordinator assignment (protocols/sharding): every device on exactly one live
member, and moves only where a join or leave forces them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sharding import assign, owner

ids = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
members_st = st.sets(ids, min_size=1, max_size=6)
devices_st = st.sets(ids, min_size=0, max_size=80)


@settings(max_examples=200, deadline=None)
@given(devices_st, members_st)
def test_every_device_is_on_exactly_one_member(devices: set[str], members: set[str]) -> None:
    table = assign(devices, members)
    assert set(table) == members
    owned = [d for ds in table.values() for d in ds]
    assert sorted(owned) == sorted(devices)
    # Deterministic and independent of the order the members are given in.
    assert assign(sorted(devices, reverse=True), sorted(members, reverse=True)) == table


@settings(max_examples=200, deadline=None)
@given(devices_st, members_st, ids)
def test_a_join_moves_devices_only_to_the_newcomer(devices: set[str], members: set[str], new: str) -> None:
    if new in members:
        return
    before = {d: owner(d, members) for d in devices}
    after = {d: owner(d, members | {new}) for d in devices}
    moved = {d for d in devices if before[d] != after[d]}
    assert all(after[d] == new for d in moved)
    assert moved == {d for d in devices if after[d] == new}


@settings(max_examples=200, deadline=None)
@given(devices_st, members_st)
def test_a_leave_moves_only_the_leavers_devices(devices: set[str], members: set[str]) -> None:
    if len(members) < 2:
        return
    leaver = sorted(members)[0]
    before = {d: owner(d, members) for d in devices}
    after = {d: owner(d, members - {leaver}) for d in devices}
    assert {d for d in devices if before[d] != after[d]} == {d for d in devices if before[d] == leaver}
    assert leaver not in after.values()


def test_a_join_moves_about_one_in_n() -> None:
    devices = [f"gw-{i:04d}" for i in range(3000)]
    members = {"c1", "c2", "c3"}
    before = {d: owner(d, members) for d in devices}
    moved = sum(before[d] != owner(d, members | {"c4"}) for d in devices)
    assert 0.2 < moved / len(devices) < 0.3  # 1/4 expected
    shares = [len(ds) for ds in assign(devices, members).values()]
    assert max(shares) - min(shares) < 0.1 * len(devices)  # evenly spread
