"""toolchain/env.sh turns Pulumi's automatic log off in the toolchain's own PULUMI_HOME (a file where
its directory would be: the CLI then runs without it), and leaves a PULUMI_HOME set before alone.
e2e/test_toolchain.py checks the built CLI writes no log with it."""

import subprocess
from pathlib import Path

ENV_SH = Path(__file__).resolve().parents[2] / "toolchain" / "env.sh"


def sourced_pulumi_home(cache: Path, pulumi_home: str | None = None) -> Path:
    """PULUMI_HOME after `source toolchain/env.sh` with the toolchain cache in `cache`."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "SOPHIA_TOOLCHAIN_CACHE": str(cache)}
    if pulumi_home is not None:
        env["PULUMI_HOME"] = pulumi_home
    out = subprocess.run(
        ["bash", "-c", f'source "{ENV_SH}" && echo "$PULUMI_HOME"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Path(out.stdout.strip())


def test_the_toolchains_pulumi_home_has_no_log_directory(tmp_path: Path) -> None:
    home = sourced_pulumi_home(tmp_path)
    assert home.parent.parent == tmp_path  # <cache>/<toolchain version>/pulumi-home
    assert (home / "logs").is_file()
    assert "toolchain/env.sh" in (home / "logs").read_text()


def test_a_log_directory_left_from_before_is_replaced(tmp_path: Path) -> None:
    home = sourced_pulumi_home(tmp_path)
    (home / "logs").unlink()
    (home / "logs").mkdir()
    (home / "logs" / "pulumi-20261203T101010-1-up.log").write_bytes(b"\x1f\x8b old")
    assert sourced_pulumi_home(tmp_path) == home
    assert (home / "logs").is_file()


def test_a_pulumi_home_set_before_sourcing_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "my-pulumi-home"
    (mine / "logs").mkdir(parents=True)
    assert sourced_pulumi_home(tmp_path / "cache", str(mine)) == mine
    assert (mine / "logs").is_dir()
