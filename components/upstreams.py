"""Stand-ins for the internet's APIs on the local stack (`sophia:local_upstreams`).

The local cluster has no route off the machine and no keys, so the services that call out
(`calls.external`) would never be ready: agno-coordinator has no model provider, mcp-github
and mcp-hubspot cannot reach their APIs. This one pod runs the faithful fakes the tests use
(`sophia_testing.upstreams`: OpenAI-compatible chat, GitHub, HubSpot) and each calling service
gets a connection to its upstream, like a data store's: the base URL, the fake's token as the
secret its manifest asks for, and an egress rule to this pod. dev and prod never deploy it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.image import ImageSource, image_reference
from components.spec import Resources

UPSTREAMS_UID = wl.RUN_AS


@dataclass(frozen=True)
class Upstream:
    """One faked API: its port, the secret key a caller's manifest names for it and the
    fake's token for that key, and the setting that points the caller at it."""

    port: int
    secret_key: str
    token: str
    url_env: str
    path: str = ""


# Keyed by the secret a service's manifest asks for; the tokens are the fakes' own
# (sophia_testing.github_fake.TOKEN, hubspot_fake.TOKEN; the chat fake takes any key).
UPSTREAMS = {
    "OPENAI_API_KEY": Upstream(8081, "OPENAI_API_KEY", "sk-local-stand-in", "OPENAI_BASE_URL", "/v1"),
    "GITHUB_TOKEN": Upstream(8082, "GITHUB_TOKEN", "ghp_fake_token_for_tests", "GITHUB_API_URL"),
    "HUBSPOT_ACCESS_TOKEN": Upstream(
        8083, "HUBSPOT_ACCESS_TOKEN", "pat-na1-11111111-2222-3333-4444-555555555555", "HUBSPOT_API_URL"
    ),
}


@dataclass(frozen=True)
class UpstreamsArgs:
    namespace: str
    services_namespace: str
    # Calling service -> the secret keys of its manifest that name an upstream.
    callers: dict[str, Sequence[str]]
    image: ImageSource
    resources: Resources = wl.resource_amounts(requests=("20m", "64Mi"), limits=("250m", "256Mi"))


class Upstreams(pulumi.ComponentResource):
    def __init__(self, name: str, args: UpstreamsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Upstreams", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        w = wl.Workload("upstreams", args.namespace, "upstream-stand-ins")
        self._workload, self._callers = w, args.callers
        ports = {f"u{u.port}": u.port for u in UPSTREAMS.values()}
        container = core.ContainerArgs(
            name="upstreams",
            image=image_reference(name, args.image, self),
            image_pull_policy="IfNotPresent",
            ports=[core.ContainerPortArgs(name=n, container_port=p) for n, p in ports.items()],
            resources=wl.resource_requirements(args.resources),
            security_context=wl.container_security(UPSTREAMS_UID),
            readiness_probe=core.ProbeArgs(
                http_get=core.HTTPGetActionArgs(path="/v1/models", port=UPSTREAMS["OPENAI_API_KEY"].port),
                period_seconds=5,
            ),
            liveness_probe=core.ProbeArgs(tcp_socket=core.TCPSocketActionArgs(port="u8081"), period_seconds=10),
            volume_mounts=[wl.mount("tmp", "/tmp")],
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=w.meta(),
            spec=DeploymentSpecArgs(
                replicas=1,
                selector=LabelSelectorArgs(match_labels=w.selector),
                strategy=DeploymentStrategyArgs(
                    type="RollingUpdate", rolling_update=RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)
                ),
                template=wl.pod_template(
                    w.labels,
                    wl.pod_annotations(wl.content_checksum(json.dumps(ports, sort_keys=True))),
                    UPSTREAMS_UID,
                    containers=[container],
                    volumes=[wl.scratch_volume("tmp", "16Mi")],
                ),
            ),
            opts=child,
        )
        wl.cluster_service(f"{name}-service", w.meta(), w.selector, ports, child)
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, child)
        # In: each caller on its upstream's port only. Out: nothing (the fakes call no one).
        ingress = [
            wl.allow_in([wl.pods_named([caller], args.services_namespace)], *(UPSTREAMS[k].port for k in keys))
            for caller, keys in sorted(args.callers.items())
        ]
        wl.network_policy(f"{name}-netpol", w.meta(), w.selector, ingress, [], child)
        self.host = w.host
        self.register_outputs({"host": self.host, "callers": sorted(args.callers)})

    def connections(self, caller: str) -> list[wl.Connection]:
        """One per upstream the caller's manifest names a key of: URL setting, the fake's token, egress."""
        return [
            wl.Connection(
                peer=wl.Peer(self._workload.namespace, self._workload.selector, UPSTREAMS[key].port),
                env={UPSTREAMS[key].url_env: f"http://{self.host}:{UPSTREAMS[key].port}{UPSTREAMS[key].path}"},
                secrets={key: UPSTREAMS[key].token},
            )
            for key in self._callers.get(caller, ())
        ]
