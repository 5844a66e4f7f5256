"""A real, single-host SLURM cluster for tests (and for trying the SLURM profile by hand).

Starts munged (unless one is already running), slurmctld and slurmd with a private slurm.conf in a
scratch directory: one node (this host, `hostname -s`) with a few CPUs and the memory it has, one
default partition named like the `slurm_partition` of profiles/slurm.  The config is
also installed as /etc/slurm/slurm.conf for the life of the cluster (`srun` inside a batch job does
not see SLURM_CONF and would otherwise look for a config server in DNS); a file that was there
before is restored on stop.  Needs root (SlurmUser=root) and the Debian packages slurm-wlm, munge.

    python tests/helpers/slurm_cluster.py start DIR   # prints `export SLURM_CONF=...`
    python tests/helpers/slurm_cluster.py stop DIR

or, in Python: ``with SlurmCluster(dir) as c: subprocess.run(..., env=c.env())``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SLURM_PROFILE = REPO / "profiles/slurm/config.yaml"
MUNGE_SOCKET_DIR = Path("/run/munge")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def profile_partition() -> str:
    prof = yaml.safe_load(SLURM_PROFILE.read_text())
    res = prof.get("default-resources") or {}
    if isinstance(res, list):
        res = dict(r.split("=", 1) for r in res)
    return str(res.get("slurm_partition", "main")).strip("'\"")


def missing_binaries() -> list[str]:
    return [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo")
            if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return min(16000, int(int(line.split()[1]) / 1024 * 0.8))
    return 4000


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2, partition: str | None = None):
        self.root = Path(root).resolve()
        self.cpus = cpus
        self.partition = partition or profile_partition()
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.started: dict[str, int] = {}  # daemon -> pid, only those started here

    # -- setup ---------------------------------------------------------------------------------
    def write_conf(self) -> None:
        for d in ("state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=spkrobust-test
SlurmctldHost={self.host}
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
MpiDefault=none
NodeName={self.host} CPUs={self.cpus} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        self._install_system_conf()

    def _install_system_conf(self) -> None:
        backup = self.root / "slurm.conf.system-backup"
        if SYSTEM_CONF.exists() and not backup.exists() and SYSTEM_CONF.read_text() != self.conf.read_text():
            shutil.copy2(SYSTEM_CONF, backup)
        elif not SYSTEM_CONF.exists():
            (self.root / "slurm.conf.installed").write_text("no system slurm.conf before\n")
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.conf, SYSTEM_CONF)

    def _restore_system_conf(self) -> None:
        backup = self.root / "slurm.conf.system-backup"
        marker = self.root / "slurm.conf.installed"
        if backup.exists():
            shutil.copy2(backup, SYSTEM_CONF)
            backup.unlink()
        elif marker.exists():
            SYSTEM_CONF.unlink(missing_ok=True)
            marker.unlink()

    def env(self) -> dict:
        e = dict(os.environ)
        e["SLURM_CONF"] = str(self.conf)
        return e

    def _run(self, *cmd, check=True, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def _munge_running(self) -> bool:
        return subprocess.run(["munge", "-n"], capture_output=True).returncode == 0 if shutil.which("munge") \
            else (MUNGE_SOCKET_DIR / "munge.socket.2").exists()

    def _start_munge(self) -> None:
        if self._munge_running():
            return
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "--create"], check=True)
        pidfile = MUNGE_SOCKET_DIR / "munged.pid"
        subprocess.run(["runuser", "-u", "munge", "--", _bin("munged")], check=True)
        for _ in range(50):
            if self._munge_running() and pidfile.exists():
                self.started["munged"] = int(pidfile.read_text().split()[0])
                return
            time.sleep(0.1)
        raise RuntimeError("munged did not start")

    def _start(self, name: str, *args: str) -> None:
        pidfile = self.root / "run" / f"{name}.pid"
        subprocess.run([_bin(name), "-f", str(self.conf), *args], env=self.env(), check=True)
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                self.started[name] = int(pidfile.read_text().split()[0])
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start; see {self.root}/log/{name}.log")

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self.write_conf()
        self._start_munge()
        self._start("slurmctld")
        self._start("slurmd")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self._run("sinfo", "-h", "-N", "-o", "%T", check=False)
            if p.returncode == 0 and p.stdout.strip() in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SLURM node did not become idle (sinfo: {p.stdout.strip()} {p.stderr.strip()}); "
                           f"see {self.root}/log")

    # -- teardown ------------------------------------------------------------------------------
    def stop(self) -> None:
        if "slurmctld" in self.started:
            self._run("scancel", "--full", "-u", "root", check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.started.pop(name, None)
            if pid is None or not _pid_alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self._restore_system_conf()

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    root = Path(argv[1])
    c = SlurmCluster(root)
    if argv[0] == "start":
        c.start()
        (root / "started").write_text(" ".join(f"{k}={v}" for k, v in c.started.items()))
        print(f"export SLURM_CONF={c.conf}")
    else:
        c.conf = root / "slurm.conf"
        started = root / "started"
        if started.exists():
            c.started = {k: int(v) for k, v in (x.split("=") for x in started.read_text().split())}
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
