"""Object storage (S3 and what speaks its protocol: MinIO, SeaweedFS, Ceph, R2...) for datasets at `s3://bucket/prefix`.
Credentials, region and endpoint come from the usual AWS settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_PROFILE, ~/.aws/config), as boto3 reads them; every failure is one DatasetError line naming
the URL and what went wrong."""

import os
from urllib.parse import urlparse

from .images import DatasetError

SCHEME = "s3://"


def require_litdata(where):
    """LitData (and boto3, which comes with it) is an extra: one line saying so where it is missing."""
    try:
        import litdata  # noqa: F401
    except ImportError:
        raise DatasetError(f"{where}: LitData chunks and object storage need the litdata package; expected it "
                           "installed: pip install 'inception-next[litdata]'") from None


def is_url(root):
    return str(root).startswith(SCHEME)


def join(url, *parts):
    return "/".join([str(url).rstrip("/"), *parts])


class Bucket:
    """The objects under one `s3://bucket/prefix`."""

    def __init__(self, url, setting="data.root"):
        parsed = urlparse(str(url))
        if parsed.scheme != "s3" or not parsed.netloc:
            raise DatasetError(f"{setting} {url}: expected s3://bucket/prefix")
        require_litdata(f"{setting} {url}")
        self.url, self.setting = str(url).rstrip("/"), setting
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self._client = None

    def __getstate__(self):  # each process (loader workers included) opens its own connection
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            # A session of its own: boto3's default one keeps the credentials it first found.
            self._client = boto3.session.Session().client("s3", config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60))
        return self._client

    def key(self, name):
        return f"{self.prefix}/{name}" if self.prefix else name

    def fail(self, error, name=None):
        """One line for what boto3 raised: the object or bucket, the store's own reason, what was expected."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = join(self.url, name) if name else self.url
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS's"
        if isinstance(error, NoCredentialsError):
            return DatasetError(f"{self.setting} {where}: no credentials; expected AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (or an AWS profile)")
        if isinstance(error, EndpointConnectionError):
            return DatasetError(f"{self.setting} {where}: cannot reach the endpoint {endpoint} "
                                f"({error}); expected AWS_ENDPOINT_URL to name a running S3 server")
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                return DatasetError(f"{self.setting} {where}: no such object; expected the chunks `python -m "
                                    "inception_next prepare SRC s3://...` writes")
            if code == "NoSuchBucket":
                return DatasetError(f"{self.setting} {where}: no bucket {self.bucket!r} at {endpoint} endpoint; "
                                    "expected an existing bucket")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
                return DatasetError(f"{self.setting} {where}: refused by the store ({code}); expected credentials "
                                    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) allowed to use the bucket")
            return DatasetError(f"{self.setting} {where}: {code or 'error'} "
                                f"({error.response.get('Error', {}).get('Message', error)})")
        return DatasetError(f"{self.setting} {where}: {' '.join(str(error).split())}")

    def _call(self, name, call):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (BotoCoreError, ClientError) as error:
            raise self.fail(error, name) from None

    def exists(self, name):
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                self.check_bucket()
                return False
            raise self.fail(error, name) from None
        except Exception as error:
            raise self.fail(error, name) from None

    def check_bucket(self):
        self._call(None, lambda: self.client.head_bucket(Bucket=self.bucket))

    def names(self):
        """The objects under the prefix, relative to it."""
        found, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(None, lambda: self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", **extra))
            found += [item["Key"][len(self.prefix) + 1 if self.prefix else 0:] for item in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return found

    def read(self, name):
        body = self._call(name, lambda: self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"])
        return self._call(name, body.read)

    def write(self, name, data):
        self._call(name, lambda: self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data))

    def upload(self, path, name):
        self._call(name, lambda: self.client.upload_file(str(path), self.bucket, self.key(name)))

    def download(self, name, path):
        """The object into `path`, whole or not at all (written beside it, then renamed)."""
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            self._call(name, lambda: self.client.download_file(self.bucket, self.key(name), str(partial)))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
