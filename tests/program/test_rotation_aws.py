"""The Secrets Manager rotation function (rotation/aws_secrets_manager.py) against moto's server,
with IAM authentication on: the four steps called as Secrets Manager would (moto runs no Lambda),
each version read with an explicit VersionStage (moto's default-version read can lag)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from rotation.aws_secrets_manager import RotationError, lambda_handler
from sophia_testing.servers import free_port

SECRET = "sophia/prod/backup-writer"
STEPS = ["createSecret", "setSecret", "testSecret", "finishSecret"]


@pytest.fixture(scope="module")
def aws(tmp_path_factory) -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's backends are per process, shared by every ThreadedMotoServer: start from nothing.
    httpx.post(f"{url}/moto-api/reset").raise_for_status()
    anyone = {"endpoint_url": url, "region_name": "us-east-2", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    try:
        iam = boto3.client("iam", **anyone)
        # The rotation function's role (here a user) and the backup writer whose keys rotate.
        iam.create_user(UserName="rotator")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="rotator", PolicyName="all", PolicyDocument=json.dumps(policy))
        rotator = iam.create_access_key(UserName="rotator")["AccessKey"]
        iam.create_user(UserName="backup-writer")
        first = iam.create_access_key(UserName="backup-writer")["AccessKey"]
        value = {
            "userName": "backup-writer",
            "accessKeyId": first["AccessKeyId"],
            "secretAccessKey": first["SecretAccessKey"],
        }
        boto3.client("secretsmanager", **anyone).create_secret(Name=SECRET, SecretString=json.dumps(value))
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0").raise_for_status()  # from now on, keys are checked
        yield {"url": url, "rotator": rotator, "first": value}
    finally:
        httpx.post(f"{url}/moto-api/reset-auth", content=b"inf")
        server.stop()


@pytest.fixture
def session(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> boto3.session.Session:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws["url"])  # what every client of the function talks to
    return boto3.session.Session(
        aws_access_key_id=aws["rotator"]["AccessKeyId"],
        aws_secret_access_key=aws["rotator"]["SecretAccessKey"],
        region_name="us-east-2",
    )


def rotate(session: boto3.session.Session, steps: list[str] = STEPS) -> str:
    token = str(uuid.uuid4())
    for step in steps:
        lambda_handler({"SecretId": SECRET, "ClientRequestToken": token, "Step": step}, None, session)
    return token


def stage(session: boto3.session.Session, name: str) -> dict[str, str]:
    return json.loads(
        session.client("secretsmanager").get_secret_value(SecretId=SECRET, VersionStage=name)["SecretString"]
    )


def works(key: dict[str, str]) -> bool:
    sts = boto3.session.Session(
        aws_access_key_id=key["accessKeyId"], aws_secret_access_key=key["secretAccessKey"], region_name="us-east-2"
    ).client("sts")
    try:
        return sts.get_caller_identity()["Arn"].endswith(":user/backup-writer")
    except ClientError:
        return False


def test_rotation_keeps_two_valid_keys_and_revokes_the_one_before(aws, session) -> None:
    first = aws["first"]
    assert works(first)
    token = rotate(session)
    second = stage(session, "AWSCURRENT")
    versions = session.client("secretsmanager").describe_secret(SecretId=SECRET)["VersionIdsToStages"]
    assert versions[token] == ["AWSCURRENT"]
    assert stage(session, "AWSPREVIOUS") == first and second["accessKeyId"] != first["accessKeyId"]
    assert works(first) and works(second)  # the window: jobs holding either key keep working

    rotate(session)
    third = stage(session, "AWSCURRENT")
    assert stage(session, "AWSPREVIOUS") == second
    assert works(second) and works(third)
    assert not works(first), "the key from two rotations ago is revoked and rejected"
    keys = session.client("iam").list_access_keys(UserName="backup-writer")["AccessKeyMetadata"]
    assert {k["AccessKeyId"] for k in keys} == {second["accessKeyId"], third["accessKeyId"]}


def test_retried_steps_are_idempotent_and_a_failed_test_changes_nothing(aws, session) -> None:
    before = stage(session, "AWSCURRENT")
    token = str(uuid.uuid4())
    event = {"SecretId": SECRET, "ClientRequestToken": token}
    lambda_handler({**event, "Step": "createSecret"}, None, session)
    pending = json.loads(
        session.client("secretsmanager").get_secret_value(SecretId=SECRET, VersionId=token, VersionStage="AWSPENDING")[
            "SecretString"
        ]
    )
    lambda_handler({**event, "Step": "createSecret"}, None, session)  # Secrets Manager retries
    keys = session.client("iam").list_access_keys(UserName="backup-writer")["AccessKeyMetadata"]
    assert pending["accessKeyId"] in {k["AccessKeyId"] for k in keys} and len(keys) == 2

    # The pending key stops working (revoked by hand): testSecret fails and finishSecret never runs.
    session.client("iam").delete_access_key(UserName="backup-writer", AccessKeyId=pending["accessKeyId"])
    with pytest.raises(ClientError):
        lambda_handler({**event, "Step": "testSecret"}, None, session)
    assert stage(session, "AWSCURRENT") == before and works(before)

    with pytest.raises(RotationError, match="not AWSPENDING"):
        lambda_handler({**event, "ClientRequestToken": str(uuid.uuid4()), "Step": "finishSecret"}, None, session)
