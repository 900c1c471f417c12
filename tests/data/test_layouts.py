"""ImageNet where users keep it: the same generated images written as each source ships them (imagenet_layouts.py)
read by the data module in place, or converted by `prepare`; every layout keeps the class folders' promises."""

import hashlib
import io
import json
import re
import shutil
import tarfile
import warnings

import imagenet_layouts
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from imagenet_layouts import WNIDS, hf_schema, write_all
from small_runs import SMALL, demo_run, ranks_split_the_data, resumes_exactly, run_flags, small_run

from inception_next.commands import main
from inception_next.data import (
    DatasetError,
    ImageNetDataModule,
    LabelledImages,
    ResumableSampler,
    UnreadableImageError,
    find_source,
    writers,
)
from inception_next.data import prepare as prepare_module
from inception_next.data.prepare import prepare
from inception_next.data.readers import archives

READABLE = ("folders", "kaggle", "parquet", "webdataset")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("layouts"))


def copy_layout(layouts, layout, destination):
    return shutil.copytree(layouts[layout], destination / layout)


def digest(data):
    return hashlib.sha1(data).hexdigest()


def contents(reader, classes=WNIDS):
    """The (class, image digest) pairs of a reader's split, sorted."""
    return sorted((classes[reader.label(i)], digest(reader.read(i))) for i in range(len(reader)))


def tree(root):
    """{relative path: digest} of the image files under root."""
    return {str(p.relative_to(root)): digest(p.read_bytes()) for p in sorted(root.rglob("*.JPEG"))}


@pytest.mark.parametrize("layout", imagenet_layouts.LAYOUTS)
def test_each_layout_is_recognised_from_what_is_there(layout, layouts):
    assert find_source(layouts[layout]).NAME == layout


def test_a_folder_of_something_else_is_one_line_naming_what_it_holds_and_the_layouts_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "photos").mkdir()
    data = ImageNetDataModule(root=str(tmp_path))
    with pytest.raises(DatasetError) as error:
        data.classes
    message = str(error.value)
    assert message.startswith(f"data.root {tmp_path}: holds notes.txt, photos; expected one of: ")
    for layout in ("class folders", "Kaggle", "Hugging Face parquet", "WebDataset", "official archives"):
        assert layout in message
    assert "\n" not in message


@pytest.mark.parametrize("layout", READABLE)
def test_every_layout_reads_the_same_images_with_the_same_labels(layout, layouts):
    data = ImageNetDataModule(root=str(layouts[layout]), classes=WNIDS)
    reference = ImageNetDataModule(root=str(layouts["folders"]))
    for split in ("train", "val"):
        assert contents(data.reader(split)) == contents(reference.reader(split)), split


@pytest.mark.parametrize("layout, classes", [("folders", WNIDS), ("kaggle", imagenet_layouts.ALL_WNIDS),
                                             ("parquet", imagenet_layouts.ALL_WNIDS),
                                             ("webdataset", imagenet_layouts.ALL_WNIDS)])
def test_classes_come_from_the_layout_in_sorted_wnid_order(layout, classes, layouts):
    """Class folders name the classes; Kaggle's synset mapping, Hugging Face's imagenet-1k (its ClassLabel names
    are ImageNet's descriptions) and timm's shards are ImageNet-1K's 1000, whose names come from timm."""
    data = ImageNetDataModule(root=str(layouts[layout]))
    assert data.classes == classes
    assert data.class_names[0] == "tench, Tinca tinca"


def test_your_own_hugging_face_dataset_keeps_its_class_names(layouts, tmp_path):
    """A dataset Hugging Face built from your class folders: its ClassLabel names are the classes, in its order."""
    (tmp_path / "data").mkdir()
    val = imagenet_layouts.samples()["val"]
    table = pa.table({"image": [{"bytes": image, "path": name} for _, name, image in val],
                      "label": [WNIDS.index(wnid) for wnid, _, _ in val]}, schema=hf_schema(["cat", "dog", "fox"]))
    pq.write_table(table, tmp_path / "data" / "validation-00000-of-00001.parquet")
    data = ImageNetDataModule(root=str(tmp_path))
    assert data.classes == ["cat", "dog", "fox"]
    assert contents(data.reader("val"), ["cat", "dog", "fox"]) == sorted(
        (["cat", "dog", "fox"][WNIDS.index(w)], digest(image)) for w, _, image in imagenet_layouts.samples()["val"])


