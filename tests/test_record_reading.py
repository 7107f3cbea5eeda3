"""records.read_record: the one reader of run and benchmark records, one error policy."""

import json

import pytest

from esdlib.bench import load_bench
from esdlib.train.records import RecordError, load_record, read_record


@pytest.mark.parametrize("schema", ["run_record", "bench_record"])
def test_bad_json_and_invalid_records_are_one_line_naming_the_file(tmp_path, schema):
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1,')
    with pytest.raises(RecordError, match=r"broken\.json: not valid JSON"):
        read_record(broken, schema)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"kind": "other"}))
    with pytest.raises(RecordError, match=r"^.*foreign\.json: invalid (run|benchmark) record"):
        read_record(foreign, schema)
    assert read_record(foreign, schema, skip_other_json=True) is None


def test_load_record_and_load_bench_read_through_read_record(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(RecordError, match=r"x\.json: not valid JSON"):
        load_record(tmp_path / "x.json")
    with pytest.raises(RecordError, match=r"x\.json: not valid JSON"):
        load_bench(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_record(tmp_path / "missing.json")
