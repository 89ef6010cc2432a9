"""The toolchain's trimmed builds still hold what the local stack asks of them (toolchain/build.sh
compiles CoreDNS with a subset of its plugins and Jaeger with only the components the local
configuration names, to keep a cold build short). The built binaries themselves, no cluster:
`.venv/bin/python -m pytest e2e/test_toolchain.py` after `source toolchain/env.sh`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from components.tracing import jaeger_config

REPO = Path(__file__).resolve().parents[1]


def toolchain_binary(name: str) -> Path:
    bin_dir = os.environ.get("SOPHIA_TOOLCHAIN_BIN")
    assert bin_dir, "SOPHIA_TOOLCHAIN_BIN is not set: source toolchain/env.sh (make e2e does)"
    path = Path(bin_dir) / name
    assert path.is_file(), f"{path} is missing: run toolchain/build.sh {name}"
    return path


def corefile_plugins() -> list[str]:
    """The plugins the node's Corefile (the CoreDNS ConfigMap in toolchain/node.sh) names: the first
    word of each line directly inside a server block (deeper lines are a plugin's own options)."""
    text = (REPO / "toolchain" / "node.sh").read_text()
    block = re.search(r"^  Corefile: \|\n((?:    .*\n)+)", text, re.MULTILINE)
    assert block, "no Corefile in toolchain/node.sh"
    plugins, depth = [], 0
    for line in block.group(1).splitlines():
        words = line.split()
        if depth == 1 and words and words[0] != "}":
            plugins.append(words[0])
        depth += line.count("{") - line.count("}")
    return plugins


def test_the_corefile_parser_reads_the_plugins_and_not_their_options() -> None:
    plugins = corefile_plugins()
    assert {"kubernetes", "cache", "health", "ready"} <= set(plugins)
    assert "pods" not in plugins  # an option of the kubernetes plugin


def test_coredns_has_every_plugin_the_corefile_names() -> None:
    listed = subprocess.run(
        [toolchain_binary("coredns"), "-plugins"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    # One plugin a line (older releases prefixed the server type: `dns.cache`).
    have = {line.strip().removeprefix("dns.") for line in listed.splitlines()}
    missing = [p for p in corefile_plugins() if p not in have]
    assert not missing, f"CoreDNS was built without {missing}: add them to recipe_coredns in toolchain/build.sh"


@pytest.mark.parametrize("retention_hours", [1, 72])
def test_jaeger_accepts_the_local_stacks_configuration(tmp_path: Path, retention_hours: int) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(jaeger_config(retention_hours)))
    result = subprocess.run(
        [toolchain_binary("jaeger"), "validate", f"--config={config}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_jaeger_refuses_a_component_it_was_built_without(tmp_path: Path) -> None:
    """The check above can fail: a component left out of toolchain/jaeger/main.go is refused."""
    config = jaeger_config(1)
    config["receivers"]["zipkin"] = {}
    config["service"]["pipelines"]["traces"]["receivers"].append("zipkin")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [toolchain_binary("jaeger"), "validate", f"--config={path}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "zipkin" in result.stderr, result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jaeger_stores_an_otlp_span_in_badger_and_answers_for_it(tmp_path: Path) -> None:
    """The trimmed Jaeger does the local stack's whole job: OTLP in, Badger on disk, the query API out
    (what Grafana and `make traces` read), with the stack's own configuration on free local ports."""
    otlp, query, health = free_port(), free_port(), free_port()
    config = jaeger_config(1)
    config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = f"127.0.0.1:{otlp}"
    config["extensions"]["jaeger_query"]["http"]["endpoint"] = f"127.0.0.1:{query}"
    config["extensions"]["healthcheckv2"]["http"]["endpoint"] = f"127.0.0.1:{health}"
    badger = config["extensions"]["jaeger_storage"]["backends"]["traces"]["badger"]["directories"]
    badger.update(keys=str(tmp_path / "keys"), values=str(tmp_path / "values"))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "jaeger.log").open("w")
    jaeger = subprocess.Popen([toolchain_binary("jaeger"), f"--config={path}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "toolchain-check"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{otlp}", insecure=True)))
        deadline, found = time.monotonic() + 60, []
        while not found and time.monotonic() < deadline:
            with provider.get_tracer("check").start_as_current_span("stored-in-badger"):
                pass
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{query}/api/traces?service=toolchain-check", timeout=5
                ) as response:
                    found = json.load(response)["data"]
            except OSError:
                pass
            time.sleep(1)
        provider.shutdown()
        assert found, (tmp_path / "jaeger.log").read_text()[-3000:]
        assert {s["operationName"] for t in found for s in t["spans"]} == {"stored-in-badger"}
        assert any((tmp_path / "values").iterdir()), "nothing written to Badger's directory"
    finally:
        jaeger.terminate()
        jaeger.wait(timeout=30)
        log.close()


def test_traefik_built_without_legos_dns_providers_starts_and_proxies(tmp_path: Path) -> None:
    """The gateway's build with lego's DNS-provider factory replaced (toolchain/traefik) starts, with an
    ACME resolver configured too, and proxies a request (the Gateway API routes themselves are
    `make e2e`'s local-stack tests)."""
    backend = subprocess.Popen(
        ["python3", "-m", "http.server", str(port := free_port()), "--bind", "127.0.0.1", "-d", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (tmp_path / "hello.txt").write_text("through traefik\n")
    web = free_port()
    (tmp_path / "routes.yaml").write_text(
        yaml.safe_dump(
            {
                "http": {
                    "routers": {"r": {"rule": "PathPrefix(`/`)", "service": "s", "entryPoints": ["web"]}},
                    "services": {"s": {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{port}"}]}}},
                }
            }
        )
    )
    log = (tmp_path / "traefik.log").open("w")
    traefik = subprocess.Popen(
        [
            toolchain_binary("traefik"),
            f"--entryPoints.web.address=127.0.0.1:{web}",
            f"--providers.file.filename={tmp_path / 'routes.yaml'}",
            "--certificatesResolvers.le.acme.dnsChallenge.provider=route53",
            f"--certificatesResolvers.le.acme.storage={tmp_path / 'acme.json'}",
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=INFO",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, body = time.monotonic() + 60, ""
        while not body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/hello.txt", timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(1)
        output = (tmp_path / "traefik.log").read_text()
        assert body == "through traefik\n", output[-3000:]
    finally:
        traefik.terminate()
        backend.terminate()
        traefik.wait(timeout=30)
        backend.wait(timeout=30)
        log.close()


def pulumi_logs_after_a_command(tmp_path: Path, home: Path) -> list[Path]:
    """Run `pulumi stack init` (a command that logs) with PULUMI_HOME=`home`; the log files it left."""
    project = tmp_path / "project"
    (project / "state").mkdir(parents=True, exist_ok=True)
    (project / "Pulumi.yaml").write_text("name: logcheck\nruntime: python\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{project / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "test",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    result = subprocess.run(
        [toolchain_binary("pulumi"), "stack", "init", home.name, "--non-interactive"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    logs = home / "logs"
    return sorted(logs.iterdir()) if logs.is_dir() else []


def test_pulumi_writes_no_automatic_log_with_env_sh(tmp_path: Path) -> None:
    """toolchain/env.sh's file in place of $PULUMI_HOME/logs: the CLI runs, and logs nothing (the
    automatic log was half the engine's CPU in a no-op up)."""
    home = tmp_path / "off"
    home.mkdir()
    (home / "logs").write_text("off")
    assert pulumi_logs_after_a_command(tmp_path, home) == []
    assert (home / "logs").read_text() == "off"


def test_pulumi_writes_an_automatic_log_without_it(tmp_path: Path) -> None:
    """The check above can fail: in a plain PULUMI_HOME the same command leaves a log file."""
    home = tmp_path / "plain"
    home.mkdir()
    assert [p.suffix for p in pulumi_logs_after_a_command(tmp_path, home)] == [".log"]
