"""A data store's scheduled backup to S3-compatible storage: a CronJob that runs
components/sophia_backup.py (standard library only, mounted from a ConfigMap) in the upstream
python image, with the bucket's keys and the store's credential as files, and a NetworkPolicy
that lets it reach the store, DNS and the object store only. The store admits it with
`BackupJob.ingress`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.batch.v1 import CronJobSpecArgs, JobSpecArgs, JobTemplateSpecArgs
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs
from pulumi_kubernetes.networking import v1 as net

from components import workload as wl
from components.spec import Resources

SCRIPT = Path(__file__).with_name("sophia_backup.py")
SECRETS_DIR = "/var/run/secrets/sophia-backup"
ACCESS_KEY, SECRET_KEY = "BACKUP_ACCESS_KEY_ID", "BACKUP_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class BackupTarget(wl.ObjectStorage):
    """Where backups go (sophia:backup, from ESC) and the writer's keys (ESC secrets)."""

    prefix: str = ""
    schedule: str = "17 3 * * *"
    retention_days: int = 14
    image: str = "python:3.12.12-slim-bookworm"
    resources: Resources = wl.resource_amounts(requests=("50m", "64Mi"), limits=("500m", "256Mi"))


class BackupJob:
    def __init__(
        self,
        name: str,
        store: wl.Workload,
        kind: str,
        target: BackupTarget,
        env: Mapping[str, str],
        secrets: Mapping[str, pulumi.Input[str]],
        store_port: int,
        scratch: str,
        opts: pulumi.ResourceOptions,
    ):
        w = wl.Workload(f"{store.app}-backup", store.namespace, "backup")
        self.selector = w.selector
        script = k8s.core.v1.ConfigMap(
            f"{name}-script", metadata=w.meta(), data={"sophia_backup.py": SCRIPT.read_text()}, opts=opts
        )
        secret = k8s.core.v1.Secret(
            f"{name}-keys",
            metadata=w.meta(),
            type="Opaque",
            string_data={
                ACCESS_KEY: pulumi.Output.secret(target.access_key_id),
                SECRET_KEY: pulumi.Output.secret(target.secret_access_key),
                **{k: pulumi.Output.secret(v) for k, v in secrets.items()},
            },
            opts=opts,
        )
        settings = {
            "BACKUP_BUCKET": target.bucket,
            "BACKUP_PREFIX": target.prefix,
            "BACKUP_REGION": target.region,
            "BACKUP_RETENTION_DAYS": str(target.retention_days),
            "BACKUP_SECRETS_DIR": SECRETS_DIR,
            "TMPDIR": "/tmp",
            **({"BACKUP_ENDPOINT": target.endpoint} if target.endpoint else {}),
            **env,
        }
        container = wl.upstream_container(
            "backup",
            target.image,
            wl.RUN_AS,
            {},
            target.resources,
            command=["python", "/opt/backup/sophia_backup.py", "backup", kind],
            env=[core.EnvVarArgs(name=k, value=v) for k, v in sorted(settings.items())],
            volume_mounts=[
                wl.mount("script", "/opt/backup", read_only=True),
                wl.mount("keys", SECRETS_DIR, read_only=True),
                wl.mount("tmp", "/tmp"),
            ],
        )
        template = wl.pod_template(
            w.labels,
            wl.pod_annotations(wl.content_checksum(SCRIPT.read_text())),
            wl.RUN_AS,
            containers=[container],
            restart_policy="Never",
            volumes=[
                wl.config_volume("script", script),
                wl.secret_volume("keys", secret),
                wl.scratch_volume("tmp", scratch),
            ],
        )
        k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata=w.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=CronJobSpecArgs(
                schedule=target.schedule,
                time_zone="Etc/UTC",
                concurrency_policy="Forbid",  # never two backups of one store at once
                starting_deadline_seconds=3600,
                successful_jobs_history_limit=3,
                failed_jobs_history_limit=3,
                job_template=JobTemplateSpecArgs(
                    metadata=ObjectMetaArgs(labels=w.labels),
                    spec=JobSpecArgs(
                        backoff_limit=2,
                        active_deadline_seconds=3 * 3600,
                        ttl_seconds_after_finished=86400,
                        template=template,
                    ),
                ),
            ),
            opts=opts,
        )
        # Out: the store, DNS, the object store (on the internet, never the cluster's ranges). In: nothing.
        wl.network_policy(
            f"{name}-netpol",
            w.meta(),
            w.selector,
            ingress=[],
            egress=[
                wl.allow_out([wl.same_app_peer(store.selector)], store_port),
                wl.dns_egress(),
                wl.internet_egress(target.port),
            ],
            opts=opts,
        )

    def ingress(self, port: int) -> net.NetworkPolicyIngressRuleArgs:
        """The store's rule admitting its backup job."""
        return wl.allow_in([wl.same_app_peer(self.selector)], port)
