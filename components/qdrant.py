"""Qdrant, the vector database behind mcp-context.

A StatefulSet with persistent volumes and an API key from the generated secrets;
prod runs 3 replicas in distributed mode (Raft over the p2p port) spread across nodes.

Qdrant accepts one read-write key (`service.api_key`; the only other, `read_only_api_key`, cannot
write) and reads it at start. So a key rotates in a rolling order, one rotation behind: the server
runs the key from before the last rotation, which its callers have held (as QDRANT_API_KEY_NEXT)
since then; the StatefulSet rolls to it, and only once it has rolled are the callers' Secrets
given the new pair (the key in use and the next one). A caller (sophia_chassis.rotation) sends
the first key of the pair and the other on a 401/403, so replicas on either side of the roll
both answer it.
The seed's collection settings are the server-side defaults here and are what
mcp-context creates its collection with (`SEED_COLLECTION`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.apps.v1 import StatefulSetSpecArgs
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.backup import BackupJob, BackupTarget
from components.spec import Resources

HTTP_PORT, GRPC_PORT, P2P_PORT = 6333, 6334, 6335
# The secret keys (files under the secrets wl.mount): the API key callers send, and the one the
# server takes at the next rotation (tried on a 401/403 while the replicas roll).
API_KEY_KEY = "QDRANT_API_KEY"
NEXT_API_KEY_KEY = "QDRANT_API_KEY_NEXT"
QDRANT_UID = QDRANT_GID = wl.RUN_AS  # the `-unprivileged` image runs as any UID with writable storage

# The seed's production collection: text-embedding-3-large vectors.
SEED_COLLECTION: dict[str, Any] = {
    "vectors": {"size": 3072, "distance": "Cosine"},
    "hnsw_config": {"m": 16, "ef_construct": 200, "full_scan_threshold": 10000},
    "optimizers_config": {"default_segment_number": 2, "max_optimization_threads": 2},
}


@dataclass(frozen=True)
class QdrantArgs:
    namespace: str
    # The newest generated key; with `previous_api_key` the server runs the previous one (see above).
    api_key: pulumi.Input[str]
    services_namespace: str
    previous_api_key: pulumi.Input[str] | None = None
    callers: Sequence[str] = ()
    metrics_namespace: str | None = None
    replicas: int = 1
    storage_size: str = "10Gi"
    storage_class: str | None = None
    # False: data in an emptyDir (a cluster without a volume provisioner; lost with the pod).
    persistent: bool = True
    resources: Resources = wl.resource_amounts(requests=("250m", "1Gi"), limits=("2", "4Gi"))
    image: str = "qdrant/qdrant:v1.20.0-unprivileged"  # same minor as qdrant-client in mcp-context
    # Scheduled snapshots of every collection, from every replica, to object storage (sophia:backup).
    backup: BackupTarget | None = None


def server_config(api_key: str, distributed: bool) -> str:
    """Qdrant's config/local.yaml: the API key, cluster mode and the seed's index defaults."""
    config = {
        "service": {"api_key": api_key, "http_port": HTTP_PORT, "grpc_port": GRPC_PORT},
        "cluster": {"enabled": distributed, "p2p": {"port": P2P_PORT}},
        "storage": {
            "storage_path": "/qdrant/storage",
            "snapshots_path": "/qdrant/snapshots",
            "hnsw_index": {
                "m": SEED_COLLECTION["hnsw_config"]["m"],
                "ef_construct": SEED_COLLECTION["hnsw_config"]["ef_construct"],
                "full_scan_threshold_kb": SEED_COLLECTION["hnsw_config"]["full_scan_threshold"],
            },
            "optimizers": {"default_segment_number": SEED_COLLECTION["optimizers_config"]["default_segment_number"]},
            "performance": {
                "max_optimization_threads": SEED_COLLECTION["optimizers_config"]["max_optimization_threads"]
            },
        },
        "telemetry_disabled": True,
    }
    return yaml.safe_dump(config, sort_keys=True)


class Qdrant(pulumi.ComponentResource):
    url: str

    def __init__(self, name: str, args: QdrantArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Qdrant", name, None, opts)
        if args.replicas not in (1, 3, 5):
            raise ValueError(f"qdrant replicas must be 1, 3 or 5 (Raft needs an odd quorum), given {args.replicas}")
        child = pulumi.ResourceOptions(parent=self)
        w = wl.Workload("qdrant", args.namespace, "vector-database")
        distributed = args.replicas > 1
        headless = f"{w.app}-headless"
        # The key the server runs: the one before the newest, once there is one.
        server_key = pulumi.Output.all(args.api_key, args.previous_api_key).apply(lambda keys: keys[1] or keys[0])
        self._server_key, self._next_key = server_key, pulumi.Output.from_input(args.api_key)
        # Clustered: each shard on two nodes (a node lost loses no data), a shard per node, and a write
        # acknowledged once one copy has it (a node down does not stop writes). mcp-context creates the
        # collection with these.
        self._cluster_env = (
            {
                "QDRANT_REPLICATION_FACTOR": "2",
                "QDRANT_WRITE_CONSISTENCY_FACTOR": "1",
                "QDRANT_SHARD_NUMBER": str(args.replicas),
            }
            if args.replicas > 1
            else {}
        )

        config_text = server_key.apply(lambda key: server_config(key, distributed))
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata=w.meta("qdrant-config"),
            type="Opaque",
            string_data={"local.yaml": pulumi.Output.secret(config_text)},
            opts=child,
        )

        # Peers find each other through the headless service; pod 0 bootstraps the cluster.
        peer_uri = f"http://$(POD_NAME).{wl.cluster_host(headless, w.namespace)}:{P2P_PORT}"
        cluster_args = (
            ["--uri", peer_uri, "--bootstrap", f"http://{w.app}-0.{wl.cluster_host(headless, w.namespace)}:{P2P_PORT}"]
            if distributed
            else []
        )
        http_probe = lambda path, period, **rest: core.ProbeArgs(  # noqa: E731
            http_get=core.HTTPGetActionArgs(path=path, port="http"), period_seconds=period, **rest
        )
        container = wl.upstream_container(
            "qdrant",
            args.image,
            QDRANT_UID,
            {"http": HTTP_PORT, "grpc": GRPC_PORT, "p2p": P2P_PORT},
            args.resources,
            gid=QDRANT_GID,
            # The image's entrypoint runs qdrant with these arguments.
            args=cluster_args or None,
            env=[
                core.EnvVarArgs(
                    name="POD_NAME",
                    value_from=core.EnvVarSourceArgs(
                        field_ref=core.ObjectFieldSelectorArgs(field_path="metadata.name")
                    ),
                )
            ],
            # Qdrant's health endpoints are exempt from the API key.
            startup_probe=http_probe("/healthz", 5, failure_threshold=60),
            liveness_probe=http_probe("/livez", 10),
            readiness_probe=http_probe("/readyz", 5),
            volume_mounts=[
                wl.mount("storage", "/qdrant/storage"),
                wl.mount("snapshots", "/qdrant/snapshots"),
                wl.mount("tmp", "/tmp"),
                wl.mount("config", "/qdrant/config/local.yaml", sub_path="local.yaml", read_only=True),
            ],
        )
        affinity = None
        if distributed:
            # One replica per node: losing a node must not lose a Raft majority.
            affinity = core.AffinityArgs(
                pod_anti_affinity=core.PodAntiAffinityArgs(
                    required_during_scheduling_ignored_during_execution=[
                        core.PodAffinityTermArgs(
                            topology_key="kubernetes.io/hostname",
                            label_selector=LabelSelectorArgs(match_labels=w.selector),
                        )
                    ]
                )
            )
        volumes = [
            wl.secret_volume("config", secret),
            wl.scratch_volume("snapshots", "5Gi"),
            wl.scratch_volume("tmp", "256Mi"),
        ]
        claims = None
        if args.persistent:
            claims = [wl.volume_claim("storage", w.labels, args.storage_size, args.storage_class)]
        else:
            volumes.append(wl.scratch_volume("storage", args.storage_size))
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=w.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=StatefulSetSpecArgs(
                service_name=headless,
                replicas=args.replicas,
                pod_management_policy="Parallel",
                selector=LabelSelectorArgs(match_labels=w.selector),
                volume_claim_templates=claims,
                template=wl.pod_template(
                    w.labels,
                    wl.pod_annotations(wl.content_checksum(config_text), HTTP_PORT),
                    QDRANT_UID,
                    QDRANT_GID,
                    affinity=affinity,
                    containers=[container],
                    volumes=volumes,
                    termination_grace_period_seconds=60,
                ),
            ),
            opts=child,
        )

        api = {"http": HTTP_PORT, "grpc": GRPC_PORT}
        wl.cluster_service(f"{name}-service", w.meta(), w.selector, api, child)
        wl.cluster_service(
            f"{name}-headless",
            w.meta(headless),
            w.selector,
            {**api, "p2p": P2P_PORT},
            child,
            cluster_ip="None",
            publish_not_ready_addresses=True,
        )
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, child)

        ingress = wl.callers_ingress(args.callers, args.services_namespace, HTTP_PORT, GRPC_PORT) + wl.metrics_ingress(
            args.metrics_namespace, HTTP_PORT
        )
        if args.backup is not None:
            nodes = [
                f"http://{w.app}-{i}.{wl.cluster_host(headless, w.namespace)}:{HTTP_PORT}" for i in range(args.replicas)
            ]
            backup = BackupJob(
                f"{name}-backup",
                w,
                "qdrant",
                args.backup,
                env={"QDRANT_URLS": " ".join(nodes)},
                secrets={API_KEY_KEY: server_key},
                store_port=HTTP_PORT,
                scratch=args.storage_size,
                opts=child,
            )
            ingress.append(backup.ingress(HTTP_PORT))
        egress = []
        if distributed:
            # Raft between the replicas, which find each other by name.
            ingress.append(wl.allow_in([wl.same_app_peer(w.selector)], P2P_PORT))
            egress += [wl.allow_out([wl.same_app_peer(w.selector)], P2P_PORT), wl.dns_egress()]
        wl.network_policy(f"{name}-netpol", w.meta(), w.selector, ingress, egress, child)

        self.url = f"http://{w.host}:{HTTP_PORT}"
        self.peer = wl.Peer(w.namespace, w.selector, HTTP_PORT)
        self.register_outputs({"url": self.url, "replicas": args.replicas, "collection": SEED_COLLECTION})

    def connection(self, caller: str) -> wl.Connection:
        """Every caller uses the one API key (Qdrant has no per-user auth), and holds the next one; its
        Secret is written once the StatefulSet has rolled to the key in it."""
        next_key = pulumi.Output.all(self._server_key, self._next_key).apply(lambda k: "" if k[0] == k[1] else k[1])
        secrets = {API_KEY_KEY: self._server_key, NEXT_API_KEY_KEY: next_key}
        return wl.Connection(
            peer=self.peer,
            env={"QDRANT_URL": self.url, **self._cluster_env},
            secrets=secrets,
            live_secrets=frozenset(secrets),
            secrets_after=[self.stateful_set],
        )


@dataclass(frozen=True)
class EmbeddedQdrantArgs:
    # The callers' namespace: each gets a claim there, named `<caller>-data`.
    services_namespace: str
    callers: Sequence[str] = ()
    storage_size: str = "10Gi"
    storage_class: str | None = None


class EmbeddedQdrant(pulumi.ComponentResource):
    """The local stack's stand-in for the Qdrant server, which cannot be had offline (no binary,
    no image): each caller runs Qdrant Edge in its own process, its shard on its own
    PersistentVolumeClaim (mounted at wl.DATA_MOUNT). No server, so no peer, key or policy."""

    url = "embedded (Qdrant Edge)"

    def __init__(self, name: str, args: EmbeddedQdrantArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:EmbeddedQdrant", name, None, opts)
        self.claims: dict[str, pulumi.Output[str]] = {}
        for caller in args.callers:
            claim = k8s.core.v1.PersistentVolumeClaim(
                f"{name}-{caller}",
                # Bound when the pod is scheduled (WaitForFirstConsumer): nothing to wait for here.
                metadata=wl.Workload(caller, args.services_namespace).meta(
                    f"{caller}-data", annotations={"pulumi.com/skipAwait": "true"}
                ),
                spec=core.PersistentVolumeClaimSpecArgs(
                    access_modes=["ReadWriteOnce"],
                    storage_class_name=args.storage_class,
                    resources=core.VolumeResourceRequirementsArgs(requests={"storage": args.storage_size}),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.claims[caller] = claim.metadata.name
        self.register_outputs({"url": self.url, "collection": SEED_COLLECTION})

    def connection(self, caller: str) -> wl.Connection:
        return wl.Connection(
            peer=None, env={"QDRANT_PATH": f"{wl.DATA_MOUNT}/qdrant"}, secrets={}, volume_claim=self.claims[caller]
        )
