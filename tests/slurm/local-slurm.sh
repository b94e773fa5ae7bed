#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the SLURM tests (adapted from the project's recipe).
# Debian's slurmctld, slurmd, slurm-client and munge; run as root; no systemd needed.
#
# Usage: tests/slurm/local-slurm.sh install|start|stop|status|purge
#   install : apt-get the Debian packages (nothing to do when they are there)
#   start   : idempotent; writes /etc/slurm/slurm.conf, starts munged, slurmctld and slurmd,
#             waits until the node takes jobs. Already running with the same settings: does
#             nothing; running with other settings (e.g. no fake GPU): restarts the daemons.
#   stop    : cancels leftover jobs, stops the daemons this script started; keeps the state
#   status  : which daemons run, and sinfo
#   purge   : stop, then delete state and logs
# Environment:
#   SLURM_LOCAL_DIR        state, spool, logs and PID files (default /tmp/slurm-local)
#   SLURM_LOCAL_FAKE_GPUS  N > 0 advertises N fake "gpu" GRES (File=/dev/null), so jobs that ask
#                          for --gpus schedule here; their code finds no CUDA and runs on CPU
#   SLURM_LOCAL_PARTITIONS space-separated partition names, all on the one node; the first is
#                          the default (default "debug")
#   SLURM_LOCAL_CGROUPS    1 = proctrack/cgroup + task/cgroup, so --mem is enforced (default 0)
# The tests recognise this cluster by its name (ClusterName=lesionflow-local): they never
# submit to another cluster that happens to be reachable from the machine.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
FAKE_GPUS=${SLURM_LOCAL_FAKE_GPUS:-0}
CGROUPS=${SLURM_LOCAL_CGROUPS:-0}
PARTITIONS=${SLURM_LOCAL_PARTITIONS:-debug}
CLUSTER=lesionflow-local
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
CGROUP_CONF=/etc/slurm/cgroup.conf
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=$DIR/slurmctld.pid
SLURMD_PID=$DIR/slurmd.pid

log() { echo "[local-slurm] $*" >&2; }

# True if the PID in file $1 runs and is not a zombie (PID 1 of a container may reap late).
alive() {
  local pid st
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid ]] || return 1
  st=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

install_pkgs() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
     && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    log "packages already installed"; return
  fi
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    log "installing needs root and apt-get (Debian/Ubuntu)"; return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Package scripts may try to start the services; without systemd that fails harmlessly
  # (or policy-rc.d forbids it): the daemons are started below, by this script.
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

render_slurm_conf() {
  local host cpus mem gres=""
  host=$(hostname -s)
  cpus=$(nproc)
  # RealMemory above what slurmd detects would DRAIN the node ("Low RealMemory").
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$(( mem * 90 / 100 ))
  (( FAKE_GPUS > 0 )) && gres="Gres=gpu:${FAKE_GPUS}"
  local proctrack=proctrack/linuxproc task=task/none
  [[ $CGROUPS == 1 ]] && proctrack=proctrack/cgroup task=task/cgroup
  cat <<CONF
# written by tests/slurm/local-slurm.sh
ClusterName=$CLUSTER
SlurmctldHost=${host}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
ProctrackType=$proctrack
TaskPlugin=$task
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that gives no --mem takes the whole node's memory.
DefMemPerCPU=500
# No slurmdbd, so sacct cannot answer ("accounting storage is disabled"): Snakemake's status
# checks must use squeue here, which sees finished jobs for MinJobAge seconds; the jobcomp
# file keeps a line per finished job for good.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
MinJobAge=600
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres State=UNKNOWN
CONF
  local p default=YES
  for p in $PARTITIONS; do
    echo "PartitionName=$p Nodes=ALL Default=$default MaxTime=INFINITE State=UP"
    default=NO
  done
}

render_gres_conf() {
  local host i
  host=$(hostname -s)
  for ((i = 0; i < FAKE_GPUS; i++)); do
    echo "NodeName=$host Name=gpu File=/dev/null"
  done
}

