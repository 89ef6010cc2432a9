"""The Secrets Manager rotation function for the backup writer's S3 keys
(`sophia/<stack>/backup-writer`, which ESC reads with fn::open::aws-secrets).

Deployed as a Lambda with Secrets Manager rotation enabled on the secret; Secrets Manager calls
it four times per rotation with the same ClientRequestToken (the new version's id):

  createSecret  a new access key for the IAM user, stored as the AWSPENDING version. IAM allows a
                user two keys: before creating one, the key that is neither AWSCURRENT nor
                AWSPREVIOUS-to-be (the one that went out of use a rotation ago) is deleted.
  setSecret     nothing: an IAM key is valid the moment it exists.
  testSecret    the pending key signs a request (STS GetCallerIdentity) as the right user.
  finishSecret  AWSCURRENT moves to the new version (Secrets Manager makes the old one AWSPREVIOUS),
                and AWSPENDING is taken off it.

So two keys are valid between rotations: the current one, which `pulumi up` (through ESC)
hands the backup jobs, and the previous one, which jobs started before that deploy still hold.
The previous key is revoked by the next rotation's createSecret, a whole rotation period later.

The secret's value: {"userName": ..., "accessKeyId": ..., "secretAccessKey": ...}.
"""

from __future__ import annotations

import json
from typing import Any

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"


class RotationError(RuntimeError):
    pass


def lambda_handler(event: dict[str, Any], context: Any = None, session: Any = None) -> None:
    import boto3

    session = session or boto3.session.Session()
    secrets = session.client("secretsmanager")
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    versions = secrets.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
    if CURRENT in versions.get(token, []):
        return  # this rotation already finished
    if step != "createSecret" and PENDING not in versions.get(token, []):
        raise RotationError(f"{step}: version {token} of {arn} is not AWSPENDING")
    steps = {"createSecret": create_secret, "setSecret": set_secret, "testSecret": test_secret}
    steps["finishSecret"] = finish_secret
    if step not in steps:
        raise RotationError(f"unknown step {step!r}")
    steps[step](session, secrets, arn, token)


def _value(secrets: Any, arn: str, **version: str) -> dict[str, str]:
    return json.loads(secrets.get_secret_value(SecretId=arn, **version)["SecretString"])


def create_secret(session: Any, secrets: Any, arn: str, token: str) -> None:
    current = _value(secrets, arn, VersionStage=CURRENT)
    try:
        _value(secrets, arn, VersionId=token, VersionStage=PENDING)
        return  # a retried createSecret: the key exists already
    except secrets.exceptions.ResourceNotFoundException:
        pass
    iam = session.client("iam")
    user = current["userName"]
    for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        if key["AccessKeyId"] != current["accessKeyId"]:
            # Out of use since the last rotation made it AWSPREVIOUS: revoked now.
            iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    new = iam.create_access_key(UserName=user)["AccessKey"]
    value = {"userName": user, "accessKeyId": new["AccessKeyId"], "secretAccessKey": new["SecretAccessKey"]}
    secrets.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(value), VersionStages=[PENDING]
    )


def set_secret(session: Any, secrets: Any, arn: str, token: str) -> None:
    """An IAM access key needs no setting: it is valid once created."""


def test_secret(session: Any, secrets: Any, arn: str, token: str) -> None:
    import boto3

    pending = _value(secrets, arn, VersionId=token, VersionStage=PENDING)
    sts = boto3.session.Session(
        aws_access_key_id=pending["accessKeyId"],
        aws_secret_access_key=pending["secretAccessKey"],
        region_name=session.region_name,
    ).client("sts")
    arn_of_key = sts.get_caller_identity()["Arn"]
    if not arn_of_key.endswith(f":user/{pending['userName']}"):
        raise RotationError(f"the pending key signs as {arn_of_key}, not user {pending['userName']}")


def finish_secret(session: Any, secrets: Any, arn: str, token: str) -> None:
    versions = secrets.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next((v for v, stages in versions.items() if CURRENT in stages), None)
    if current != token:
        secrets.update_secret_version_stage(
            SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=current
        )
    # The label Secrets Manager drops after a successful rotation; dropped here too, so a run of the
    # steps without Secrets Manager's bookkeeping (moto, a manual rotation) leaves no stale pending.
    secrets.update_secret_version_stage(SecretId=arn, VersionStage=PENDING, RemoveFromVersionId=token)
