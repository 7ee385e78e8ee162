"""Fixtures for the tests against a real (local, throw-away) SLURM.

``slurm_cluster`` starts one cluster per test session (see slurm_harness.py) and
stops exactly the daemons it started at the end. Where that is impossible (not
root, not Debian, no apt-get, packages that apt-get cannot install, e.g. offline, or
``CRITPERIODS_SKIP_SLURM=1``) every test that uses it is skipped with the reason, unless
``CRITPERIODS_REQUIRE_SLURM=1`` (CI sets it): then a cluster that cannot start fails them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from slurm_harness import LocalSlurm, PackagesUnavailable, unavailable_reason  # noqa: E402


@pytest.fixture(scope="session")
def slurm_cluster():
    required = os.environ.get("CRITPERIODS_REQUIRE_SLURM") == "1"
    reason = unavailable_reason()
    if reason:
        (pytest.fail if required else pytest.skip)(f"no local SLURM: {reason}")
    # Its own folder under the system temp dir: pytest's are private to root, and
    # the munge and mysql users must reach theirs.
    cluster = LocalSlurm()
    root = cluster.root
    try:
        cluster.start()
    except PackagesUnavailable as err:  # no registry here: not the code's fault
        cluster.cleanup()
        (pytest.fail if required else pytest.skip)(f"no local SLURM: {err}")
    except Exception as err:  # the daemons that did start are stopped by start()
        pytest.fail(f"starting the local SLURM failed: {err}\n{_tail_logs(cluster)}")
    print(f"\nlocal SLURM in {root}: apt {cluster.timings['apt']:.1f} s, "
          f"start {cluster.timings['start']:.1f} s", file=sys.stderr)
    yield cluster
    cluster.stop()
    cluster.cleanup()


def _tail_logs(cluster: LocalSlurm, lines: int = 15) -> str:
    out = []
    for log in sorted(cluster.logs.glob("*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)
