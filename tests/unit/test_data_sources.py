"""Real-data sources: image folders and memory-mapped .npy arrays, their lazy Dataset views,
torch Datasets through as_dataset, and the one-line errors at the data boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from poisonlab.data import as_dataset, load_dataset, load_npz
from poisonlab.data_folders import load_arrays, load_image_folder
from poisonlab.data_sources import (
    LOAD_BATCH,
    ArrayDataset,
    ImageFolderDataset,
    materialise,
    open_arrays,
)
from poisonlab.errors import ConfigError, DataError

#: Created in this (unsorted) order: class ids must follow the sorted names.
CLASSES = ("zebra", "ant", "moth")


def pixels(seed: int, n: int, shape: tuple[int, ...] = (8, 8, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_folder(root: Path, n: int = 5, *, seed: int = 0, shape: tuple[int, ...] = (8, 8, 3)
                 ) -> dict[str, np.ndarray]:
    """``root/<class>/<i>.png`` for CLASSES; returns each class's uint8 images (HWC/HW)."""
    out = {}
    for j, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        imgs = pixels(seed * 10 + j, n, shape)
        for i, a in enumerate(imgs):
            Image.fromarray(a).save(root / c / f"{i:02d}.png")
        out[c] = imgs
    return out


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """train/ (5 per class) and test/ (3 per class) in ImageFolder layout."""
    root = tmp_path / "imgs"
    written = {"train": write_folder(root / "train", 5, seed=0),
               "test": write_folder(root / "test", 3, seed=1)}
    return root, written


def chw(a: np.ndarray) -> torch.Tensor:
    """The expected item: uint8 HWC (or HW) -> float32 CHW, k -> float32(k) / float32(255)."""
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.transpose(a, (2, 0, 1)).astype(np.float32) / np.float32(255))


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# --------------------------------------------------------------------------- images


def test_image_folder_pixels_round_trip_and_sorted_class_ids(folder):
    root, written = folder
    ds = ImageFolderDataset(root / "test")
    assert ds.classes == sorted(CLASSES) and ds.input_shape == (3, 8, 8) and len(ds) == 9
    assert ds.bounds == (0.0, 1.0)
    for i, (path, target) in enumerate(ds.samples):
        name = path.parent.name
        assert target == sorted(CLASSES).index(name) == int(ds.targets[i])
        x, y = ds[i]
        assert y == target and x.dtype == torch.float32
        expected = chw(written["test"][name][int(path.stem)])
        assert torch.equal(x, expected)
        assert torch.equal((x * 255).round().to(torch.uint8), (expected * 255).round().to(
            torch.uint8))


def test_grayscale_images_have_one_channel(tmp_path: Path):
    written = write_folder(tmp_path / "g", 2, shape=(6, 5))
    ds = ImageFolderDataset(tmp_path / "g")
    assert ds.input_shape == (1, 6, 5)
    assert torch.equal(ds[0][0], chw(written["ant"][0]))


def test_load_image_folder_builds_a_dataset_in_unit_bounds(folder):
    root, _ = folder
    ds = load_image_folder(root, seed=0)
    assert ds.name == "image_folder" and ds.n_classes == 3 and ds.bounds == (0.0, 1.0)
    assert ds.input_shape == (3, 8, 8) and ds.x_test.dtype == torch.float32
    assert len(ds.y_train) + len(ds.y_val) == 15 and len(ds.y_test) == 9
    assert ds.meta["classes"] == sorted(CLASSES) and ds.meta["layout"] == "splits"
    lazy = ImageFolderDataset(root / "test")
    assert torch.equal(ds.x_test, torch.stack([lazy[i][0] for i in range(len(lazy))]))
    assert torch.equal(ds.y_test, torch.from_numpy(lazy.targets))
    # Through the registry (a suite's {name: image_folder, root: DIR}): the same data.
    again = load_dataset("image_folder", root=str(root), seed=0)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.x_val, ds.x_val)


