"""Dataset rows from the Hugging Face hub or from local files, with errors that name file, row and field.

Sources (``--data``):

- a hub dataset id (``lmms-lab/POPE``): loaded with ``datasets`` (imported only then);
- a folder written by ``datasets.save_to_disk``;
- a local copy of a hub dataset repository (``huggingface-cli download --repo-type dataset ID --local-dir
  DIR``: parquet files, with the configs in its README.md): loaded by ``datasets.load_dataset`` with the
  benchmark's config and split, as the hub id would be;
- a local ``.parquet``, ``.jsonl``, ``.json``, ``.csv`` or ``.tsv`` file in the dataset's own column
  schema, or in LLaVA's question-JSONL format (``question_id``, ``image``, ``text``, ``category``, plus
  the ground truth), with image paths relative to ``--images`` (default: the file's folder).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")
_MISSING = object()


class DatasetRowError(ValueError):
    """A dataset row lacks a field or holds a value of the wrong kind."""


class MissingExtra(ImportError):
    """A package of one of vasink's optional extras is not installed; the message says how to install it."""


EVAL_EXTRA = 'pip install -e ".[eval]" in the vasink clone (or pip install datasets)'


class MissingImagesError(FileNotFoundError):
    """Image files named by the dataset do not exist."""

    def __init__(self, paths: Sequence[Path], where: str = ""):
        self.paths = list(paths)
        shown = "\n  ".join(str(p) for p in self.paths[:20])
        more = f"\n  ... and {len(self.paths) - 20} more" if len(self.paths) > 20 else ""
        super().__init__(f"{len(self.paths)} image file(s) not found{where}:\n  {shown}{more}")


