"""Writes crates/data/tests/fixtures/columnar/: Parquet files, `datasets` `save_to_disk` folders, a `datasets` cache
folder and a single `.arrow` file, each beside the CSV/JSONL/CoNLL file with the same records, for crates/data/tests/columnar.rs.

Run with the data reference venv (scripts/reference/setup.sh data; pyarrow 26.0.1, datasets 5.2.0):
    .venv-data/bin/python scripts/reference/gen_parquet_fixtures.py

The Parquet files are written the way Hugging Face datasets are published: `Dataset.to_parquet` (pyarrow's
writer, snappy, one row group per `batch_size` rows, the features in the schema's "huggingface" metadata).
The equivalents are written by the same library from the same Dataset (`to_json`, `to_csv`), with ClassLabel
integers turned into their names by `ClassLabel.int2str`, so the tests compare our reader with the reference.
Bad files: a truncated Parquet file, one whose data page of row group 1 / column "text" is overwritten, a text
column of integers, and a null label in row group 1.
"""

import csv
import json
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "data" / "tests" / "fixtures" / "columnar"

TEXTS = [
    "A gripping, beautifully shot film.",
    'She said "wow"\nand left, happy.',
    "Dull. Two hours I will never get back.",
    "Ünïcödé reviews: 映画は最高でした 🎬",
    "  leading and trailing spaces  ",
    "Not bad, not great; fine.",
    "The plot, frankly, made no sense.",
    "I laughed, I cried, I bought the DVD.",
    "Tab\tinside the text",
    "Worst sequel ever",
    "An instant classic.",
]
LABELS = [1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1]


def jsonl(ds, path):
    ds.to_json(path, lines=True, force_ascii=False)


def named(ds, column):
    """The Dataset with a ClassLabel (or list of ClassLabel) column replaced by its names."""
    feature = ds.features[column]
    if isinstance(feature, ClassLabel):
        names = [feature.int2str(v) for v in ds[column]]
    else:
        names = [[feature.feature.int2str(v) for v in row] for row in ds[column]]
    return ds.remove_columns(column).add_column(column, names)


def sentiment():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"]), "idx": Value("int32")})
    ds = Dataset.from_dict({"text": TEXTS, "label": LABELS, "idx": list(range(len(TEXTS)))}, features=features)
    ds.to_parquet(OUT / "sentiment.parquet", batch_size=4)
    meta = pq.ParquetFile(OUT / "sentiment.parquet").metadata
    assert meta.num_row_groups == 3, meta.num_row_groups
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    pq.write_table(ds.data.table, OUT / "sentiment_zstd.parquet", row_group_size=5, compression="zstd")
    jsonl(named(ds, "label"), OUT / "sentiment.jsonl")
    # save_to_disk: a Dataset in two shards, a DatasetDict, and one shard as a single .arrow file.
    shutil.rmtree(OUT / "sentiment_saved", ignore_errors=True)
    ds.save_to_disk(OUT / "sentiment_saved", num_shards=2)
    shutil.rmtree(OUT / "sentiment_dict", ignore_errors=True)
    DatasetDict({"train": ds.select(range(8)), "test": ds.select(range(8, len(ds)))}).save_to_disk(
        OUT / "sentiment_dict"
    )
    jsonl(named(ds.select(range(8)), "label"), OUT / "sentiment_train.jsonl")
    jsonl(named(ds.select(range(8, len(ds))), "label"), OUT / "sentiment_test.jsonl")
    # A Hugging Face hub dataset's layout: data/{split}-NNNNN-of-NNNNN.parquet, the train split in two shards.
    hub = OUT / "sentiment_hub"
    shutil.rmtree(hub, ignore_errors=True)
    (hub / "data").mkdir(parents=True)
    for i in range(2):
        shard = ds.select(range(8)).shard(num_shards=2, index=i, contiguous=True)
        shard.to_parquet(hub / "data" / f"train-{i:05d}-of-00002.parquet")
    ds.select(range(8, len(ds))).to_parquet(hub / "data" / "test-00000-of-00001.parquet")
    shutil.copy(OUT / "sentiment_saved" / "data-00001-of-00002.arrow", OUT / "sentiment_shard1.arrow")
    jsonl(named(ds.select(range(6, len(ds))), "label"), OUT / "sentiment_shard1.jsonl")
    return ds