def test_val_folder_is_used_and_test_may_lack_a_class(tmp_path: Path):
    root = tmp_path / "d"
    write_folder(root / "train", 3)
    write_folder(root / "val", 2, seed=2)
    write_folder(root / "test", 2, seed=3)
    import shutil

    shutil.rmtree(root / "test" / "ant")  # class 0 absent from test: ids still by train
    ds = load_image_folder(root)
    assert ds.meta["val_split"] == "given" and len(ds.y_val) == 6 and len(ds.y_train) == 9
    assert sorted(set(ds.y_test.tolist())) == [1, 2] and ds.n_classes == 3


def test_size_resizes_and_mode_converts(tmp_path: Path):
    root = tmp_path / "m"
    write_folder(root, 2)
    Image.fromarray(pixels(5, 1, (10, 12, 3))[0]).save(root / "ant" / "big.png")
    with pytest.raises(DataError, match=r"big\.png' is 10x12 \(HxW\) but .* is 8x8") as e:
        ImageFolderDataset(root)
    one_line(e)
    ds = ImageFolderDataset(root, size=[4, 4])
    assert ds.input_shape == (3, 4, 4) and all(ds[i][0].shape == (3, 4, 4) for i in range(7))
    Image.fromarray(pixels(6, 1, (8, 8))[0]).save(root / "moth" / "gray.png")  # mode L
    with pytest.raises(DataError, match=r"gray\.png' has mode 'L' but .* has 'RGB'"):
        ImageFolderDataset(root, size=[4, 4])
    gray = ImageFolderDataset(root, size=[4, 4], mode="L")
    assert gray.input_shape == (1, 4, 4) and gray[0][0].shape == (1, 4, 4)
    with pytest.raises(ConfigError, match="mode"):
        ImageFolderDataset(root, mode="CMYK")


def test_other_modes_need_a_mode(tmp_path: Path):
    root = tmp_path / "a"
    write_folder(root, 1, shape=(8, 8, 4))  # RGBA
    with pytest.raises(DataError, match="has mode 'RGBA': expected RGB or L") as e:
        ImageFolderDataset(root)
    one_line(e)
    assert ImageFolderDataset(root, mode="RGB").input_shape == (3, 8, 8)


