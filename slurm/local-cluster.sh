#!/usr/bin/env bash
# Start (or stop) a one-node Slurm cluster on this machine, for tests and trying dtb's sbatch scripts.
# Needs root and Debian's slurm-wlm + munge. Usage: slurm/local-cluster.sh start|stop
set -euo pipefail
conf=/etc/slurm/slurm.conf
case "${1:-start}" in
start)
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged" || munged --force
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$conf" <<CONF
ClusterName=dtblocal
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
CONF
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd -N localhost
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
            sinfo
            exit 0
        fi
        sleep 1
    done
    echo "slurm did not come up; logs in /var/log/slurm" >&2
    tail -20 /var/log/slurm/*.log >&2 || true
    exit 1
    ;;
stop)
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x munged || true
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
