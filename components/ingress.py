"""The way in: NGINX Gateway Fabric (Gateway API) with TLS, rate and body-size limits.

The community ingress-nginx project was retired in March 2026; NGINX Gateway Fabric
is NGINX's maintained implementation of the Gateway API (design note: docs/design.md).
One Gateway per stack; one HTTPRoute per service route declared in a manifest, each
with its own rate limit (RateLimitPolicy) and request body limit (ClientSettingsPolicy).
TLS terminates at the Gateway with a certificate from cert-manager (an issuer name)
or from an existing Secret (e.g. synced from ESC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.helm.v3 import ReleaseArgs, RepositoryOptsArgs
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.workload import labels_for

# NGF 2.4.0 is the first release with RateLimitPolicy, and is built and tested against Gateway API
# v1.4.1 (its config/crd/gateway-api/standard/kustomization.yaml; docs: technical specifications).
# The local toolchain takes the same CRDs from the Go module (toolchain/crds/go.mod); a test ties the three.
NGF_CHART, NGF_VERSION, NGF_REPO = "nginx-gateway-fabric", "2.4.0", "oci://ghcr.io/nginx/charts"
GATEWAY_API_VERSION = "v1.4.1"
GATEWAY_API_CRDS = (
    f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API_VERSION}/standard-install.yaml"
)
CERT_MANAGER_CHART, CERT_MANAGER_VERSION, CERT_MANAGER_REPO = "cert-manager", "v1.19.1", "https://charts.jetstack.io"
ACME_SERVERS = {
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "letsencrypt-prod": "https://acme-v02.api.letsencrypt.org/directory",
}
GATEWAY_CLASS = "nginx"
GATEWAY_NAME = "sophia"


# A/B pinning: a request naming a track in this header, or in this cookie, goes to that track
# whatever the weights (a tester, or a user kept on one side of an experiment).
TRACK_HEADER = "X-Sophia-Track"
TRACK_COOKIE = "sophia-track"
TRACKS = ("canary", "stable")
# W3C trace context and baggage: from outside, a caller could force its requests' traces to be kept
# (the sampled flag; the services' sampling is parent-based) and choose their ids. The gateway
# removes them unless the stack trusts its callers' context (sophia:tracing.trust_caller_context).
TRACE_CONTEXT_HEADERS = ("traceparent", "tracestate", "baggage")


@dataclass(frozen=True)
class CanaryRoute:
    """The canary track's Service and its share (percent) of the route's requests."""

    service: str
    weight: int


@dataclass(frozen=True)
class RouteSpec:
    service: str
    path: str
    rate_limit_rps: int = 50
    max_body_size_mb: int = 8
    port: int = 80
    canary: CanaryRoute | None = None


def route_rules(route: RouteSpec, services_namespace: str, trust_trace_context: bool = False) -> list[dict[str, Any]]:
    """The HTTPRoute's rules: one backend; or, with a canary, the stable and canary Services weighted
    (Gateway API backendRefs weights), after rules pinning a track by header or cookie (a match with
    a header outranks the plain path match, Gateway API's precedence). Each rule removes the
    caller's trace context unless it is trusted (a RequestHeaderModifier: Gateway API core)."""
    rules = _backend_rules(route, services_namespace)
    if trust_trace_context:
        return rules
    strip = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": list(TRACE_CONTEXT_HEADERS)}}
    return [{**rule, "filters": [strip]} for rule in rules]


def _backend_rules(route: RouteSpec, services_namespace: str) -> list[dict[str, Any]]:
    path = {"type": "PathPrefix", "value": route.path}

    def backend(service: str, weight: int | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": service, "namespace": services_namespace, "port": route.port}
        return ref if weight is None else {**ref, "weight": weight}

    if route.canary is None:
        return [{"matches": [{"path": path}], "backendRefs": [backend(route.service)]}]
    services = {"stable": route.service, "canary": route.canary.service}
    pinned = [
        {
            "matches": [
                {"path": path, "headers": [{"type": "Exact", "name": TRACK_HEADER, "value": track}]},
                {
                    "path": path,
                    "headers": [
                        {
                            "type": "RegularExpression",
                            "name": "Cookie",
                            "value": f"(^|;\\s*){TRACK_COOKIE}={track}(;|$)",
                        }
                    ],
                },
            ],
            "backendRefs": [backend(services[track])],
        }
        for track in TRACKS
    ]
    weighted = {
        "matches": [{"path": path}],
        "backendRefs": [
            backend(route.service, 100 - route.canary.weight),
            backend(route.canary.service, route.canary.weight),
        ],
    }
    return [*pinned, weighted]


@dataclass(frozen=True)
class IngressArgs:
    namespace: str
    services_namespace: str
    domain: str
    routes: Sequence[RouteSpec]
    tls_enabled: bool = False
    tls_issuer: str | None = None  # a key of ACME_SERVERS: the ClusterIssuer is made here
    acme_email: str | None = None
    tls_secret_name: str | None = None
    replicas: int = 1
    # False where charts and CRD manifests can't be fetched (the offline local stack).
    install_controller: bool = True
    # Without the controller, routes can still be created where the Gateway API CRDs exist.
    create_routes: bool = True
    # NGINX's policy CRDs come only with its chart.
    nginx_policies: bool = True
    crds: Sequence[pulumi.Resource] = ()
    # Pass callers' traceparent/tracestate/baggage on (TRACE_CONTEXT_HEADERS); off: removed.
    trust_trace_context: bool = False


def _custom(
    name: str, api_version: str, kind: str, metadata: ObjectMetaArgs, spec: dict[str, Any], opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        name, api_version=api_version, kind=kind, metadata=metadata, spec=spec, opts=opts
    )


def route_name(route: RouteSpec) -> str:
    return f"{route.service}-{route.path.strip('/').replace('/', '-')}"[:63].rstrip("-")


class Ingress(pulumi.ComponentResource):
    not_deployed: list[str]

    def __init__(self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Ingress", name, None, opts)
        self.not_deployed = []
        if not args.install_controller:
            self.not_deployed.append(
                f"ingress controller: NGINX Gateway Fabric {NGF_VERSION} chart (Helm repository "
                "unreachable offline); the Gateway and routes are created but nothing serves them"
            )
        if not args.nginx_policies:
            self.not_deployed.append(
                f"ingress limits: {2 * len(args.routes)} ClientSettingsPolicy/RateLimitPolicy "
                "objects (their CRDs ship only with the NGF chart)"
            )
        if not args.create_routes:
            self.register_outputs({"not_deployed": self.not_deployed})
            return
        child = pulumi.ResourceOptions(parent=self)
        ns = args.namespace
        labels = labels_for(GATEWAY_NAME, "ingress")

        if args.install_controller:
            crds = k8s.yaml.v2.ConfigFile(f"{name}-gateway-api-crds", file=GATEWAY_API_CRDS, opts=child)
            # helm.v3.Release (not helm.v4.Chart): the chart's install relies on Helm hooks.
            controller = k8s.helm.v3.Release(
                f"{name}-controller",
                ReleaseArgs(
                    name="ngf",
                    chart=NGF_CHART,
                    version=NGF_VERSION,
                    namespace=ns,
                    repository_opts=RepositoryOptsArgs(repo=NGF_REPO),
                    values={
                        "nginxGateway": {"replicas": args.replicas, "gatewayClassName": GATEWAY_CLASS},
                        "nginx": {
                            "replicas": args.replicas,
                            "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                        },
                    },
                    atomic=True,
                    cleanup_on_fail=True,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[crds]),
            )
            after_controller = pulumi.ResourceOptions(parent=self, depends_on=[controller])
        else:
            after_controller = pulumi.ResourceOptions(parent=self, depends_on=list(args.crds))

        listeners: list[dict[str, Any]] = [
            {
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "hostname": args.domain,
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            }
        ]
        if args.tls_enabled:
            cert_secret = args.tls_secret_name or f"{GATEWAY_NAME}-tls"
            if args.tls_issuer and not args.install_controller:
                self.not_deployed.append(
                    f"TLS: cert-manager {CERT_MANAGER_VERSION} chart and the {args.tls_issuer} ClusterIssuer and "
                    "Certificate (Helm repository and Let's Encrypt unreachable offline); the HTTPS listener names "
                    f"Secret {cert_secret}, which nothing fills"
                )
            elif args.tls_issuer:
                cert_manager = k8s.helm.v3.Release(
                    f"{name}-cert-manager",
                    ReleaseArgs(
                        name="cert-manager",
                        chart=CERT_MANAGER_CHART,
                        version=CERT_MANAGER_VERSION,
                        namespace=ns,
                        repository_opts=RepositoryOptsArgs(repo=CERT_MANAGER_REPO),
                        values={"crds": {"enabled": True}, "config": {"enableGatewayAPI": True}},
                        atomic=True,
                    ),
                    opts=child,
                )
                # HTTP-01 through this Gateway's plain listener: cert-manager answers the challenge with
                # its own HTTPRoute (an exact path, so it wins over the HTTPS redirect).
                issuer = _custom(
                    f"{name}-cluster-issuer",
                    "cert-manager.io/v1",
                    "ClusterIssuer",
                    ObjectMetaArgs(name=args.tls_issuer, labels=labels),
                    {
                        "acme": {
                            "server": ACME_SERVERS[args.tls_issuer],
                            "email": args.acme_email,
                            "privateKeySecretRef": {"name": f"{args.tls_issuer}-account"},
                            "solvers": [
                                {
                                    "http01": {
                                        "gatewayHTTPRoute": {
                                            "parentRefs": [
                                                {
                                                    "kind": "Gateway",
                                                    "name": GATEWAY_NAME,
                                                    "namespace": ns,
                                                    "sectionName": "http",
                                                }
                                            ]
                                        }
                                    }
                                }
                            ],
                        }
                    },
                    pulumi.ResourceOptions(parent=self, depends_on=[cert_manager]),
                )
                _custom(
                    f"{name}-certificate",
                    "cert-manager.io/v1",
                    "Certificate",
                    ObjectMetaArgs(name=cert_secret, namespace=ns, labels=labels),
                    {
                        "secretName": cert_secret,
                        "dnsNames": [args.domain],
                        "issuerRef": {"kind": "ClusterIssuer", "name": args.tls_issuer},
                    },
                    pulumi.ResourceOptions(parent=self, depends_on=[cert_manager, issuer]),
                )
            listeners.append(
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "hostname": args.domain,
                    "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": cert_secret}]},
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                }
            )
        gateway = _custom(
            f"{name}-gateway",
            "gateway.networking.k8s.io/v1",
            "Gateway",
            ObjectMetaArgs(name=GATEWAY_NAME, namespace=ns, labels=labels),
            {"gatewayClassName": GATEWAY_CLASS, "listeners": listeners},
            after_controller,
        )
        on_gateway = pulumi.ResourceOptions(parent=self, depends_on=[gateway])
        serving_listener = "https" if args.tls_enabled else "http"
        if args.tls_enabled:
            _custom(
                f"{name}-https-redirect",
                "gateway.networking.k8s.io/v1",
                "HTTPRoute",
                ObjectMetaArgs(name="https-redirect", namespace=ns, labels=labels),
                {
                    "parentRefs": [{"name": GATEWAY_NAME, "sectionName": "http"}],
                    "hostnames": [args.domain],
                    "rules": [
                        {
                            "filters": [
                                {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
                            ]
                        }
                    ],
                },
                on_gateway,
            )

        # Routes live beside the Gateway; a ReferenceGrant lets them reach Services in the services namespace.
        _custom(
            f"{name}-reference-grant",
            "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
            ObjectMetaArgs(name="routes-to-services", namespace=args.services_namespace, labels=labels),
            {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": ns}],
                "to": [{"group": "", "kind": "Service"}],
            },
            on_gateway,
        )
        for route in args.routes:
            rname = route_name(route)
            meta = ObjectMetaArgs(name=rname, namespace=ns, labels=labels_for(route.service, "route"))
            target = {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": rname}
            _custom(
                f"{name}-route-{rname}",
                "gateway.networking.k8s.io/v1",
                "HTTPRoute",
                meta,
                {
                    "parentRefs": [{"name": GATEWAY_NAME, "sectionName": serving_listener}],
                    "hostnames": [args.domain],
                    "rules": route_rules(route, args.services_namespace, args.trust_trace_context),
                },
                on_gateway,
            )
            if not args.nginx_policies:
                continue
            _custom(
                f"{name}-body-{rname}",
                "gateway.nginx.org/v1alpha1",
                "ClientSettingsPolicy",
                meta,
                {"targetRef": target, "body": {"maxSize": f"{route.max_body_size_mb}m"}},
                on_gateway,
            )
            # Per client address, with a burst of twice the rate, rejected with 429.
            _custom(
                f"{name}-rate-{rname}",
                "gateway.nginx.org/v1alpha1",
                "RateLimitPolicy",
                meta,
                {
                    "targetRefs": [target],
                    "rateLimit": {
                        "rejectCode": 429,
                        "local": {
                            "rules": [
                                {
                                    "key": "$binary_remote_addr",
                                    "zoneSize": "10m",
                                    "rate": f"{route.rate_limit_rps}r/s",
                                    "burst": 2 * route.rate_limit_rps,
                                }
                            ]
                        },
                    },
                },
                on_gateway,
            )

        self.register_outputs(
            {
                "gateway": GATEWAY_NAME,
                "routes": [r.path for r in args.routes],
                "url": f"{'https' if args.tls_enabled else 'http'}://{args.domain}",
            }
        )