@pytest.mark.parametrize(("make", "match"), [
    (lambda r: (r / "ant" / "notes.txt").write_text("hello"),
     r"image '.*notes\.txt' cannot be read by Pillow"),
    (lambda r: [f.unlink() for f in (r / "moth").iterdir()],
     "class folder 'moth' holds no files"),
    (lambda r: (r / "ant" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n"),
     r"cut\.png' cannot be read by Pillow"),
])
def test_image_folder_errors_name_the_file(tmp_path: Path, make, match):
    root = tmp_path / "e"
    write_folder(root, 2)
    make(root)
    with pytest.raises(DataError, match=match) as e:
        ImageFolderDataset(root)
    one_line(e)


def test_hidden_files_are_skipped(tmp_path: Path):
    root = tmp_path / "h"
    write_folder(root, 2)
    (root / "ant" / ".DS_Store").write_bytes(b"\x00junk")
    (root / ".cache").mkdir()
    assert len(ImageFolderDataset(root)) == 6


def test_folder_layout_errors(tmp_path: Path, folder):
    root, _ = folder
    with pytest.raises(DataError, match="does not exist") as e:
        ImageFolderDataset(tmp_path / "nope")
    one_line(e)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        ImageFolderDataset(tmp_path / "flat")
    # A folder of class folders is not a train/test layout (unless test_only).
    with pytest.raises(DataError, match="has no test/ folder") as e:
        load_image_folder(root / "train")
    one_line(e)
    (root / "extra").mkdir()
    with pytest.raises(DataError, match="has a folder 'extra' beside test/"):
        load_image_folder(root)
    (root / "extra").rmdir()
    (root / "test" / "wasp").mkdir()
    Image.fromarray(pixels(0, 1)[0]).save(root / "test" / "wasp" / "0.png")
    with pytest.raises(DataError, match="class folder 'wasp' that the training folder lacks"):
        load_image_folder(root)


def test_one_class_is_refused(tmp_path: Path):
    root = tmp_path / "one"
    for s in ("train", "test"):
        (root / s / "cat").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(pixels(i, 1)[0]).save(root / s / "cat" / f"{i}.png")
    with pytest.raises(DataError, match=r"has one class \('cat'\): expected at least 2") as e:
        load_image_folder(root)
    one_line(e)
    with pytest.raises(DataError, match="has one class"):
        load_image_folder(root / "test", test_only=True)


def test_test_only_folder(folder):
    root, _ = folder
    ds = load_image_folder(root / "test", test_only=True)
    assert ds.meta["layout"] == "test-only" and len(ds.y_test) == 9 and ds.n_classes == 3
    assert ds.x_train.shape == (0, 3, 8, 8) and len(ds.y_val) == 0


def test_progress_bar_is_silent_off_a_terminal(folder, capsys):
    root, _ = folder
    materialise(ImageFolderDataset(root / "test", progress=True), name="x_test", progress=True)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- arrays


def save_arrays(root: Path, prefix: str = "", *, x_dtype=np.uint8, n=(30, 12), val=False,
                channels_last=False) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    shape = (4, 4, 3) if channels_last else (3, 4, 4)
    out = {}
    splits = [("train", n[0]), ("test", n[1])] + ([("val", 6)] if val else [])
    for i, (s, m) in enumerate(splits):
        x = pixels(i, m, shape)
        out[f"x_{s}"] = x if x_dtype == np.uint8 else (x / 255.0).astype(x_dtype)
        out[f"y_{s}"] = np.arange(m) % 3
    for k, v in out.items():
        np.save(root / f"{prefix}{k}.npy", v)
    return out


def test_open_arrays_is_a_lazy_memmap_view_scaled_by_255(tmp_path: Path):
    arrays = save_arrays(tmp_path / "a")
    view = open_arrays(tmp_path / "a", "test")
    assert isinstance(view, ArrayDataset) and isinstance(view.x, np.memmap)
    assert view.x.filename is not None and not view.x.flags.writeable  # read-only map
    assert view.bounds == (0.0, 1.0) and view.scale == 255.0 and len(view) == 12
    x3, y3 = view[3]
    assert torch.equal(x3, torch.from_numpy(arrays["x_test"][3].astype(np.float32)
                                            / np.float32(255)))
    assert y3 == int(arrays["y_test"][3]) and torch.equal(
        torch.from_numpy(view.targets), torch.from_numpy(arrays["y_test"]))
    xb, yb = view.batch(slice(2, 7))
    assert torch.equal(xb, torch.stack([view[i][0] for i in range(2, 7)]))
    assert yb.tolist() == arrays["y_test"][2:7].tolist()
    lo, hi = view.value_range()
    assert lo == arrays["x_test"].min() / 255 and hi == np.float32(arrays["x_test"].max()) / 255


def test_lazy_view_makes_no_copy_of_the_inputs(tmp_path: Path):
    import tracemalloc

    root = tmp_path / "big"
    root.mkdir()
    np.save(root / "x_test.npy", np.zeros((1000, 3, 32, 32), np.uint8))  # 3 MB
    np.save(root / "y_test.npy", np.arange(1000) % 10)
    tracemalloc.start()
    try:
        view = open_arrays(root)
        x, _ = view[999]
        view.batch(slice(0, 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (3, 32, 32)
    assert peak < 300_000  # the labels and a few items, not 3 MB of pixels (12 MB as float)


def test_lazy_view_reads_through_the_attack_core_source(tmp_path: Path):
    from poisonlab.batching import Source

    arrays = save_arrays(tmp_path / "a")
    src = Source.of(open_arrays(tmp_path / "a", "test"), None)
    assert src.lazy and src.n == 12
    x, y = src.take(torch.tensor([0, 5]))
    assert y.tolist() == [int(arrays["y_test"][0]), int(arrays["y_test"][5])]
    assert torch.equal(x[1], torch.from_numpy(arrays["x_test"][5] / np.float32(255)))
    assert torch.equal(src.labels(), torch.from_numpy(arrays["y_test"]))


def test_an_attack_on_the_lazy_view_matches_one_on_tensors(tmp_path: Path):
    from poisonlab import FGSM, EvasionThreat

    arrays = save_arrays(tmp_path / "a")
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(3, 48, generator=g))
    threat = EvasionThreat("linf", 8 / 255, (0.0, 1.0))
    lazy = FGSM()(net, open_arrays(tmp_path / "a"), None, threat=threat, seed=0, batch_size=5)
    x = torch.from_numpy(arrays["x_test"].astype(np.float32) / np.float32(255))
    whole = FGSM()(net, x, torch.from_numpy(arrays["y_test"]), threat=threat, seed=0)
    assert torch.equal(lazy.success, whole.success) and torch.equal(lazy.x_adv, whole.x_adv)


def test_scale_rule(tmp_path: Path):
    u8 = np.full((3, 1, 2, 2), 51, dtype=np.uint8)
    y = np.array([0, 1, 0])
    assert ArrayDataset(u8, y).bounds == (0.0, 1.0)
    assert float(ArrayDataset(u8, y)[0][0].max()) == np.float32(51) / np.float32(255)
    raw = ArrayDataset(u8, y, scale=1)  # explicit: pixels kept in 0..255
    assert raw.bounds == (0.0, 255.0) and float(raw[0][0].max()) == 51.0
    f = ArrayDataset(u8.astype(np.float32) / 2, y)  # float: as stored, bounds unknown
    assert f.bounds is None and float(f[0][0].max()) == 25.5
    x16 = ArrayDataset(u8.astype(np.uint16), y, scale=255)[0][0]
    assert float(x16.max()) == np.float32(51) / np.float32(255)
    with pytest.raises(ConfigError, match="scale"):
        ArrayDataset(u8, y, scale=0)


def test_load_arrays_folder_and_prefix(tmp_path: Path):
    arrays = save_arrays(tmp_path / "d", val=True)
    ds = load_arrays(tmp_path / "d", seed=0)
    assert ds.name == "npy" and ds.bounds == (0.0, 1.0) and ds.input_shape == (3, 4, 4)
    assert ds.meta["val_split"] == "given" and len(ds.y_val) == 6
    assert torch.equal(ds.x_test, torch.from_numpy(arrays["x_test"].astype(np.float32)
                                                   / np.float32(255)))
    save_arrays(tmp_path / "p", "cifar_")
    by_prefix = load_dataset("npy", path=str(tmp_path / "p" / "cifar_"), seed=1)
    assert by_prefix.summary()["n_test"] == 12 and len(by_prefix.y_val) >= 3
    # float arrays: kept as stored, bounds from the data unless given
    save_arrays(tmp_path / "f", x_dtype=np.float32)
    f = load_arrays(tmp_path / "f")
    assert f.bounds[0] >= 0 and f.bounds[1] <= 1 and f.meta["scale"] == 1.0
    assert load_arrays(tmp_path / "f", bounds=(0, 1)).bounds == (0.0, 1.0)


def test_channels_last(tmp_path: Path):
    arrays = save_arrays(tmp_path / "c", channels_last=True)
    ds = load_arrays(tmp_path / "c", channels_last=True)
    assert ds.input_shape == (3, 4, 4)
    assert torch.equal(ds.x_test[2], chw(arrays["x_test"][2]))
    view = open_arrays(tmp_path / "c", channels_last=True)
    assert torch.equal(view[2][0], ds.x_test[2]) and view.input_shape == (3, 4, 4)


def test_nan_is_found_chunk_by_chunk(tmp_path: Path):
    root = tmp_path / "n"
    save_arrays(root, x_dtype=np.float32, n=(LOAD_BATCH + 40, 12))
    x = np.load(root / "x_train.npy")
    x[LOAD_BATCH + 7, 0, 1, 1] = np.nan  # in the second chunk
    np.save(root / "x_train.npy", x)
    with pytest.raises(DataError, match=rf"x_train contains NaN .*example {LOAD_BATCH + 7}\)"
                       ) as e:
        load_arrays(root)
    one_line(e)
    with pytest.raises(DataError, match=rf"example {LOAD_BATCH + 7}"):
        open_arrays(root, "train").value_range(batch_size=100)


@pytest.mark.parametrize(("change", "match"), [
    (lambda r: (r / "y_test.npy").unlink(), r"has no y_test\.npy"),
    (lambda r: [(r / f"{a}_train.npy").unlink() for a in "xy"], r"has no x_train\.npy"),
    (lambda r: np.save(r / "y_test.npy", np.arange(5) % 3),
     r"y_test has shape \(5,\): expected \(12,\)"),
    (lambda r: np.save(r / "y_train.npy", np.zeros(30, dtype=int)),
     r"y_train has one class \(0\): expected at least 2"),
    (lambda r: np.save(r / "x_test.npy", np.zeros((0, 3, 4, 4), np.uint8)), "x_test is empty"),
    (lambda r: np.save(r / "y_test.npy", np.arange(12) / 2), "y_test has dtype float64"),
    (lambda r: np.save(r / "x_test.npy", np.array([{"a": 1}] * 12), allow_pickle=True),
     r"x_test: .* cannot be read as \.npy"),
    (lambda r: np.save(r / "x_val.npy", np.zeros((6, 3, 4, 4), np.uint8)), r"no y_val\.npy"),
    (lambda r: np.save(r / "x_test.npy", np.zeros((12, 3, 4, 4), np.float32)),
     "expected one dtype for every split"),
])
def test_array_errors_are_one_line(tmp_path: Path, change, match):
    root = tmp_path / "bad"
    save_arrays(root)
    change(root)
    with pytest.raises(DataError, match=match) as e:
        load_arrays(root)
    one_line(e)


def test_no_arrays_and_test_only(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no x_test\.npy"):
        load_arrays(tmp_path / "empty")
    root = tmp_path / "t"
    save_arrays(root)
    for a in "xy":
        (root / f"{a}_train.npy").unlink()
    ds = load_arrays(root, test_only=True)
    assert ds.meta["layout"] == "test-only" and ds.n_classes == 3 and len(ds.y_train) == 0


# --------------------------------------------------------------------------- as_dataset


def test_as_dataset_takes_torch_datasets_for_the_splits(folder):
    root, _ = folder
    ds = as_dataset({"train": ImageFolderDataset(root / "train"),
                     "test": ImageFolderDataset(root / "test")}, name="mine", seed=0)
    ref = load_image_folder(root, seed=0)
    assert ds.bounds == (0.0, 1.0)  # declared by the image Datasets, not the data's range
    assert torch.equal(ds.x_test, ref.x_test) and torch.equal(ds.x_val, ref.x_val)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 2, generator=g), torch.arange(40) % 2
    mixed = as_dataset({"train": TensorDataset(x[:30], y[:30]), "x_test": x[30:],
                        "y_test": y[30:]}, name="mixed")
    assert torch.equal(mixed.x_test, x[30:]) and len(mixed.y_train) + len(mixed.y_val) == 30
    with pytest.raises(DataError, match="has both train and x_train/y_train"):
        as_dataset({"train": TensorDataset(x, y), "x_train": x, "y_train": y,
                    "x_test": x, "y_test": y}, name="both")
    raw = TensorDataset((x * 255).to(torch.uint8), y)  # raw pixels, no transform
    with pytest.raises(DataError, match=r"x_train has items of dtype uint8 .*ToTensor"):
        as_dataset({"train": raw, "x_test": x, "y_test": y}, name="raw")
    with pytest.raises(DataError, match="train is a Tensor: expected a map-style"):
        as_dataset({"train": x, "x_test": x, "y_test": y}, name="t")
    bad = x.clone()
    bad[33, 1] = float("nan")
    with pytest.raises(DataError, match=r"x_test contains NaN .*example 3\)"):
        as_dataset({"train": TensorDataset(x[:30], y[:30]),
                    "test": TensorDataset(bad[30:], y[30:])}, name="nan")


@pytest.mark.parametrize(("arrays", "match"), [
    ({"x_train": np.zeros((0, 2), np.float32), "y_train": np.zeros(0, int),
      "x_test": np.zeros((0, 2), np.float32), "y_test": np.zeros(0, int)},
     r"y_train is empty: expected at least one example"),
    ({"x_train": np.zeros((6, 2), np.float32), "y_train": np.zeros(6, int),
      "x_test": np.zeros((3, 2), np.float32), "y_test": np.zeros(3, int)},
     r"y_train has one class \(0\): expected at least 2 classes"),
])
def test_npz_empty_or_one_class_is_one_line(tmp_path: Path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_npz(tmp_path / "d.npz")
    one_line(e)