def test_prepare_unpacks_the_archives_as_torchvision_does(layouts, tmp_path, monkeypatch):
    """torchvision's own ImageNet parsers (checksums off: these archives are generated) on the same archives."""
    from torchvision.datasets import imagenet

    monkeypatch.setattr(imagenet, "_verify_archive", lambda root, file, md5: None)
    theirs = shutil.copytree(layouts["archives"], tmp_path / "torchvision")
    imagenet.parse_devkit_archive(str(theirs))
    imagenet.parse_train_archive(str(theirs))
    imagenet.parse_val_archive(str(theirs))
    prepare(layouts["archives"], tmp_path / "ours")
    assert tree(tmp_path / "ours") == tree(theirs) == tree(layouts["folders"])


@pytest.mark.parametrize("layout", ("archives", "kaggle", "parquet", "webdataset"))
def test_prepare_writes_the_class_folders_of_every_layout(layout, layouts, tmp_path, capsys):
    counts = prepare(layouts[layout], tmp_path / "imagenet")
    assert counts == {"train": 24, "val": 12}
    assert tree(tmp_path / "imagenet") == tree(layouts["folders"])
    out = capsys.readouterr().out
    assert "train: 24 images (24 written now)" in out and "val: 12 images (12 written now)" in out


class Interrupted(BaseException):
    pass


def interrupt_after(monkeypatch, files):
    """Make `prepare` stop as a Ctrl-C would, in the middle of its `files`+1-th file."""
    real, calls = writers.write_whole, []

    def half_then_stop(file):
        file.write(b"half")
        raise Interrupted()

    def write_whole(path, write):
        calls.append(path)
        real(path, half_then_stop if len(calls) > files else write)

    monkeypatch.setattr(writers, "write_whole", write_whole)
    return monkeypatch.undo


@pytest.mark.parametrize("to, stop_after", [("folders", 7), ("folders", 30), ("parquet", 2), ("webdataset", 1),
                                            ("litdata", 1)])
def test_prepare_interrupted_and_rerun_finishes_without_writing_twice(to, stop_after, layouts, tmp_path,
                                                                      monkeypatch):
    source, reference = layouts["archives" if to == "folders" else "folders"], tmp_path / "reference"
    prepare(source, reference, to=to, shard_size=10)
    restore = interrupt_after(monkeypatch, stop_after)
    with pytest.raises(Interrupted):
        prepare(source, tmp_path / "out", to=to, shard_size=10)
    restore()
    assert not list((tmp_path / "out").rglob(f"*{writers.PARTIAL}"))  # nothing half-written passes for a file
    prepare(source, tmp_path / "out", to=to, shard_size=10)
    assert written(tmp_path / "out") == written(reference)


def written(root):
    """{relative path: content} of what prepare wrote, but its marker and the time LitData stamps its index with."""
    def content(path):
        if path.name != "index.json":
            return path.read_bytes()
        return {key: value for key, value in json.loads(path.read_bytes()).items() if key != "updated_at"}
    return {str(p.relative_to(root)): content(p) for p in root.rglob("*")
            if p.is_file() and p.name != prepare_module.MARKER}


@pytest.mark.parametrize("to", ("parquet", "webdataset", "litdata"))
def test_shards_prepare_writes_read_back_as_the_folders(to, layouts, tmp_path):
    prepare(layouts["folders"], tmp_path / to, to=to, shard_size=10)
    data = ImageNetDataModule(root=str(tmp_path / to), classes=WNIDS)
    assert data.source.NAME == to
    reference = ImageNetDataModule(root=str(layouts["folders"]))
    for split in ("train", "val"):
        assert contents(data.reader(split)) == contents(reference.reader(split))


@pytest.mark.parametrize("which", ("fixture", "prepared"))
def test_timm_reads_our_webdataset_as_we_do(which, layouts, tmp_path):
    """timm's own WebDataset reader, on the fixture's shards and on what `prepare --to webdataset` writes."""
    from timm.data.readers.reader_wds import ReaderWds

    root, names = layouts["webdataset"], imagenet_layouts.ALL_WNIDS  # timm's shards: ImageNet's labels
    if which == "prepared":
        root, names = tmp_path / "wds", WNIDS  # the classes of the folders prepared, recorded in _info.json
        prepare(layouts["folders"], root, to="webdataset", shard_size=5)
    theirs = sorted((names[int(label)], digest(image.tobytes())) for image, label in
                    ReaderWds(str(root), split="validation"))
    ours_reader = ImageNetDataModule(root=str(root), classes=WNIDS).reader("val")
    ours = LabelledImages(ours_reader)
    assert sorted((WNIDS[label], digest(image.tobytes())) for image, label in ours) == theirs


