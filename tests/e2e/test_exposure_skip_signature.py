"""skip_signature_verification must never coexist with a public exposure (SPEC section 3)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.harness import REPO, DaemonHarness

pytestmark = pytest.mark.e2e

FAKE = REPO / "tests" / "fakes" / "tailscale"


def test_expose_funnel_refused_while_signature_verification_is_skipped(make_daemon) -> None:
    """SPEC 3: skip_signature_verification is refused unless nothing is exposed publicly.

    Starting with `[tailscale] mode = "funnel"` is refused, but `voicecall expose --mode funnel`
    at run time publishes the unsigned webhook to the internet anyway.
    """
    config = (
        'provider = "mock"\nskip_signature_verification = true\n'
        '[serve]\nbind = "127.0.0.1"\nport = 0\n'
    )
    d: DaemonHarness = make_daemon(config, start=False)
    bin_dir = d.home / "bin"
    bin_dir.mkdir()
    shutil.copy(FAKE, bin_dir / "tailscale")
    (bin_dir / "tailscale").chmod(0o755)
    d.env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{d.env['PATH']}",
            "FAKE_TAILSCALE_LOG": str(d.home / "tailscale.log"),
        }
    )
    d.start()
    done = d.cli("expose", "--mode", "funnel", "--json")
    status = d.rpc("daemon.status")
    assert status["publicUrl"] is None, (
        f"unsigned webhook published at {status['publicUrl']} (expose exit {done.returncode})"
    )
    assert done.returncode == 1
