"""A throw-away one-node SLURM for tests: munge, MariaDB, slurmdbd, slurmctld, slurmd.

Everything lives in one temporary folder: configs, state, logs, the MariaDB data
directory and the munge socket. The daemons listen on free ports picked at start-up
and all clients find them through ``SLURM_CONF``, so nothing in ``/etc/slurm`` is
touched and a SLURM already running on the machine is left alone. munge is the
exception: SLURM reaches it only through its default socket, so a ``munged`` already
serving that socket is used (and left running); otherwise ours serves it. Two fake GPUs
(``/dev/fakegpu0``, ``/dev/fakegpu1``: character devices made with ``mknod``) are
declared in ``gres.conf``, so ``--gpus=1`` schedules and sets ``CUDA_VISIBLE_DEVICES``.

Only works as root on Debian (it installs the packages with ``apt-get`` when they are
missing); :func:`unavailable_reason` says why not elsewhere. :meth:`LocalSlurm.stop`
stops exactly the daemons :meth:`LocalSlurm.start` started, by PID, in reverse order.

Run it by hand too: ``python tests/cluster/slurm_harness.py`` starts a cluster, prints
the ``SLURM_CONF`` to export and waits; Ctrl-C stops it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge", "slurmdbd", "mariadb-server"]
# A binary per package: present means installed.
BINARIES = {"slurm-wlm": "sacct", "munge": "munged", "slurmdbd": "slurmdbd",
            "mariadb-server": "mariadb-install-db"}
SBIN = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
ACCOUNT = "research"
PARTITION = "debug"
CLUSTER = "critperiods"
FAKE_GPUS = 2
DB_PASSWORD = "slurmpw"
MUNGE_SOCKET = "/run/munge/munge.socket.2"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def unavailable_reason() -> str | None:
    """Why a local SLURM cannot be started here, or None when it can."""
    if os.environ.get("CRITPERIODS_SKIP_SLURM") == "1":
        return "CRITPERIODS_SKIP_SLURM=1"
    if platform.system() != "Linux" or not Path("/etc/debian_version").exists():
        return "the local SLURM harness needs Debian (apt-get packages slurm-wlm, munge, ...)"
    if os.geteuid() != 0:
        return "the local SLURM harness must run as root (it starts daemons, mknod's devices)"
    missing = [p for p, b in BINARIES.items() if _which(b) is None]
    if missing and _which("apt-get") is None:
        return f"packages {missing} are missing and apt-get is not available"
    return None


class PackagesUnavailable(RuntimeError):
    """The Debian packages of the local SLURM are missing and ``apt-get`` could not install
    them (no registry reachable, a broken mirror)."""


def ensure_packages(log: Path) -> float:
    """``apt-get install`` whatever of :data:`PACKAGES` is missing; return seconds spent.
    Raises :class:`PackagesUnavailable` where that fails."""
    missing = [p for p, b in BINARIES.items() if _which(b) is None]
    if not missing:
        return 0.0
    t0 = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(log, "a") as out:
        try:
            subprocess.run(["apt-get", "update", "-q"], check=True, stdout=out, stderr=out,
                           env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES],
                           check=True, stdout=out, stderr=out, env=env)
        except subprocess.CalledProcessError as err:
            raise PackagesUnavailable(
                f"installing {missing} failed ({' '.join(err.cmd[:2])} exited "
                f"{err.returncode}); see {log}") from err
    still = [p for p, b in BINARIES.items() if _which(b) is None]
    if still:
        raise PackagesUnavailable(f"apt-get install did not provide {still}; see {log}")
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    """One SLURM cluster (one node, ``localhost``) living in ``root``."""

    def __init__(self, root: str | Path | None = None, fake_gpus: int = FAKE_GPUS) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="critperiods-slurm-"))
        self.fake_gpus = fake_gpus
        self.procs: list[tuple[str, subprocess.Popen]] = []  # what *we* started, in order
        self.created_devices: list[Path] = []
        self.reused: list[str] = []  # daemons found running and used, never stopped
        self.timings: dict[str, float] = {}
        self.etc = self.root / "etc"
        self.logs = self.root / "log"
        self.conf = self.etc / "slurm.conf"
        self.bin = self.root / "bin"
        self.db_socket = self.root / "mysql" / "mysqld.sock"
        self.ports = {k: _free_port() for k in ("ctld", "slurmd", "dbd", "mysql")}

    # -- environment seen by clients --------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Variables a client (sbatch, sacct, snakemake) needs to reach this cluster.

        ``PATH`` starts with a folder holding an ``srun`` wrapper that sets
        ``SLURM_CONF``: inside a job the plugin starts the rule with ``srun`` after
        dropping most ``SLURM_*`` variables, ``SLURM_CONF`` included, and srun would then
        look for ``/etc/slurm/slurm.conf`` (a real cluster has its config there).
        ``CRITPERIODS_ALLOW_CPU``: the GPUs are fake.
        """
        return {"SLURM_CONF": str(self.conf),
                "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                # its GPUs are fake: `device: auto` jobs given one train on the CPU
                # (critperiods.pipeline.devices refuses that on a real cluster)
                "CRITPERIODS_ALLOW_CPU": "1"}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """Run a SLURM client command against this cluster; return its stdout."""
        res = subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True,
                             text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr}")
        return res.stdout

    # -- start ------------------------------------------------------------------------
    def start(self) -> LocalSlurm:
        t0 = time.monotonic()
        for d in (self.etc, self.logs, self.root / "spool" / "ctld", self.root / "spool" / "d"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the munge and mysql users must reach their sub-folders
        self.timings["apt"] = ensure_packages(self.logs / "apt.log")
        try:
            self._start_munge()
            self._start_mariadb()
            self._make_fake_gpus()
            self._write_slurm_conf()
            self._write_srun_wrapper()
            self._start_slurmdbd()
            self._start_slurmctld()
            self._start_slurmd()
            self._register_account()
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> subprocess.Popen:
        out = open(self.logs / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **self.env}, user=user,
                                start_new_session=True)
        out.close()
        self.procs.append((name, proc))
        return proc

    def _wait_for(self, what: str, test, timeout: float = 60, proc=None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if test():
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what}: the daemon exited ({proc.returncode}); "
                                   f"see {self.logs}")
            time.sleep(0.3)
        raise RuntimeError(f"{what}: not ready after {timeout} s; see {self.logs}")

    def _munge_works(self) -> bool:
        cred = subprocess.run([_which("munge"), "-n"], capture_output=True)
        return cred.returncode == 0 and subprocess.run(
            [_which("unmunge")], input=cred.stdout, capture_output=True).returncode == 0

    def _start_munge(self) -> None:
        # SLURM's clients talk to munge only through its default socket (an AuthInfo
        # socket in slurm.conf is not used towards slurmdbd), so a munged that already
        # serves it is used as it is; otherwise ours serves it.
        if self._munge_works():
            self.reused.append("munged")
            return
        socket_dir = Path(MUNGE_SOCKET).parent
        socket_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(socket_dir, "munge", "munge")
        d = self.root / "munge"
        d.mkdir(exist_ok=True)
        shutil.chown(d, "munge", "munge")
        proc = self._spawn("munged", [
            _which("munged"), "--foreground", f"--socket={MUNGE_SOCKET}",
            "--key-file=/etc/munge/munge.key", f"--pid-file={d / 'munged.pid'}",
            f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'munged.seed'}",
        ], user="munge")
        self._wait_for("munged", self._munge_works, 20, proc)

    def _mysql(self, sql: str) -> subprocess.CompletedProcess:
        return subprocess.run([_which("mariadb"), "--no-defaults", "-S", str(self.db_socket),
                               "-u", "root", "-e", sql], capture_output=True, text=True)

    def _start_mariadb(self) -> None:
        d = self.db_socket.parent
        d.mkdir(exist_ok=True)
        shutil.chown(d, "mysql", "mysql")
        data = d / "data"
        with open(self.logs / "mariadb-install.out", "wb") as out:
            subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
                            "--user=mysql", "--auth-root-authentication-method=normal",
                            "--skip-test-db"], check=True, stdout=out, stderr=out)
        proc = self._spawn("mariadbd", [
            _which("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=mysql",
            f"--socket={self.db_socket}", f"--port={self.ports['mysql']}",
            "--bind-address=127.0.0.1", f"--pid-file={d / 'mariadbd.pid'}",
            f"--log-error={self.logs / 'mariadbd.log'}", "--innodb-buffer-pool-size=64M",
            "--skip-name-resolve",
        ])
        self._wait_for("mariadbd", lambda: self._mysql("select 1").returncode == 0, 60, proc)
        res = self._mysql(
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        if res.returncode != 0:
            raise RuntimeError(f"mariadb: creating the slurm user failed: {res.stderr}")

    def _make_fake_gpus(self) -> None:
        for i in range(self.fake_gpus):
            dev = Path(f"/dev/fakegpu{i}")
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))  # S_IFCHR, like nvidia
                self.created_devices.append(dev)

    def _write_slurm_conf(self) -> None:
        cpus = os.cpu_count() or 1
        mem = _memory_mb() * 8 // 10
        gres = ""
        if self.fake_gpus:
            (self.etc / "gres.conf").write_text(
                f"NodeName=localhost Name=gpu File=/dev/fakegpu[0-{self.fake_gpus - 1}]\n")
            gres = f"Gres=gpu:{self.fake_gpus}"
        spool = self.root / "spool"
        self.conf.write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost=localhost