class Row:
    """One dataset row; every accessor names the file, the row and the field when something is wrong."""

    def __init__(self, values: dict, source: str, index: int, images: Path | None = None, lazy_images=None,
                 unit: str = "row"):
        self.values, self.source, self.index, self.images = values, source, index, images
        self._lazy_images = lazy_images or {}
        self.unit = unit  # "line" (counted from 1, as editors do) for JSONL / CSV; "row" (a dataset index) else

    @property
    def where(self) -> str:
        return f"{self.source}: {self.unit} {self.index}"

    def error(self, field: str, problem: str) -> DatasetRowError:
        return DatasetRowError(f"{self.where}: field {field!r} {problem}")

    def has(self, field: str) -> bool:
        return field in self.values or field in self._lazy_images

    def get(self, *names: str, default: Any = _MISSING) -> Any:
        """The value of the first of ``names`` present (LLaVA's files and the hub name fields differently)."""
        for name in names:
            if name in self.values and self.values[name] is not None:
                return self.values[name]
        if default is not _MISSING:
            return default
        alternatives = " or ".join(repr(n) for n in names)
        raise DatasetRowError(f"{self.where}: field {alternatives} is missing "
                              f"(row has {', '.join(sorted(map(str, self.values))) or 'no fields'})")

    def text(self, *names: str, default: Any = _MISSING) -> str:
        value = self.get(*names, default=default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self.error(names[0], f"should be text, got {type(value).__name__} {value!r:.60}")
        return value

    def texts(self, *names: str) -> list[str]:
        value = self.get(*names)
        if isinstance(value, str):
            try:  # CSV files hold lists as JSON / Python literals
                value = json.loads(value.replace("'", '"')) if value.strip().startswith("[") else [value]
            except json.JSONDecodeError:
                raise self.error(names[0], f"should be a list of strings, got {value!r:.60}") from None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
            raise self.error(names[0], f"should be a list of strings, got {value!r:.60}")
        return [str(v) for v in value]

    def image(self, *names: str):
        """An image reference for :class:`vasink.eval.registry.Sample`: a PIL image, a path or a loader."""
        for name in names:
            if name in self._lazy_images:
                return self._lazy_images[name]
        value = self.get(*names)
        if isinstance(value, (list, tuple)):  # SEED-Bench: a sequence of images; the first is the image
            if not value:
                raise self.error(names[0], "is an empty list of images")
            value = value[0]
        if hasattr(value, "convert"):  # a PIL image
            return value
        if isinstance(value, dict):
            if value.get("bytes"):
                data = value["bytes"]
                return lambda: _image_from_bytes(data)
            if value.get("path"):
                return self._path(value["path"])
            raise self.error(names[0], "holds neither image bytes nor a path")
        if isinstance(value, str) and value:
            return self._path(value)
        raise self.error(names[0], f"should be an image, a path or {{'bytes', 'path'}}, got {value!r:.60}")

    def _path(self, name: str) -> Path:
        if name.startswith(("http://", "https://", "ftp://")):
            raise self.error("image", f"is a URL ({name}); vasink reads images from local files: download them "
                                      f"and pass --images DIR (the folder the question file's image names are in)")
        path = Path(name)
        return path if path.is_absolute() or self.images is None else self.images / path


def _image_from_bytes(data: bytes):
    from ..images import load_image

    return load_image(data, photo=False)


class Table:
    def __init__(self, rows: list[Row]):
        self._rows = rows

    def rows(self) -> Iterator[Row]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def open_table(source: str | None, config: str | None = None, split: str = "test", images: str | None = None,
               what: str = "benchmark") -> Table:
    if not source:
        raise ValueError(f"{what} has no public default dataset: pass --data PATH (see the benchmark's help)")
    path = Path(source).expanduser()
    image_root = Path(images).expanduser() if images else None
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _hub_table(_load_from_disk(path, split), str(path))
        if is_hub_repository(path):
            return _hub_table(load_hub(str(path), config, split), f"{path}[{split}]")
        tables = sorted(p for p in path.iterdir() if p.suffix in TABLE_SUFFIXES)
        if len(tables) != 1:
            raise ValueError(f"{path}: expected one question file ({', '.join(TABLE_SUFFIXES)}) in the folder, "
                             f"found {[p.name for p in tables] or 'none'}; pass the file itself as --data")
        path = tables[0]
    if path.is_file():
        return Table(_local_rows(path, image_root or path.parent))
    if path.suffix in TABLE_SUFFIXES or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--data {source}: no such file")
    return _hub_table(load_hub(source, config, split), f"{source}[{split}]")


def is_hub_repository(path: Path) -> bool:
    """A downloaded hub dataset repository: a dataset card (README.md opening with its YAML block, which
    names the configs' data files) or parquet files in subfolders (the hub's ``<config>/`` layout)."""
    card = path / "README.md"
    if card.is_file():
        with card.open(errors="replace") as f:
            if f.read(3) == "---":
                return True
    return any(path.glob("*/*.parquet"))


def is_hub_source(source: str | None) -> bool:
    """True when ``source`` is loaded by ``datasets.load_dataset`` (a hub id or a downloaded repository)."""
    if not source:
        return False
    path = Path(source).expanduser()
    if path.is_dir():
        return is_hub_repository(path)
    return not path.exists() and path.suffix not in TABLE_SUFFIXES and not source.startswith((".", "/", "~"))


def read_text(path: Path) -> str:
    """A question / answer file's text: UTF-8, with or without the byte-order mark spreadsheets write; a file in
    another encoding is an error naming the file and the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DatasetRowError(f"{path}: line {line}: not UTF-8 text (byte {data[error.start]:#04x}; a Latin-1 or "
                              f"Windows file?): save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > "
                              f"{Path(path).stem}.utf8{Path(path).suffix}") from None


def jsonl_records(path: Path) -> list[tuple[int, Any]]:
    """(line number from 1, value) for every non-empty line of a JSONL file."""
    records = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise DatasetRowError(f"{path}: line {number}: not valid JSON ({error.msg})") from None
    return records


def _local_rows(path: Path, images: Path) -> list[Row]:
    source = str(path)
    unit = "row"
    if path.suffix == ".jsonl":
        records, unit = jsonl_records(path), "line"
    elif path.suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as error:
            raise DatasetRowError(f"{source}: not valid JSON ({error})") from None
        if isinstance(data, dict):  # {"id": {...}, ...} (MM-Vet's mm-vet.json)
            data = [{"question_id": key, **value} for key, value in data.items()]
        records = list(enumerate(data))
    elif path.suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""),
                                delimiter="\t" if path.suffix == ".tsv" else ",")
        records, unit = [(reader.line_num, row) for row in reader], "line"
    elif path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - comes with `datasets`
            raise MissingExtra(f"{source}: reading .parquet needs pyarrow, which comes with the eval extra: "
                               f"{EVAL_EXTRA}") from None
        records = list(enumerate(pq.read_table(path).to_pylist()))
    else:
        raise ValueError(f"{source}: unsupported file type (use {', '.join(TABLE_SUFFIXES)})")
    rows = []
    for i, record in records:
        if not isinstance(record, dict):
            raise DatasetRowError(f"{source}: {unit} {i}: expected an object with fields, got {type(record).__name__}")
        rows.append(Row(record, source, i, images, unit=unit))
    return rows


def _datasets(what: str = "a hub dataset"):
    try:
        import datasets
    except ImportError:
        raise MissingExtra(f"loading {what} needs the package `datasets` (vasink's eval extra), which is not "
                           f"installed: {EVAL_EXTRA}; or pass --data with a local question file") from None
    return datasets


class HubDatasetError(ValueError):
    """A hub dataset could not be loaded (offline, unknown id, a loading script datasets no longer runs...)."""


def load_hub(dataset_id: str, config: str | None, split: str):
    datasets = _datasets(f"the hub dataset {dataset_id!r}")
    try:
        return datasets.load_dataset(dataset_id, config, split=split)
    except Exception as error:  # datasets raises many kinds; each means the same to the user
        where = f"{dataset_id!r}" + (f" (config {config!r})" if config else "") + f", split {split!r}"
        raise HubDatasetError(
            f"could not load the hub dataset {where}: {type(error).__name__}: {error}\n"
            "Without network access (HF_HUB_OFFLINE=1), or for a dataset that needs a loading script, download "
            "its question file and images yourself and pass --data PATH (a .jsonl / .json / .csv / .tsv / "
            ".parquet file, or a folder saved with Dataset.save_to_disk; --images DIR for the image folder)"
        ) from error


def _load_from_disk(path: Path, split: str):
    loaded = _datasets(f"the saved dataset {path}").load_from_disk(str(path))
    return loaded[split] if hasattr(loaded, "keys") else loaded


def _hub_table(dataset, source: str) -> Table:
    """Rows of a ``datasets.Dataset``; image columns stay undecoded until a sample needs them."""
    image_columns = [name for name, feature in dataset.features.items() if "Image" in repr(feature)]
    text_part = dataset.remove_columns(image_columns) if image_columns else dataset
    rows = []
    for i, values in enumerate(text_part):
        lazy = {name: (lambda i=i, name=name: _first_image(dataset[i][name])) for name in image_columns}
        rows.append(Row(values, source, i, None, lazy))
    return Table(rows)


def _first_image(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def check_images(samples, where: str = "") -> None:
    """Raise :class:`MissingImagesError` listing every sample image path that does not exist."""
    missing = []
    for sample in samples:
        path = sample.image_path()
        if path is not None and not path.exists():
            missing.append(path)
    if missing:
        raise MissingImagesError(sorted(set(missing)), where)
