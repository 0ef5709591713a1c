"""A real single-node SLURM cluster for the tests, started and stopped by them.

`local_slurm_cluster(workdir)` writes slurm.conf and gres.conf into `workdir`,
starts a private munged (as the munge user, on its own socket), slurmctld and
slurmd (both in the foreground, as children of this process), waits until the
node is idle and yields a `SlurmCluster`.  On exit it cancels the cluster's
jobs, stops exactly the daemons it started and removes their state; it keeps
slurm.conf, gres.conf and log/ in `workdir` for a look after a failure.

Ports are chosen free at start, so a cluster left behind by a crashed run
does not get in the way; its daemons are stopped by the next start (see
`reap_stale_clusters`).

The GPUs are fake: generic resources backed by plain files, enough for SLURM
to schedule `--gpus` requests against them (no CUDA inside the jobs).

Settings follow /work/shared/notes/slurm-local.md: no cgroups, no accounting
(so status queries must use squeue), ReturnToService=2, MinJobAge=600 so that
finished jobs stay visible to squeue and `scontrol show job`.

Tests import the fixture explicitly:

    from slurm_cluster import slurm_cluster  # noqa: F401

It skips with the precise reason when SLURM cannot run here (not root,
packages missing: run scripts/install-system-deps.sh, a daemon failing to start).
Set TLSWEEP_REQUIRE_SLURM=1 to turn those skips into failures (CI machines
that are meant to run the cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

PARTITION = "tlsweep"
GPU_TYPE = "fakegpu"  # gres type, usable as `gpu_model` in rules
SBIN = Path("/usr/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel", "munge", "unmunge")
# Runtime folders of running clusters (munge socket, pid registry).  They live
# in /tmp, not in `workdir`: the munge user must be able to reach its socket
# (pytest's tmp folders are root-only) and unix socket paths must stay short.
RUNTIME_PREFIX = "tlsweep-slurm-"
START_TIMEOUT_S = 60


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run on this machine; the message says why."""


@dataclass
class SlurmCluster:
    """A running cluster: point SLURM clients at it with `env`."""

    workdir: Path
    conf: Path
    partition: str
    node: str
    cpus: int
    gpus: int
    gpu_type: str
    env: dict[str, str] = field(repr=False)
    logs: dict[str, Path] = field(repr=False)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command (e.g. "scontrol", "show", "job", "3")."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, check=check, timeout=30
        )

    def show_job(self, job_id: str | int) -> dict[str, str]:
        """`scontrol show job -o <id>` as a dict of its Key=Value fields."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return _parse_key_values(out)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of every daemon log, for error messages."""
        return _logs_tail(self.logs, lines)


def _parse_key_values(line: str) -> dict[str, str]:
    fields = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def _logs_tail(logs: dict[str, Path], lines: int) -> str:
    parts = []
    for name, path in logs.items():
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue  # not written (yet)
        if text:
            parts.append(f"--- {name}: {path} (last {lines} lines)\n" + "\n".join(text))
    return "\n".join(parts) or "(the daemons wrote no logs)"


def why_unavailable() -> str | None:
    """The reason SLURM cannot be started here, or None if it can be tried."""
    if os.geteuid() != 0:
        return "needs root (SlurmUser=root, munged runs as the munge user)"
    missing = [d for d in DAEMONS if not (SBIN / d).exists()]
    missing += [c for c in CLIENTS if shutil.which(c) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}; run scripts/install-system-deps.sh as root "
            "(Debian: slurmctld slurmd slurm-client munge)"
        )
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (is the munge package installed?)"
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (is the munge package installed?)"
    return None


def free_port() -> int:
    """A TCP port nobody listens on now (so leftovers of a crashed run don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def machine_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


def slurm_conf_text(
    *,
    node: str,
    cpus: int,
    memory_mb: int,
    gpus: int,
    ctld_port: int,
    slurmd_port: int,
    munge_socket: Path,
    workdir: Path,
) -> str:
    """slurm.conf for one node that is controller and compute node at once."""
    return f"""\
