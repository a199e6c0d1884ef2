"""A SLURM cluster on loopback for the `slurm` tests (settings: ../shared/env-facts.md):
munged, slurmctld and two slurmd "nodes" n1 and n2 on this host, each with 2 CPUs and two
fake GPUs (GRES backed by /dev/tty*), a private SLURM_CONF and state under a temp folder.
Each cluster has its own munged on its own socket (AuthInfo=socket=...), its own ports and
its own state, so two test sessions on one machine do not share or stop each other's
daemons. Installs Debian's packages when missing (as root); every daemon it started is
stopped by its pid."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


def ensure_installed() -> str:
    """'' when slurmctld is there (installed now if need be), else why not."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("sbatch"):
        return ""
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "install", "-y", *PACKAGES], ["apt-get", "update"],
                 ["apt-get", "install", "-y", *PACKAGES]):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{' '.join(argv)} failed: {e}"
        if argv[1] == "install" and p.returncode == 0:
            return ""
    return f"apt-get install {' '.join(PACKAGES)} failed: {p.stderr.strip()[-300:]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """ClusterName=knlptest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5,socket={munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,batch_sched_delay=1
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
MinJobAge=300
KillWait=10
GresTypes=gpu
NodeName=n1 NodeHostname={host} NodeAddr=127.0.0.1 Port={n1_port} CPUs=2 RealMemory=1000 Gres=gpu:2
NodeName=n2 NodeHostname={host} NodeAddr=127.0.0.1 Port={n2_port} CPUs=2 RealMemory=1000 Gres=gpu:2
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""
GRES = """NodeName=n1 Name=gpu File=/dev/tty[1-2]
NodeName=n2 Name=gpu File=/dev/tty[3-4]
"""


class Cluster:
    def __init__(self, root: str):
        self.d, self.procs = root, []
        self.host = socket.gethostname().split(".")[0]
        # munged runs as the munge user, which cannot enter pytest's 0700 temp folders: its
        # socket, pid, seed and log live in a folder of their own under /tmp
        self.munge_dir = tempfile.mkdtemp(prefix="knlp-munge-", dir="/tmp")
        self.munge_socket = os.path.join(self.munge_dir, "munge.socket")

    def start(self) -> None:
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.d, sub), exist_ok=True)
        conf = os.path.join(self.d, "slurm.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(host=self.host, d=self.d, munge_socket=self.munge_socket,
                                ctld_port=free_port(),
                                n1_port=free_port(), n2_port=free_port()))
        with open(os.path.join(self.d, "gres.conf"), "w") as f:
            f.write(GRES)
        self.outer_conf = os.environ.get("SLURM_CONF")      # put back by stop()
        os.environ["SLURM_CONF"] = conf
        self.munge()
        log = open(os.path.join(self.d, "log", "daemons.out"), "ab")
        self.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", conf], stdout=log,
                                           stderr=subprocess.STDOUT))
        time.sleep(1.0)
        for n in ("n1", "n2"):
            self.procs.append(subprocess.Popen(["slurmd", "-D", "-N", n, "-f", conf], stdout=log,
                                               stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while time.time() < deadline:
            p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True)
            states = dict(line.split() for line in p.stdout.splitlines() if line.strip())
            if states.get("n1") == "idle" and states.get("n2") == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the loopback cluster did not come up: {p.stdout} {p.stderr}; see "
                           f"{self.d}/log")

    def munge(self) -> None:
        """This cluster's own munged (never one another session started)."""
        shutil.chown(self.munge_dir, "munge", "munge")
        os.chmod(self.munge_dir, 0o755)
        d = self.munge_dir
        self.procs.append(subprocess.Popen(
            ["/usr/sbin/munged", "-F", f"--socket={self.munge_socket}", f"--pid-file={d}/munged.pid",
             f"--seed-file={d}/munged.seed", f"--log-file={d}/munged.log"],
            user="munge", group="munge", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        check = f"munge -S {self.munge_socket} -n | unmunge -S {self.munge_socket}"
        for _ in range(100):
            if subprocess.run(check, shell=True, capture_output=True).returncode == 0:
                return
            if self.procs[-1].poll() is not None:
                break
            time.sleep(0.1)
        log = open(f"{d}/munged.log").read()[-500:] if os.path.exists(f"{d}/munged.log") else ""
        raise RuntimeError(f"munged on {self.munge_socket} did not start: {log}")

    def stop(self) -> None:
        if shutil.which("scancel"):
            subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, timeout=30)
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if getattr(self, "outer_conf", None):
            os.environ["SLURM_CONF"] = self.outer_conf
        else:
            os.environ.pop("SLURM_CONF", None)
        shutil.rmtree(self.munge_dir, ignore_errors=True)
