"""Which prepared splits a run reads once into memory: their size from the Parquet footers, and the blocks
the eval split is shared out by."""
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from domainft.distributed.ingest import _cut, _in_memory_bytes


def _split(d, rows=500, files=3):
    d.mkdir()
    table = pa.table({"input_ids": pa.array([list(range(i % 50 + 5)) for i in range(rows)], pa.list_(pa.int32())),
                      "label": pa.array([i % 3 for i in range(rows)], pa.int64()),
                      "text": pa.array([f"{i}: a long line of text the run never reads " * 20 for i in range(rows)])})
    step = rows // files + 1
    for i in range(files):
        pq.write_table(table.slice(i * step, step), d / f"part-{i}.parquet")
    return table


def test_size_counts_only_the_columns_read_across_every_file(tmp_path):
    table = _split(tmp_path / "train")
    ds = pads.dataset(tmp_path / "train", format="parquet")
    cols = ["input_ids", "label"]
    size = _in_memory_bytes(ds, cols)
    in_memory = table.select(cols).nbytes
    # token ids counted as values x 4 bytes, as Arrow holds them; the unread text column (10x bigger) is not counted
    assert 0.5 * in_memory < size < 2 * in_memory
    assert _in_memory_bytes(ds, cols + ["text"]) > 5 * size


def test_cut_keeps_every_row_in_order_in_at_most_the_blocks_asked():
    table = pa.table({"x": list(range(10))})
    for blocks in (1, 3, 4, 10, 50):
        parts = _cut(table, blocks)
        assert 1 <= len(parts) <= blocks
        assert pa.concat_tables(parts).column("x").to_pylist() == list(range(10))
    assert len(_cut(table.slice(0, 0), 4)) == 1  # an empty split is still one (empty) block