# Written by tests/slurm_cluster.py for a throw-away test cluster.
ClusterName=tlsweep
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
# no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no accounting: sacct cannot answer, status queries must use squeue
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobs without --mem get this much, not the whole node
DefMemPerCPU=500
GresTypes=gpu
# the node comes back by itself after a restart
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for 10 minutes
MinJobAge=600
# use the configured CPUs/memory even where the machine has fewer
SlurmdParameters=config_overrides
MailProg=/bin/true
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/run/slurmctld.pid
SlurmdPidFile={workdir}/run/slurmd.pid
SlurmctldLogFile={workdir}/log/slurmctld.log
SlurmdLogFile={workdir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{GPU_TYPE}:{gpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def gres_conf_text(*, node: str, gpu_files: list[Path]) -> str:
    """gres.conf: the GPUs are plain files (a `Count=` without files is INVAL)."""
    files = ",".join(str(p) for p in gpu_files)
    return (
        "AutoDetect=off\n"
        f"NodeName={node} Name=gpu Type={GPU_TYPE} File={files}\n"
    )


def _process_start(pid: int) -> str | None:
    """The start time of a running process (None if gone or a zombie).

    Together with the pid it names a process even after pids are reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


def _pid_alive(pid: int) -> bool:
    return _process_start(pid) is not None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _terminate(pid: int, marker: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, a pid - only while its command line has `marker`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if marker not in _cmdline(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # reap if it is our child, so it does not linger as a zombie
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _pid_alive(pid) or marker not in _cmdline(pid):
                return
            time.sleep(0.1)


def reap_stale_clusters(tmp: Path = Path(tempfile.gettempdir())) -> list[str]:
    """Stop daemons of earlier harness runs whose owning process died.

    Only processes listed in a registry written by this module, and only while
    their command line still names that run's own files, are stopped.
    """
    reaped = []
    for registry in tmp.glob(f"{RUNTIME_PREFIX}*/cluster.json"):
        try:
            info = json.loads(registry.read_text())
        except (OSError, ValueError):
            continue
        owner_start = _process_start(info.get("owner_pid", -1))
        if owner_start is not None and owner_start == info.get("owner_start"):
            continue  # a live test run's cluster; not ours to touch
        for daemon in info.get("daemons", []):
            if _pid_alive(daemon["pid"]) and daemon["marker"] in _cmdline(daemon["pid"]):
                _terminate(daemon["pid"], daemon["marker"])
                reaped.append(f"{daemon['name']} (pid {daemon['pid']})")
        shutil.rmtree(registry.parent, ignore_errors=True)
    return reaped


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """os.environ without SLURM job/client settings (e.g. when run inside a job)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def local_slurm_cluster(
    workdir: Path, gpus: int = 2, cpus: int | None = None
) -> Iterator[SlurmCluster]:
    """Start a single-node SLURM cluster with files under `workdir`.

    gpus: fake GPUs declared as gres (type `fakegpu`).
    cpus: CPUs the node offers; default: what `nproc` says.  A test may ask
          for more than the machine has (config_overrides), e.g. to make the
          GPUs, not the CPUs, the resource that limits how many jobs run.

    Raises SlurmUnavailable (with the daemon logs' tails) if it cannot start.
    """
    reason = why_unavailable()
    if reason:
        raise SlurmUnavailable(reason)
    reap_stale_clusters()

    workdir = Path(workdir).resolve()
    node = socket.gethostname().split(".")[0]
    cpus = cpus or len(os.sched_getaffinity(0))
    memory_mb = int(machine_memory_mb() * 0.9)
    munge_user = pwd.getpwnam("munge")
    runtime = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))
    munge_socket = runtime / "munge.socket"
    conf = workdir / "slurm.conf"
    logs = {
        "munged": runtime / "munged.log",
        "slurmctld": workdir / "log" / "slurmctld.log",
        "slurmd": workdir / "log" / "slurmd.log",
        # what they print before their log files are open (config errors)
        **{f"{d} output": workdir / "log" / f"{d}.stdout" for d in DAEMONS},
    }
    started: list[tuple[str, subprocess.Popen, str]] = []

    def register() -> None:
        """Note our daemons, so that a later run can stop them if we crash."""
        (runtime / "cluster.json").write_text(
            json.dumps(
                {
                    "owner_pid": os.getpid(),
                    "owner_start": _process_start(os.getpid()),
                    "workdir": str(workdir),
                    "daemons": [
                        {"name": n, "pid": p.pid, "marker": m} for n, p, m in started
                    ],
                }
            )
        )

    def start(name: str, args: list[str], marker: str, **popen_kwargs) -> None:
        with open(workdir / "log" / f"{name}.stdout", "ab") as out:
            proc = subprocess.Popen(
                args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in pytest reaches us, not them
                **popen_kwargs,
            )
        started.append((name, proc, marker))
        register()

    def wait_for(ready, timeout: float, what) -> None:
        """Poll `ready()`; fail early if a daemon died, with the logs' tails."""
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [(n, p.returncode) for n, p, _ in started if p.poll() is not None]
            if dead:
                message = f"{dead[0][0]} exited with status {dead[0][1]}"
            elif time.monotonic() > deadline:
                message = f"timed out after {timeout}s waiting for {what()}"
            else:
                time.sleep(0.5)
                continue
            raise SlurmUnavailable(f"{message}\n{_logs_tail(logs, 30)}")

    try:
        os.chown(runtime, munge_user.pw_uid, munge_user.pw_gid)
        os.chmod(runtime, 0o755)
        for sub in ("state", "spool", "run", "log", "gpu", "bin"):
            shutil.rmtree(workdir / sub, ignore_errors=True)  # from a reused workdir
            (workdir / sub).mkdir(parents=True)
        gpu_files = [workdir / "gpu" / f"fakegpu{i}" for i in range(gpus)]
        for f in gpu_files:
            # slurmd wants character devices: links to /dev/null are, plain
            # files are not ("not a valid character or block device", and then
            # SLURM sets no CUDA_VISIBLE_DEVICES in the jobs).
            f.symlink_to("/dev/null")
        conf.write_text(
            slurm_conf_text(
                node=node,
                cpus=cpus,
                memory_mb=memory_mb,
                gpus=gpus,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                munge_socket=munge_socket,
                workdir=workdir,
            )
        )
        (workdir / "gres.conf").write_text(gres_conf_text(node=node, gpu_files=gpu_files))
        env = _clean_env({"SLURM_CONF": str(conf)})
        shim_dir = _write_srun_shim(workdir / "bin", conf)
        env["PATH"] = f"{shim_dir}{os.pathsep}{env.get('PATH', '')}"
        cluster = SlurmCluster(
            workdir=workdir,
            conf=conf,
            partition=PARTITION,
            node=node,
            cpus=cpus,
            gpus=gpus,
            gpu_type=GPU_TYPE,
            env=env,
            logs=logs,
        )

        start(
            "munged",
            [
                str(SBIN / "munged"),
                "--foreground",
                f"--socket={munge_socket}",
                f"--pid-file={runtime / 'munged.pid'}",
                f"--log-file={logs['munged']}",
                f"--seed-file={runtime / 'munged.seed'}",
            ],
            marker=str(munge_socket),
            user=munge_user.pw_uid,
            group=munge_user.pw_gid,
            extra_groups=[],
            cwd=runtime,
        )
        wait_for(
            lambda: _munge_works(munge_socket),
            timeout=15,
            what=lambda: "munged to answer (munge -n | unmunge)",
        )
        start("slurmctld", [str(SBIN / "slurmctld"), "-D", "-f", str(conf)], str(conf))
        start(
            "slurmd",
            [str(SBIN / "slurmd"), "-D", "-f", str(conf), "-N", node],
            str(conf),
        )
        wait_for(
            lambda: _node_state(cluster) == "idle",
            timeout=START_TIMEOUT_S,
            what=lambda: f"node {node} to be idle (sinfo says: {_node_state(cluster)})",
        )
        yield cluster
    finally:
        if any(p.poll() is None for n, p, _ in started if n == "slurmctld"):
            # cancel what is left, so that no job outlives the cluster
            subprocess.run(
                ["scancel", "--partition", PARTITION],
                env=env,
                capture_output=True,
                timeout=30,
            )
        for name, proc, marker in reversed(started):
            if proc.poll() is None:
                _terminate(proc.pid, marker)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        shutil.rmtree(runtime, ignore_errors=True)
        # keep slurm.conf, gres.conf and log/ for a look after a failure
        for sub in ("state", "spool", "run", "gpu", "bin"):
            shutil.rmtree(workdir / sub, ignore_errors=True)


