"""Rows walked user by user in hash order (:mod:`avila.analytics.user_order`): the same users,
rows and time order as sorting by the id, and the id sort again when the hash collides."""

from __future__ import annotations

from datetime import datetime, timedelta

from analytics_data import PROJECT, event

from avila.analytics.common import fragments, where_clause
from avila.analytics.sessions import events_by_user, sessionize, sorted_events, summary
from avila.analytics.user_order import rows_by_user

T0 = datetime(2024, 3, 1)
# Ids of equal length (a colliding "hash" below), unicode, case and prefix neighbours.
USERS = ["ab", "ba", "Ab", "zé", "é", "a", "abc", "ab ", "😀", "x" * 300]


def _rows():
    rows = []
    for i, user in enumerate(USERS):
        for k in range(1 + i % 4):
            rows.append(event(user, T0 + timedelta(minutes=7 * k + i)))
            rows.append(event(user, T0 + timedelta(minutes=7 * k + i), "click"))  # a tie
    rows.append(event("ab", T0 + timedelta(days=2)))
    return rows


def _groups(codes, times):
    """Each user's times in row order, users sorted."""
    out: dict[int, list[int]] = {}
    for c, t in zip(codes.tolist(), times.tolist(), strict=True):
        out.setdefault(c, []).append(t)
    return sorted(out.values())


def test_hash_order_groups_rows_like_the_id_order(load):
    store = load(_rows())
    epoch = fragments(store)["epoch_us"].format("ts")
    sql = f"SELECT user_id, {epoch} AS t FROM events WHERE project_id = '{PROJECT}'"
    table, codes = rows_by_user(store, sql, [], "t", "t")
    assert "user_id" not in table.column_names
    assert int(codes.max()) + 1 == len(USERS)
    times = table.column("t").to_numpy()
    for c in range(len(USERS)):  # each user's rows contiguous and in time order
        mine = times[codes == c]
        assert list(mine) == sorted(mine)
        assert set(codes[codes == c]) == {c}
    assert (codes[1:] >= codes[:-1]).all()
    ids, id_codes = rows_by_user(store, sql, [], "t", "t", key_sql="length(user_id)")
    # A "hash" that collides (equal lengths) falls back to sorting by the id itself.
    assert ids.column_names == ["user_id", "t"]
    assert ids.column("user_id").to_pylist() == sorted(ids.column("user_id").to_pylist())
    assert _groups(id_codes, ids.column("t").to_numpy()) == _groups(codes, times)


def test_sessions_in_hash_order_equal_the_id_order(load):
    store = load(_rows())
    where = where_clause(store, PROJECT, T0 - timedelta(days=1), T0 + timedelta(days=5))
    rows = len(_rows())  # every row is in range: one slice
    ((table, codes),) = list(events_by_user(store, PROJECT, where, rows=rows))
    assert summary(sessionize(table, codes=codes)) == summary(
        sessionize(sorted_events(store, PROJECT, where))
    )