def cache_folder():
    """A `datasets` cache folder as `load_dataset` leaves it: the hub layout's shards loaded with the "parquet"
    builder, whose cache folder holds dataset_info.json, parquet-train.arrow and parquet-test.arrow."""
    import tempfile

    hub = OUT / "sentiment_hub" / "data"
    files = {"train": sorted(str(p) for p in hub.glob("train-*.parquet")), "test": [str(hub / "test-00000-of-00001.parquet")]}
    with tempfile.TemporaryDirectory() as tmp:
        datasets.load_dataset("parquet", data_files=files, cache_dir=tmp)
        (folder,) = [p.parent for p in Path(tmp).rglob("dataset_info.json")]
        out = OUT / "sentiment_cache"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for f in sorted(folder.iterdir()):
            if f.suffix in (".arrow", ".json"):
                shutil.copy(f, out / f.name)


def pairs_regression():
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": Value("float32")})
    ds = Dataset.from_dict(
        {
            "sentence1": ["A man plays a guitar.", "A cat sleeps.", "Kids run in a park.", "Rain falls."],
            "sentence2": ["Someone plays music.", "A dog barks.", "Children are playing outside.", "It rains."],
            "label": [3.8, 0.25, 4.2, 5.0],
        },
        features=features,
    )
    ds.to_parquet(OUT / "stsb.parquet", batch_size=2)
    ds.to_csv(OUT / "stsb.csv", index=False)


def multi_label():
    features = Features({"text": Value("string"), "labels": List(ClassLabel(names=["anger", "joy", "sadness"]))})
    ds = Dataset.from_dict(
        {"text": ["so happy and sad", "furious", "tears of joy", "meh"], "labels": [[1, 2], [0], [2, 1], [2]]},
        features=features,
    )
    ds.to_parquet(OUT / "multi.parquet")
    jsonl(named(ds, "labels"), OUT / "multi.jsonl")


def ner():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = Features({"id": Value("string"), "tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=tags))})
    sentences = [
        (["John", "Smith", "lives", "in", "New", "York", "."], [1, 2, 0, 0, 3, 4, 0]),
        (["Hello", "world"], [0, 0]),
        (["Ada", "visited", "Paris"], [1, 0, 3]),
        (["Ünïcödé", "Kraków"], [0, 3]),
        (["Nothing", "here", "at", "all"], [0, 0, 0, 0]),
    ]
    ds = Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(sentences))],
            "tokens": [s[0] for s in sentences],
            "ner_tags": [s[1] for s in sentences],
        },
        features=features,
    )
    ds.to_parquet(OUT / "ner.parquet", batch_size=2)
    with open(OUT / "ner.conll", "w", encoding="utf-8") as f:
        for row in named(ds, "ner_tags"):
            for tok, tag in zip(row["tokens"], row["ner_tags"]):
                f.write(f"{tok}\t{tag}\n")
            f.write("\n")
    # String tags (no ClassLabel) read the same.
    ds_str = named(ds, "ner_tags")
    ds_str.to_parquet(OUT / "ner_str.parquet")


def sft():
    chats = [
        [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        [{"role": "user", "content": "Ünïcödé\nline two"}, {"role": "assistant", "content": "ok"}],
    ]
    ds = Dataset.from_dict({"messages": chats})
    ds.to_parquet(OUT / "sft_chat.parquet", batch_size=2)
    jsonl(ds, OUT / "sft_chat.jsonl")
    pc = Dataset.from_dict(
        {"prompt": ["Translate: cat", "Capital of France?"], "completion": [" chat", " Paris"], "id": [7, 8]}
    )
    pc.to_parquet(OUT / "sft_pc.parquet")
    jsonl(pc, OUT / "sft_pc.jsonl")


def bad_files():
    good = (OUT / "sentiment.parquet").read_bytes()
    (OUT / "bad_truncated.parquet").write_bytes(good[: len(good) // 2])
    # Garbage over the compressed values of row group 1, column "text" (after its page header).
    col = pq.ParquetFile(OUT / "sentiment.parquet").metadata.row_group(1).column(0)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    data = bytearray(good)
    body = start + 24
    for i in range(body, start + col.total_compressed_size):
        data[i] = 0xFF
    (OUT / "bad_page.parquet").write_bytes(bytes(data))
    pq.write_table(pa.table({"text": pa.array([1, 2, 3], pa.int64()), "label": ["a", "b", "a"]}), OUT / "bad_type.parquet")
    table = pa.table({"text": ["one", "two", "three", "four", "five"], "label": ["a", "b", "a", None, "b"]})
    pq.write_table(table, OUT / "bad_null_label.parquet", row_group_size=3)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sentiment()
    cache_folder()
    pairs_regression()
    multi_label()
    ner()
    sft()
    bad_files()
    versions = {"pyarrow": pa.__version__, "datasets": datasets.__version__}
    (OUT / "VERSIONS.json").write_text(json.dumps(versions, indent=1) + "\n")
    print("wrote", OUT, versions)


if __name__ == "__main__":
    main()