def test_prepare_refuses_a_folder_holding_another_dataset(layouts, tmp_path):
    other = shutil.copytree(layouts["folders"], tmp_path / "other")
    with pytest.raises(DatasetError, match=f"DEST {other}: holds train, val; expected an empty or absent folder"):
        prepare(layouts["kaggle"], other)
    prepare(layouts["parquet"], tmp_path / "mine")
    with pytest.raises(DatasetError, match=f"holds a prepare of {layouts['kaggle']} \\(folders\\)|holds a prepare"):
        prepare(layouts["kaggle"], tmp_path / "mine")
    assert tree(other) == tree(layouts["folders"])


def break_shard(root):
    shard = root / "imagenet1k-validation-0000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])


def no_label_column(root):
    path = next((root / "data").glob("validation-*.parquet"))
    pq.write_table(pq.read_table(path).drop_columns(["label"]), path)


def label_outside(root):
    path = next((root / "data").glob("validation-*.parquet"))
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[3] = 1007
    pq.write_table(table.set_column(1, "label", [labels]), path)


def cls_outside(root):
    shard = root / "imagenet1k-validation-0000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for number, (member, data) in enumerate(members):
            data = b"7" if member.name.endswith(".cls") and number > 5 else data  # a class outside the three
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def truncated_parquet(root):
    path = next((root / "data").glob("validation-*.parquet"))
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("layout, break_it, message", [
    ("webdataset", break_shard, r"imagenet1k-validation-0000.tar: (truncated or not a tar|\d+ samples, but)"),
    ("webdataset", cls_outside, rf"imagenet1k-validation-0000.tar:\S+: label 7 \({imagenet_layouts.ALL_WNIDS[7]}\) "
                                r"is outside the 3 classes; expected n01440764 \.\.\. n15075141"),
    ("parquet", no_label_column, r"validation-00000-of-00001.parquet: columns image; expected `image`"),
    ("parquet", label_outside, r"validation-00000-of-00001.parquet: label 1007 is outside the 3 classes"),
    ("parquet", truncated_parquet, r"validation-00000-of-00001.parquet: not a readable parquet file"),
])
def test_a_broken_shard_is_one_line_naming_it(layout, break_it, message, layouts, tmp_path, monkeypatch, capsys):
    root = copy_layout(layouts, layout, tmp_path)
    break_it(root)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["validate", *demo_run(root, "--data.classes", str(WNIDS))])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and re.search(message, err), err


def without_devkit(root):
    (root / archives.DEVKIT).unlink()
    return (f"{root}: no {archives.DEVKIT}; expected the devkit beside ILSVRC2012_img_val.tar: its ground truth "
            "labels the validation images")


def truncated_val_archive(root):
    path = root / archives.VAL
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    return f"{path}: truncated or damaged ("