def _write_srun_shim(bin_dir: Path, conf: Path) -> Path:
    """A `srun` first on PATH that puts SLURM_CONF back; returns its folder.

    The SLURM executor's job step (snakemake-executor-plugin-slurm-jobstep
    0.6.1) removes all SLURM_* variables except a few job ids before it runs
    `srun` inside the job, SLURM_CONF included.  Real clusters keep slurm.conf
    at /etc/slurm (or run configless), where srun finds it without the
    variable; this cluster's conf lives in the scratch folder.
    """
    real_srun = shutil.which("srun")
    if real_srun is None:
        raise SlurmUnavailable("no srun on PATH (package slurm-client)")
    shim = bin_dir / "srun"
    shim.write_text(
        "#!/bin/sh\n"
        "# test cluster only: the Snakemake job step drops SLURM_CONF\n"
        f'export SLURM_CONF="${{SLURM_CONF:-{conf}}}"\n'
        f'exec {real_srun} "$@"\n'
    )
    shim.chmod(0o755)
    return bin_dir


def _munge_works(munge_socket: Path) -> bool:
    cred = subprocess.run(
        ["munge", "-n", "-S", str(munge_socket)], capture_output=True, timeout=10
    )
    if cred.returncode != 0:
        return False
    check = subprocess.run(
        ["unmunge", "-S", str(munge_socket)],
        input=cred.stdout,
        capture_output=True,
        timeout=10,
    )
    return check.returncode == 0 and b"Success" in check.stdout


def _node_state(cluster: SlurmCluster) -> str:
    result = cluster.run(
        "sinfo", "--noheader", "--Node", "--nodes", cluster.node, "--format=%T",
        check=False,
    )
    if result.returncode != 0:
        return f"sinfo failed: {result.stderr.strip()}"
    return result.stdout.strip() or "(no node)"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A running local SLURM cluster with 2 fake GPUs, shared by the session.

    It offers at least 4 CPUs (more than the 2 GPUs) so that GPU jobs are
    limited by the GPUs, not by CPUs.
    """
    required = os.environ.get("TLSWEEP_REQUIRE_SLURM") == "1"
    workdir = tmp_path_factory.mktemp("slurm")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(
                local_slurm_cluster(
                    workdir, gpus=2, cpus=max(4, len(os.sched_getaffinity(0)))
                )
            )
        except SlurmUnavailable as exc:
            if required:
                pytest.fail(f"local SLURM cluster unavailable: {exc}")
            pytest.skip(f"local SLURM cluster unavailable: {exc}")
        yield cluster
