"""Credential rotation: the AWS Secrets Manager rotation function (aws_secrets_manager.py) and
the zero-downtime rotation of the platform's own credentials with its drill (drill.py)."""
