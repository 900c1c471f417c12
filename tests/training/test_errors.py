"""A user's mistake is one line naming the setting and what was expected, a non-zero exit, and no traceback."""

import sys

import pytest
import torch
from small_runs import cli, demo_run

from inception_next.commands import main
from inception_next.data import demo as demo_data


@pytest.fixture(scope="module")
def one_class_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("one") / "data"
    return demo_data.generate(root, classes=demo_data.CLASSES[:1], train_per_class=4, val_per_class=2, image_size=40)


@pytest.mark.parametrize("flags, code, message", [
    (["--data.batch_size", "-4"], 1, "error: data.batch_size -4: expected an integer of at least 1"),
    (["--data.img_size", "0"], 1, "error: data.img_size 0: expected an integer of at least 1"),
    (["--data.num_workers", "-1"], 1, "error: data.num_workers -1: expected an integer of at least 0"),
    (["--data.remode", "pixl"], 1, "error: data.remode 'pixl': expected one of const, rand, pixel"),
    (["--data.reprob", "1.5"], 1, "error: data.reprob 1.5: expected a probability in [0, 1]"),
    (["--data.device_from", "gpu"], 2, "error: --data.device_from gpu: expected one of 'normalize', 'randaugment', "
     "'decode'"),
    (["--data.device_from", "randaugment", "--data.auto_augment", "augmix-m5"], 1,
     "error: data.device_from randaugment moves timm's RandAugment to the device, and data.auto_augment is "
     "'augmix-m5'; expected a rand-... policy, or data.device_from normalize"),
    (["--data.device_from", "randaugment", "--data.train_interpolation", "nearest"], 1,
     "error: data.train_interpolation: RandAugment's affine ops interpolate bilinear or bicubic on the device; "
     "expected random, bilinear or bicubic, or data.device_from normalize"),
    (["--data.device_from", "decode", "--data.train_interpolation", "lanczos"], 1,
     "error: data.device_from decode resizes crops with torch, and data.train_interpolation is 'lanczos'; expected "
     "one of random, bilinear, bicubic"),
    (["--data.augment_on", "gpu"], 1, "error: data.augment_on 'gpu': expected one of workers, device"),
    (["--data.decode_on", "device"], 1, "error: data.decode_on device: the crop, flip and RandAugment come after "
     "decoding; expected data.augment_on device too"),
    (["--model.backbone", "nope"], 1, "error: model 'nope' is not registered; expected one of: convnext_small_iso, "),
    (["--trainer.max_epochs", "-5"], 1, "error: `max_epochs` must be a non-negative integer or -1. You passed in -5."),
    (["--model.lr_per_1024", "abc"], 2, "error: --model.lr_per_1024 abc: expected float"),
    (["--trainer.max_epochs", "ten"], 2, "error: --trainer.max_epochs ten: expected int or null"),
    (["--trainer.precision", "13"], 2, "error: --trainer.precision 13: expected one of 64, 32, 16 or one of "),
    (["--model.no_such_setting", "1"], 2, "error: unrecognized arguments: --model.no_such_setting 1"),
])
def test_a_bad_setting_is_one_line(flags, code, message, tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *demo_run(tiny_dataset, *flags)])
    assert stopped.value.code == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(message), err
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.ckpt"))


def test_a_dataset_of_one_class_is_one_line(one_class_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *demo_run(one_class_dataset)])
    assert stopped.value.code == 1
    train = one_class_dataset / "train"
    assert capsys.readouterr().err.strip() == (f"error: {train}: 1 class folder(s) ['circle']; expected at least 2, "
                                               f"as {train}/<class>/<images>")


def test_a_wrong_type_prints_no_usage_dump(tiny_dataset, tmp_path):
    done = cli(["fit", *demo_run(tiny_dataset), "--model.lr_per_1024", "abc"], cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --model.lr_per_1024 abc: expected float"


@pytest.mark.parametrize("limit, batches", [("1", 1), ("2", 2), ("0.5", 3)])
def test_an_integer_batch_limit_counts_batches(limit, batches, tiny_dataset, tmp_path, monkeypatch, capsys):
    """As Lightning documents: an int is a number of batches, a float a fraction of the epoch (6 batches here)."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *demo_run(tiny_dataset, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", limit,
                             "--trainer.limit_val_batches", "0", "--save_every_n_steps", "null")])
    last = next((tmp_path / "logs/demo").rglob("last.ckpt"))
    assert torch.load(last, weights_only=False)["global_step"] == batches


def test_decoding_on_a_gpu_without_torchcodec_is_one_line(monkeypatch):
    """nvJPEG comes through an extra; a GPU run set to decode on the device without it stops at setup, saying
    which: no GPU needed to check, the data module asks for the device it trains on."""
    from inception_next.data import DatasetError, ImageNetDataModule

    monkeypatch.setitem(sys.modules, "torchcodec", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    expected = (r"^data.device_from decode decodes JPEGs on the GPU with nvJPEG through torchcodec; expected it "
                r"installed: pip install 'inception-next\[nvjpeg\]'$")
    with pytest.raises(DatasetError, match=expected):
        ImageNetDataModule(device_from="decode").device_work.check(torch.device("cuda"))