@pytest.mark.parametrize("break_it", (without_devkit, truncated_val_archive))
def test_damaged_archives_are_one_line_and_what_was_written_stays(break_it, layouts, tmp_path, monkeypatch, capsys):
    root = shutil.copytree(layouts["archives"], tmp_path / "archives")
    message = break_it(root)
    with pytest.raises(SystemExit) as stopped:
        main(["prepare", str(root), str(tmp_path / "imagenet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 1 and err[-1].startswith(f"error: {message}"), err[-1]
    assert not any("Traceback" in line for line in err)
    assert len(tree(tmp_path / "imagenet" / "train")) == 24  # the training split, written before, is kept


def test_the_official_archives_are_named_when_given_as_data_root(layouts, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["validate", "--data.root", str(layouts["archives"]), "--trainer.accelerator", "cpu"])
    err = capsys.readouterr().err.strip()
    assert err == (f"error: data.root {layouts['archives']}: {archives.LAYOUT}, which are read once into class "
                   f"folders: python -m inception_next prepare {layouts['archives']} /path/to/imagenet")


def corrupt_one_sample(root, layout):
    """Replace one validation image's bytes by noise of the same length; returns how the error names it."""
    if layout == "webdataset":
        shard = root / "imagenet1k-validation-0000.tar"
        with tarfile.open(shard) as tar:
            member = next(m for m in tar if m.name.endswith(".jpg"))
        blob = bytearray(shard.read_bytes())
        blob[member.offset_data:member.offset_data + member.size] = b"\0" * member.size
        shard.write_bytes(bytes(blob))
        return f"{shard}:{member.name[:-4]}"
    path = next((root / "data").glob("validation-*.parquet"))
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    images[2]["bytes"] = b"\0" * 100
    table = table.set_column(0, "image", [images]).cast(hf_schema(imagenet_layouts.DESCRIPTIONS))
    pq.write_table(table, path, row_group_size=5)
    return f"{path} row 2"


@pytest.mark.parametrize("layout", ("parquet", "webdataset"))
def test_an_unreadable_sample_is_named_skipped_in_training_and_refused_in_validation(layout, layouts, tmp_path):
    root = copy_layout(layouts, layout, tmp_path)
    name = corrupt_one_sample(root, layout)
    data = ImageNetDataModule(root=str(root), classes=WNIDS, img_size=32, batch_size=4, num_workers=0)
    data.setup("validate")
    with pytest.raises(UnreadableImageError, match=f"^{name}: unreadable image"):
        [data.val_set[i] for i in range(len(data.val_set))]
    skipping = LabelledImages(data.val_set.reader, data.eval_transform(), skip_unreadable=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = [skipping[i] for i in range(len(skipping))]
    assert len(images) == 12 and skipping.skipped.value == 1
    assert [str(w.message) for w in caught if "skipping" in str(w.message)][0].startswith(f"skipping {name}")


def test_blocks_are_shuffled_in_windows_and_ranks_still_split_every_sample_once():
    """The order is consecutive windows, each of whole blocks and at least `window` samples (the last may hold
    fewer): a window ends wherever the samples so far make up whole blocks."""
    blocks, window = [5, 5, 2, 5, 5, 2, 3], 8
    block_of = [b for b, size in enumerate(blocks) for _ in range(size)]
    for seed in range(5):
        order = [i for i, _ in ResumableSampler(sum(blocks), seed=seed, blocks=blocks, window=window)]
        assert sorted(order) == list(range(sum(blocks))) and order != sorted(order)
        ends = [end for end in range(1, len(order) + 1)
                if all(block_of.count(b) == [block_of[i] for i in order[:end]].count(b)
                       for b in {block_of[i] for i in order[:end]})]
        sizes = [b - a for a, b in zip([0, *ends], ends)]
        assert all(size >= window for size in sizes[:-1]) and max(sizes) < window + max(blocks), sizes
        ranks = [[i for i, _ in ResumableSampler(sum(blocks), seed=seed, blocks=blocks, window=window, rank=r,
                                                 world_size=2)] for r in range(2)]
        assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == sum(blocks) // 2


def test_each_loader_worker_reads_its_own_blocks_and_a_resumed_epoch_keeps_its_workers_layout():
    """A loader deals batches to its workers in turn (batch j to worker j % workers): the blocks a worker's batches
    come from are read by no other worker of any rank, but where a share of the epoch begins or ends inside one."""
    blocks, batch, streams = [5, 5, 2, 5, 5, 2, 3, 7, 6, 4], 2, 3
    block_of = [b for b, size in enumerate(blocks) for _ in range(size)]

    def sampler(rank=0, streams=streams, shuffle=True):
        return ResumableSampler(sum(blocks), seed=seed, shuffle=shuffle, rank=rank, world_size=2, blocks=blocks,
                                window=4, batch_size=batch, step_samples=batch, streams=streams)

    for seed in range(5):
        for shuffle in (True, False):
            orders = [[i for i, _ in sampler(rank, shuffle=shuffle)] for rank in range(2)]
            assert not set(orders[0]) & set(orders[1]) and len(orders[0]) == len(orders[1]) == 22
            read = [{block_of[i] for j in range(worker, len(order) // batch, streams)
                     for i in order[j * batch:(j + 1) * batch]} for order in orders for worker in range(streams)]
            assert sum(map(len, read)) <= len(blocks) + len(read) - 1, read
        resumed = sampler(streams=2)
        resumed.set_epoch(1)
        resumed.resume(epoch=1, start=6, streams=3)
        began = sampler()
        began.set_epoch(1)
        assert list(resumed) == list(began)[6:]
        next_epoch = sampler(streams=2)
        for each in (resumed, began, next_epoch):
            each.set_epoch(2)
        assert list(resumed) == list(next_epoch) != list(began)  # laid out for its own workers


def test_the_same_weights_score_the_same_on_every_layout_with_the_validation_split_alone(layouts, tmp_path,
                                                                                           monkeypatch):
    """Train on the class folders, then validate the checkpoint on each layout holding only the validation split."""
    monkeypatch.chdir(tmp_path)
    flags = run_flags(layouts["folders"], "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3")
    main(["fit", *flags])
    checkpoint = tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"
    scores = {}
    for layout in READABLE:
        root = copy_layout(layouts, layout, tmp_path / "val_only")
        for train in ("train", "ILSVRC/Data/CLS-LOC/train"):
            shutil.rmtree(root / train, ignore_errors=True)
        for shard in [*root.glob("*-train-*.tar"), *root.glob("data/train-*.parquet")]:
            shard.unlink()
        info = root / "_info.json"
        if info.exists():
            info.write_text(info.read_text().replace('"train"', '"unused"'))
        record = tmp_path / f"{layout}.json"
        main(["validate", "--data.root", str(root), "--ckpt_path", str(checkpoint), *SMALL,
              "--trainer.callbacks+=interruptions.RecordMetrics", f"--trainer.callbacks.path={record}"])
        scores[layout] = json.loads(record.read_text())
    for layout in READABLE:
        assert scores[layout]["val/loss"] == pytest.approx(scores["folders"]["val/loss"], abs=1e-5), layout
        assert scores[layout]["val/top1"] == scores["folders"]["val/top1"], layout


@pytest.mark.parametrize("layout", ("kaggle", "parquet", "webdataset"))
def test_fit_and_predict_run_on_each_layout(layout, layouts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = run_flags(layouts[layout], "--data.classes", str(WNIDS), "--trainer.max_epochs", "1",
                      "--trainer.limit_train_batches", "2", "--data.num_workers", "1")
    main(["fit", *flags])
    checkpoint = tmp_path / "logs/demo/version_0/checkpoints/last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 2
    main(["predict", "--data.root", str(layouts[layout]), "--ckpt_path", str(checkpoint), "--data.predict_root",
          str(layouts["folders"] / "val"), "--predict_csv", str(tmp_path / "out.csv"), *SMALL])
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 13


@pytest.mark.slow
@pytest.mark.parametrize("layout", ("parquet", "webdataset"))
def test_a_run_killed_mid_epoch_resumes_exactly_with_loader_workers(layout, layouts, tmp_path):
    """Killed at step 3 (after the step-2 save) and at the first epoch's end; resumed with 2 workers each time:
    the batches, lr and weights of an unbroken run without workers."""
    resumes_exactly(layouts[layout], tmp_path, "--data.classes", str(WNIDS))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ("parquet", "webdataset"))
def test_ddp_ranks_train_disjoint_samples_and_validate_each_once(layout, layouts, tmp_path):
    ranks_split_the_data(layouts[layout], tmp_path)


def test_an_unreadable_validation_sample_stops_validate_with_one_line_from_a_loader_worker(layouts, tmp_path,
                                                                                          monkeypatch, capsys):
    root = copy_layout(layouts, "webdataset", tmp_path)
    name = corrupt_one_sample(root, "webdataset")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["validate", *small_run(root, "--data.classes", str(WNIDS), "--data.num_workers", "1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 1
    assert err[-1] == f"error: {name}: unreadable image (not a format PIL recognises)"
    assert not any("Traceback" in line for line in err)


def test_shard_headers_are_read_once_and_again_when_the_shard_changes(layouts, tmp_path, monkeypatch):
    from inception_next.data.readers import webdataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = copy_layout(layouts, "webdataset", tmp_path)
    first = contents(ImageNetDataModule(root=str(root), classes=WNIDS).reader("val"))
    monkeypatch.setattr(webdataset.tarfile, "open", lambda *args, **kwargs: pytest.fail("headers read again"))
    assert contents(ImageNetDataModule(root=str(root), classes=WNIDS).reader("val")) == first
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    break_shard(root)  # another size and time: the cached offsets are not used for it
    with pytest.raises(DatasetError, match="imagenet1k-validation-0000.tar: truncated or not a tar"):
        ImageNetDataModule(root=str(root), classes=WNIDS).reader("val")
