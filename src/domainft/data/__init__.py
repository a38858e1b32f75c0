"""Pure data functions (no Ray): what `distributed/datasets.py` runs inside Ray Data for `prepare`.

sources   resolve file / folder / glob / URI inputs, display names, freshness inputs
chunks    cut big inputs into parallel read tasks (JSONL by bytes at newlines, Parquet by row groups)
readers   parse a chunk (JSONL, CSV, TSV, Parquet, folder-per-label text) into good and rejected rows
clean     whitespace / NFKC / HTML cleaning, label values, the 64-bit duplicate hash
labels    label maps (explicit or inferred, sorted) and label_map.json
collect   the driver's streaming pass: counts, rejects, small columns
dedupe, split, balance, plan   the global decisions on small columns, and applying them to batches
tokenize  fast-tokenizer ids (truncation only) as list<int32>
report    data_report.json: build, check the counts, print as a table, fingerprint
augment/  train-split augmentation (separate owner)
"""