SlurmctldPort={self.ports['ctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation={spool / 'ctld'}
SlurmdSpoolDir={spool / 'd'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.logs / 'slurmctld.log'}
SlurmdLogFile={self.logs / 'slurmd.log'}
MailProg=/bin/true
MinJobAge=86400
KillWait=10
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.ports['dbd']}
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} {gres} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        dbd = self.etc / "slurmdbd.conf"
        dbd.write_text(f"""\
AuthType=auth/munge
DbdHost=localhost
DbdPort={self.ports['dbd']}
SlurmUser=root
PidFile={self.root / 'slurmdbd.pid'}
LogFile={self.logs / 'slurmdbd.log'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mysql']}
StorageUser=slurm
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
""")
        os.chmod(dbd, 0o600)

    def _write_srun_wrapper(self) -> None:
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "srun"
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {_which("srun")} "$@"\n')
        os.chmod(wrapper, 0o755)

    def _start_slurmdbd(self) -> None:
        proc = self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])

        def ready() -> bool:
            return subprocess.run([_which("sacctmgr"), "-n", "show", "cluster"],
                                  env={**os.environ, **self.env},
                                  capture_output=True).returncode == 0

        self._wait_for("slurmdbd", ready, 60, proc)

    def _start_slurmctld(self) -> None:
        # The cluster must exist in the database before slurmctld registers with it.
        self.run(_which("sacctmgr"), "-i", "add", "cluster", CLUSTER, check=False)
        proc = self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
        self._wait_for("slurmctld", lambda: subprocess.run(
            [_which("scontrol"), "ping"], env={**os.environ, **self.env},
            capture_output=True, text=True).stdout.count("UP") > 0, 60, proc)

    def _start_slurmd(self) -> None:
        proc = self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost"])

        def idle() -> bool:
            out = subprocess.run([_which("sinfo"), "-h", "-o", "%t"],
                                 env={**os.environ, **self.env}, capture_output=True, text=True)
            return "idle" in out.stdout

        self._wait_for("slurmd", idle, 60, proc)

    def _register_account(self) -> None:
        sacctmgr = _which("sacctmgr")
        self.run(sacctmgr, "-i", "add", "account", ACCOUNT, "Description=tests",
                 "Organization=tests", check=False)
        self.run(sacctmgr, "-i", "add", "user", "root", f"Account={ACCOUNT}", check=False)
        users = self.run(sacctmgr, "-n", "-P", "show", "assoc", "format=account,user")
        if f"{ACCOUNT}|root" not in users:
            raise RuntimeError(f"sacctmgr: association {ACCOUNT}/root missing: {users!r}")

    # -- stop -------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel leftover jobs, stop our daemons (by PID, reverse order), remove our devices."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self.procs):
            with contextlib.suppress(Exception):
                self.run(_which("scancel"), "--user=root", check=False, timeout=10)
                time.sleep(1)
        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        for dev in self.created_devices:
            with contextlib.suppress(FileNotFoundError):
                dev.unlink()
        self.created_devices.clear()

    def cleanup(self) -> None:
        """Remove the cluster's folder (after :meth:`stop`)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot start a local SLURM: {reason}")
    cluster = LocalSlurm()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cluster.start()
        print(f"local SLURM up in {cluster.timings['start']:.1f} s "
              f"(apt {cluster.timings['apt']:.1f} s)", flush=True)
        print(f"export SLURM_CONF={cluster.conf} PATH={cluster.bin}:$PATH", flush=True)
        print("Ctrl-C (or SIGTERM) stops it.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        cluster.cleanup()


if __name__ == "__main__":
    main()
