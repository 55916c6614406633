from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from domainvlm.retrieval_db.errors import CorruptKnowledgeBaseError, FilterError
from domainvlm.retrieval_db.metadata import MAX_FILTER_FIELDS, MetadataStore


@pytest.fixture
def store() -> MetadataStore:
    store = MetadataStore.empty()
    store.insert(
        [0, 1, 2, 3, 4, 5],
        [
            {"level": "object", "lang": "en", "text": "Flugzeug über Wasser", "n": 1},
            {"level": "scene", "lang": "de", "n": 2},
            {"level": "object", "lang": "de", "flag": True},
            {"level": "scene", "lang": "en", "flag": False, "n": 1.0},
            {"level": "object", "lang": None},
            {"level": "object", "n": "1"},
        ],
    )
    return store


def test_records_round_trip_by_id(store: MetadataStore) -> None:
    assert store.get([2, 99, 0]) == [
        {"level": "object", "lang": "de", "flag": True},
        None,
        {"level": "object", "lang": "en", "text": "Flugzeug über Wasser", "n": 1},
    ]
    assert store.count() == 6
    np.testing.assert_array_equal(store.ids(), [0, 1, 2, 3, 4, 5])


def test_filters_match_json_fields(store: MetadataStore) -> None:
    np.testing.assert_array_equal(store.matching_ids({"level": "object"}), [0, 2, 4, 5])
    np.testing.assert_array_equal(store.matching_ids({"level": "object", "lang": "de"}), [2])
    np.testing.assert_array_equal(store.matching_ids({"lang": ["de", "en"]}), [0, 1, 2, 3])
    # Numbers compare by value, never with strings or booleans.
    np.testing.assert_array_equal(store.matching_ids({"n": 1}), [0, 3])
    np.testing.assert_array_equal(store.matching_ids({"n": "1"}), [5])
    np.testing.assert_array_equal(store.matching_ids({"flag": True}), [2])
    np.testing.assert_array_equal(store.matching_ids({"flag": 1}), [])
    # None: the field is null or missing.
    np.testing.assert_array_equal(store.matching_ids({"lang": None}), [4, 5])
    assert store.matching_ids({"level": "nothing"}).size == 0
    # Any-of lists mix kinds, each keeping its own matching rule.
    np.testing.assert_array_equal(store.matching_ids({"n": [2, "1", True]}), [1, 5])
    np.testing.assert_array_equal(store.matching_ids({"flag": [True, 1.5]}), [2])
    np.testing.assert_array_equal(store.matching_ids({"flag": [False, None]}), [0, 1, 3, 4, 5])


def test_long_any_of_lists_are_one_clause(store: MetadataStore) -> None:
    """SQLite refuses expressions deeper than 1000; 20 000 values for one field must still work."""
    values = [f"lang-{i}" for i in range(20_000)] + ["de"]
    np.testing.assert_array_equal(store.matching_ids({"lang": values}), [1, 2])
    np.testing.assert_array_equal(store.matching_ids({"n": list(range(2, 20_000))}), [1])


def test_too_many_fields_are_refused_with_the_limit(store: MetadataStore) -> None:
    where = {f"field{i}": 1 for i in range(MAX_FILTER_FIELDS)}
    assert store.matching_ids(where).size == 0  # the limit itself works
    with pytest.raises(FilterError, match=f"at most {MAX_FILTER_FIELDS} fields, got 65"):
        store.matching_ids(where | {"one more": 1})


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({}, "empty filter"),
        ({'a"b': 1}, "without quotes"),
        ({"level": []}, "lists no values"),
        ({"level": {"nested": 1}}, "values must be"),
        ({"n": float("nan")}, "finite float"),
    ],
)
def test_bad_filters_are_explained(store: MetadataStore, where: dict, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        store.matching_ids(where)


def test_insert_refuses_duplicates_and_unserialisable_records(store: MetadataStore) -> None:
    with pytest.raises(ValueError, match="already used"):
        store.insert([6, 1], [{}, {}])
    assert store.count() == 6  # the batch was all-or-nothing
    with pytest.raises(ValueError, match="metadata record 1 is not JSON-serialisable"):
        store.insert([7, 8], [{"ok": 1}, {"bad": object()}])
    with pytest.raises(TypeError, match="metadata record 0 must be a dict"):
        store.insert([9], ["text"])
    with pytest.raises(ValueError, match="2 ids but 1 metadata records"):
        store.insert([10, 11], [{}])


def test_delete_reports_which_ids_existed(store: MetadataStore) -> None:
    np.testing.assert_array_equal(store.delete([5, 1, 42]), [1, 5])
    assert store.get([1, 5]) == [None, None]
    assert store.count() == 4


def test_save_and_load_round_trip(store: MetadataStore, tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite"
    store.save(path)
    loaded = MetadataStore.load(path)
    assert loaded.get(range(6)) == store.get(range(6))
    loaded.insert([6], [{"new": True}])  # the loaded copy is private and writable
    assert MetadataStore.load(path).count() == 6


def test_load_names_the_file_when_it_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptKnowledgeBaseError, match=f"{path}.*not an SQLite database"):
        MetadataStore.load(path)


def test_load_names_the_file_when_the_table_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE other (x)")
    connection.close()
    with pytest.raises(CorruptKnowledgeBaseError, match=f"{path}.*no records"):
        MetadataStore.load(path)