render_cgroup_conf() {
  # cgroup v1 and v2 both work with autodetect; enforces --mem (OUT_OF_MEMORY)
  [[ $CGROUPS == 1 ]] && printf 'CgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=yes\n'
  return 0
}

# "$1" (file) holds exactly "$2" (text; an empty text means: the file should not exist)
same_content() {
  if [[ -z $2 ]]; then [[ ! -e $1 ]]; else [[ -f $1 && "$(cat "$1")" == "$2" ]]; fi
}

write_or_remove() {  # $1 file, $2 content (empty: remove the file)
  if [[ -z $2 ]]; then rm -f "$1"; else printf '%s\n' "$2" > "$1"; fi
}

start_munge() {
  if alive "$MUNGE_PID"; then log "munged already running"; return; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
}

wait_idle() {
  local state=""
  for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    case $state in
      idle|mixed|allocated) log "node $state"; return 0 ;;
      drain*|down*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  log "node did not become idle (state: ${state:-none})"; sinfo -N -l >&2 || true
  tail -20 "$DIR"/log/*.log >&2 || true
  return 1
}

# Never overwrite a SLURM set-up that this script did not write (a real cluster's node).
check_conf_is_ours() {
  if [[ -e $CONF ]] && ! head -1 "$CONF" | grep -qE '^# (written by tests/slurm/local-slurm.sh|generated by slurm-local.sh)'; then
    log "$CONF exists and was not written by this script: refusing to replace it"
    return 3
  fi
}

start() {
  check_conf_is_ours
  install_pkgs
  local conf gres cgroup
  conf=$(render_slurm_conf); gres=$(render_gres_conf); cgroup=$(render_cgroup_conf)
  if alive "$CTLD_PID" && alive "$SLURMD_PID"; then
    if same_content "$CONF" "$conf" && same_content "$GRES_CONF" "$gres" \
       && same_content "$CGROUP_CONF" "$cgroup"; then
      log "slurmctld and slurmd already running with these settings"; wait_idle; return
    fi
    # GRES and node definitions are read at start only, so a changed set-up needs a restart.
    log "settings changed (fake GPUs, partitions or cgroups): restarting the daemons"
    stop_daemons
  fi
  mkdir -p "$DIR"/{state,spool,log} /etc/slurm
  write_or_remove "$CONF" "$conf"
  write_or_remove "$GRES_CONF" "$gres"
  write_or_remove "$CGROUP_CONF" "$cgroup"
  start_munge
  alive "$CTLD_PID" || /usr/sbin/slurmctld
  alive "$SLURMD_PID" || /usr/sbin/slurmd
  wait_idle
}

stop_pid() {  # $1 pidfile, $2 name
  alive "$1" || { rm -f "$1"; return 0; }
  local pid; pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid"
  for _ in $(seq 1 40); do alive "$1" || { log "$2 stopped"; rm -f "$1"; return 0; }; sleep 0.25; done
  log "$2 ($pid) did not stop on SIGTERM, sending SIGKILL"; kill -9 "$pid" 2>/dev/null || true
}

stop_daemons() {
  # cancel leftover jobs so that slurmd leaves no orphaned job steps behind
  if alive "$CTLD_PID"; then scancel --user="$(id -un)" 2>/dev/null || true; fi
  stop_pid "$SLURMD_PID" slurmd
  stop_pid "$CTLD_PID" slurmctld
}

stop() {
  stop_daemons
  stop_pid "$MUNGE_PID" munged
}

status() {
  local p
  for p in "$MUNGE_PID:munged" "$CTLD_PID:slurmctld" "$SLURMD_PID:slurmd"; do
    if alive "${p%%:*}"; then echo "${p#*:} running (pid $(cat "${p%%:*}"))"; else echo "${p#*:} stopped"; fi
  done
  sinfo -o "%P %a %D %T %G" 2>/dev/null || true
}

purge() { stop; rm -rf "$DIR"; }

case ${1:-} in
  install) install_pkgs ;;
  start|stop|status|purge) "$1" ;;
  *) echo "usage: $0 install|start|stop|status|purge" >&2; exit 2 ;;
esac
