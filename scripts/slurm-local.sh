#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of `bertlab slurm` (tests/slurm.rs).
#
#   scripts/slurm-local.sh start    install Debian's packages if missing, start munged, slurmctld
#                                   and slurmd, wait until the node takes jobs
#   scripts/slurm-local.sh stop     cancel every job, stop the daemons, wait until they are gone
#   scripts/slurm-local.sh status   whether the cluster answers
#
# Needs root (the daemons do), Debian 12 (or a system with the same packages: slurmctld,
# slurmd, slurm-client, munge) and the ports 6817/6818. It writes /etc/slurm/slurm.conf (a file
# it did not write is kept as slurm.conf.bertlab-backup) and keeps state, logs and PIDs under
# /var/lib/bertlab-slurm. No systemd is needed: the daemons are started and stopped by PID.
# Facts and traps this follows: ../shared/README.md ("A real one-node Slurm cluster").
set -euo pipefail

STATE=/var/lib/bertlab-slurm
CONF=/etc/slurm/slurm.conf
MARKER="# Written by bertlab's scripts/slurm-local.sh"

say() { echo "slurm-local: $*" >&2; }

wait_for() { # SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "error: $what did not happen within ${seconds} s"
            return 1
        fi
        sleep 0.2
    done
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || { say "error: Slurm is not installed and there is no apt-get to install it"; exit 1; }
    say "installing slurmctld slurmd slurm-client munge (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create >/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
    if ! (munge -n | unmunge) >/dev/null 2>&1; then
        # munged refuses to run as root ("Logfile is insecure").
        runuser -u munge -- /usr/sbin/munged
        wait_for 10 "munged answering" bash -c 'munge -n | unmunge'
    fi
}

write_config() {
    local node cpus memory
    node=$(hostname -s)
    cpus=$(nproc)
    # At most 90% of the free memory: more drains the node ("Low RealMemory").
    memory=$(awk '/^MemFree:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
    if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        cp -p "$CONF" "$CONF.bertlab-backup"
        say "kept the existing $CONF as $CONF.bertlab-backup"
    fi
    install -d /etc/slurm
    cat >"$CONF" <<EOF
$MARKER: a one-node cluster for tests.
ClusterName=bertlab-local
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MailProg=/bin/true
MinJobAge=300
KillWait=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [[ $(id -u) == 0 ]] || { say "error: the Slurm daemons need root"; exit 1; }
    install_packages
    # slurmctld runs as the slurm user: every folder above its state folder must be traversable.
    install -d -m 0755 "$STATE" "$STATE/log"
    install -d -o slurm -g slurm -m 0755 "$STATE/state"
    install -d -m 0755 "$STATE/spool"
    chown slurm:slurm "$STATE/log"
    start_munge
    write_config
    if ! pid_alive "$STATE/slurmctld.pid"; then
        /usr/sbin/slurmctld
    fi
    if ! pid_alive "$STATE/slurmd.pid"; then
        /usr/sbin/slurmd
    fi
    wait_for 30 "the controller answering" scontrol ping
    local node
    node=$(hostname -s)
    # A node left down or drained by an earlier run comes back.
    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
    wait_for 30 "the node taking jobs" bash -c "sinfo -h -n '$node' -o %T | grep -qE '^(idle|mixed|allocated)'"
    say "up: $(sinfo -h -o '%P %D nodes %c CPUs %T')"
}

stop() {
    if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
        scancel --full --user="$(id -un)" >/dev/null 2>&1 || true
        scancel --full >/dev/null 2>&1 || true
        sleep 1
    fi
    local pids=()
    for name in slurmd slurmctld; do
        if pid_alive "$STATE/$name.pid"; then
            local pid
            pid=$(cat "$STATE/$name.pid")
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        wait_for 20 "process $pid stopping" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    done
    # Job processes outlive slurmd: none of this cluster's jobs may keep running.
    pkill -f '^slurmstepd' 2>/dev/null || true
    say "stopped"
}

status() {
    if scontrol ping >/dev/null 2>&1; then
        sinfo -h -o '%P %D nodes %c CPUs %T'
    else
        say "no Slurm controller answers"
        return 1
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
