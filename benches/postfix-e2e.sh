#!/bin/bash
# postfix-e2e.sh -- end-to-end benchmark: a real Postfix on loopback, with and without milters:
# throughput, latency, and the CPU each milter spends per message.
#
#   smtp-source --SMTP--> Postfix smtpd (+ smtpd_milters) -> queue -> smtp -> smtp-sink (counts)
#
# Postfix is the test rig's: main.cf and master.cf come from tests/rig/, which the tests
# (tests/support/postfix.rs) read too. Every configuration runs on that ONE private instance, and
# the configurations are interleaved over ROUNDS rounds (a b c, a b c, ...), so that a slow moment
# of the machine hits them all alike; each ratio is taken within its round.
#
# Configurations (-c, in this order per round):
#   none                 no milter (the limit)
#   hm-tcp:VARIANT       helpdesk-milter over TCP (inet:127.0.0.1:PORT)
#   hm-unix:VARIANT      helpdesk-milter over a UNIX socket (socket_group postfix, mode 0660)
#                        VARIANT names a line of benches/daemon-variants: `full` (the example
#                        configuration's settings: statistics on, auto-replies on), `stats-off`,
#                        `stats-replies-off`, `shared` (the full configuration on a private
#                        PostgreSQL server that the script starts); one line there adds a variant
#   py-unix, py-tcp      benches/pymilter-addheader.py: Debian's python3-milter (pymilter on
#                        libmilter) adding one header; it takes MAIL and end of message only
#   pyread-unix, ...-tcp the same with --read: it also takes every header and the body
#   dkim-unix, dkim-tcp  Debian's OpenDKIM in verify mode (a libmilter milter that reads all)
# libmilter over TCP sets no TCP_NODELAY and meets Postfix's delayed ACK: about 88 ms per message
# whatever its CPU (README, Performance); the UNIX sockets are the fair comparison.
#
# Traffic kinds (-t), each sent to every configuration, from writer@example.net:
#   helpdesk  to the Help Desk address helpdesk@example.org: helpdesk-milter triages every message
#             as a support request (classify, headers, auto-reply decision in its state store,
#             statistics). Only the first gets an auto-reply (one sender, interval 7 days); the
#             replies go to a second smtp-sink, so that they do not count as delivered mail.
#   other     to other@example.org, not a Help Desk address: helpdesk-milter passes it untouched.
#   mix       1 in MIX_EVERY (10) to the Help Desk, the rest to other@example.org, at the same
#             time: two smtp-source runs side by side, the sessions and the messages split in the
#             same proportion. 1 in 10 because the Help Desk's address is one of many on a shared
#             mail host (lists, people, other teams), so most of what the milter sees is not for
#             it; the triage still gets enough messages to be measured. Say MIX_EVERY=N otherwise.
#
# Per configuration, kind and round:
#   throughput  SESSIONS parallel sessions, N messages of SIZE bytes: ingest msg/s = N /
#               smtp-source's wall time (every message accepted, milter EOM included); end-to-end
#               msg/s = N / time until the sink's counter grew by N.
#   milter CPU  utime + stime of the milter's process (all its threads; pymilter: the python
#               process), from /proc/PID/stat, over the throughput run, divided by N: microseconds
#               per message. CPU per message moves less with a busy machine than throughput does.
#   latency     for the kinds in LAT_KINDS (helpdesk): 1 session, LAT_N messages: ms per message.
# Then benches/postfix-e2e-report.py prints the medians over rounds, each milter's CPU per
# message as a ratio to pymilter's (PY_REF, py-unix) of the same round, the ratios to no milter,
# the latency added, what the variants cost ("statistics and state add N % ..."), each beside its
# target (issue 16), and writes RESULTS.
#
# Usage (as root; installs postfix, python3-milter and opendkim with apt-get when missing):
#   benches/postfix-e2e.sh [-n N] [-r ROUNDS] [-s SESSIONS] [-l LAT_N] [-c CONFIGS] [-t KINDS]
#                          [-o RESULTS] [-k]
#   N=500 ROUNDS=1 benches/postfix-e2e.sh -c "none hm-unix:full py-unix"   # a quick try
# With the defaults (3 rounds of 8 configurations x 3 kinds) it took 16 minutes on a 2-core
# machine busy with other work (load 5 to 21); dkim-tcp's latency run alone takes 45 s a round
# (88 ms a message, see above).
#
# Options / environment (a flag wins over the environment):
#   -n N             messages per throughput run                             [2000]
#   -r ROUNDS        rounds                                                  [3]
#   -s SESSIONS      parallel SMTP sessions of the throughput runs           [20]
#   -l LAT_N         messages of each 1-session latency run                  [500]
#   -c CONFIGS       configurations, in this order per round  [see DEFAULT_CONFIGS below]
#   -t KINDS         traffic kinds                                           ["helpdesk other mix"]
#   -o RESULTS       write machine-readable results (TSV: config, metric, value) to this file
#   -k  (KEEP=1)     keep the temp dir (configs, maillog, milter logs) and print its path
#   LAT_KINDS        kinds that get a latency run ("" for none)              ["helpdesk"]
#   MIX_EVERY        1 in MIX_EVERY messages of the mix is for the Help Desk [10]
#   PY_REF           the configuration the CPU ratios are taken to           [py-unix]
#   SIZE             message body bytes (smtp-source -l)                     [4096]
#   WARMUP           messages sent (and not measured) after each milter switch [200]
#   STALL_TIMEOUT    seconds without progress of the sink's counter before giving up [30]
#   SETTLE           seconds to wait after a reload, before the warm-up      [1]
#   OPENDKIM_AR      1: OpenDKIM adds Authentication-Results to unsigned mail too (it adds one
#                    header, as the other milters do, and as it would for signed mail) [1]
#   VARIANTS_FILE    the daemon's variants                        [benches/daemon-variants]
#   HELPDESK_MILTER_BIN  the daemon binary; default: cargo build --release --locked, then
#                        target/release/helpdesk-milter
#   PERF=DIR         record each helpdesk-milter process with perf(1) during its throughput runs
#                    (call graphs, DWARF unwinding), one file per round, configuration and kind:
#                    DIR/r1-hm-unix:full-helpdesk.data; `perf report -i FILE --no-children`.
#                    It costs the daemon CPU: these runs' figures are not the benchmark's.
#
# Exit status: 0 when every run delivered all its messages, 1 when any run lost or deferred mail
# (the tables are still printed, with the failed runs marked), 2 on a setup error.
set -euo pipefail

PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH:${HOME:-/root}/.cargo/bin
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Debian's python3, which python3-milter installs into (not a pyenv or venv one from PATH).
PYTHON=/usr/bin/python3

DEFAULT_CONFIGS="none hm-tcp:full hm-unix:full hm-unix:shared hm-unix:stats-off hm-unix:stats-replies-off py-unix dkim-unix dkim-tcp"
N=${N:-2000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
LAT_N=${LAT_N:-500}
CONFIGS=${CONFIGS:-$DEFAULT_CONFIGS}
KINDS=${KINDS:-helpdesk other mix}
LAT_KINDS=${LAT_KINDS-helpdesk}
MIX_EVERY=${MIX_EVERY:-10}
PY_REF=${PY_REF:-py-unix}
RESULTS=${RESULTS:-}
KEEP=${KEEP:-0}
SIZE=${SIZE:-4096}
WARMUP=${WARMUP:-200}
STALL_TIMEOUT=${STALL_TIMEOUT:-30}
SETTLE=${SETTLE:-1}
OPENDKIM_AR=${OPENDKIM_AR:-1}
VARIANTS_FILE=${VARIANTS_FILE:-$REPO/benches/daemon-variants}
HELPDESK_MILTER_BIN=${HELPDESK_MILTER_BIN:-}
PERF=${PERF:-}

SENDER=writer@example.net
HELPDESK=helpdesk@example.org
OTHER=other@example.org

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "postfix-e2e: error: $*" >&2; exit 2; }
say() { echo "postfix-e2e: $*" >&2; }

while getopts 'n:r:s:l:c:t:o:kh' opt; do
    case $opt in
        n) N=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        s) SESSIONS=$OPTARG ;;
        l) LAT_N=$OPTARG ;;
        c) CONFIGS=$OPTARG ;;
        t) KINDS=$OPTARG ;;
        o) RESULTS=$OPTARG ;;
        k) KEEP=1 ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (see -h)"
for v in N ROUNDS SESSIONS LAT_N SIZE WARMUP STALL_TIMEOUT SETTLE MIX_EVERY; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$N" -gt 0 ] && [ "$ROUNDS" -gt 0 ] && [ "$SESSIONS" -gt 0 ] && [ "$LAT_N" -gt 0 ] && [ "$MIX_EVERY" -gt 0 ] \
    || die "N, ROUNDS, SESSIONS, LAT_N and MIX_EVERY must be at least 1"
read -r -a CONFIG_LIST <<<"$CONFIGS"
read -r -a KIND_LIST <<<"$KINDS"
read -r -a LAT_KIND_LIST <<<"$LAT_KINDS"
[ ${#CONFIG_LIST[@]} -gt 0 ] || die "no configuration to run (CONFIGS is empty)"
[ ${#KIND_LIST[@]} -gt 0 ] || die "no traffic kind to send (KINDS is empty)"
for k in "${KIND_LIST[@]}"; do
    [[ $k =~ ^(helpdesk|other|mix)$ ]] || die "unknown traffic kind '$k' (helpdesk, other or mix)"
done
for k in "${LAT_KIND_LIST[@]}"; do
    [[ $k =~ ^(helpdesk|other)$ ]] || die "LAT_KINDS: '$k' is not helpdesk or other (one session cannot mix)"
done
if [[ " ${KIND_LIST[*]} " == *" mix "* ]]; then
    [ "$SESSIONS" -ge 2 ] || die "the mix needs at least 2 sessions (one for each kind of mail)"
    [ "$N" -ge "$MIX_EVERY" ] || die "the mix needs N >= MIX_EVERY ($MIX_EVERY)"
fi

# The daemon's variants: NAME -> "table.key = value; ..." (benches/daemon-variants).
declare -A VARIANT=()
[ -r "$VARIANTS_FILE" ] || die "cannot read VARIANTS_FILE $VARIANTS_FILE"
while read -r name settings; do
    [ -n "$name" ] && [[ $name != \#* ]] || continue
    [[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "$VARIANTS_FILE: bad variant name '$name' (a-z, 0-9, -)"
    VARIANT[$name]=$settings
done <"$VARIANTS_FILE"

# Every configuration: its milter kind (none, hm, py, pyread, dkim), socket (tcp, unix), variant,
# label; the name of its process and directory (the configuration's name without ':').
declare -A MKIND=() SOCK=() VAR=() LABEL=() PNAME=()
for c in "${CONFIG_LIST[@]}"; do
    [ -z "${MKIND[$c]:-}" ] || die "configuration '$c' given twice"
    case $c in
        none) MKIND[$c]=none LABEL[$c]="no milter" ;;
        hm-tcp:* | hm-unix:*)
            v=${c#*:}
            [ -n "${VARIANT[$v]+set}" ] || die "unknown daemon variant '$v' in '$c' (see $VARIANTS_FILE)"
            s=${c%%:*}; s=${s#hm-}
            MKIND[$c]=hm SOCK[$c]=$s VAR[$c]=$v
            LABEL[$c]="helpdesk-milter $([ "$s" = tcp ] && echo TCP || echo UNIX), $v"
            ;;
        py-tcp | py-unix | pyread-tcp | pyread-unix | dkim-tcp | dkim-unix)
            MKIND[$c]=${c%-*} SOCK[$c]=${c##*-}
            case ${c%-*} in
                py) LABEL[$c]="pymilter add-header" ;;
                pyread) LABEL[$c]="pymilter add-header, reads all" ;;
                dkim) LABEL[$c]="OpenDKIM verify" ;;
            esac
            LABEL[$c]+=", $([ "${SOCK[$c]}" = tcp ] && echo TCP || echo UNIX)"
            ;;
        *) die "unknown configuration '$c' (none, hm-tcp:VARIANT, hm-unix:VARIANT, py-unix, py-tcp, pyread-unix, pyread-tcp, dkim-unix, dkim-tcp)" ;;
    esac
    PNAME[$c]=${c//:/-}
done
has_mkind() { local c; for c in "${CONFIG_LIST[@]}"; do [ "${MKIND[$c]}" = "$1" ] && return 0; done; return 1; }
has_py() { has_mkind py || has_mkind pyread; }
if [ -n "$RESULTS" ]; then
    case $RESULTS in /*) ;; *) RESULTS=$PWD/$RESULTS ;; esac
    : >"$RESULTS" || die "cannot write RESULTS file $RESULTS"
fi

# ---------------------------------------------------------------------------------------------
# Installation (Debian/Ubuntu, as root, non-interactive).

[ "$(id -u)" = 0 ] || die "must run as root: the Postfix master starts as root (try: sudo $0)"

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "missing $*, and no apt-get to install it"
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}
if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null \
    || ! command -v postconf >/dev/null || ! id postfix >/dev/null 2>&1; then
    # "No configuration": no /etc/postfix/main.cf, nothing started; we only use private instances.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    apt_install postfix
fi
if has_mkind dkim && ! command -v opendkim >/dev/null; then apt_install opendkim; fi
uses_pg() { local c; for c in "${CONFIG_LIST[@]}"; do [ "${MKIND[$c]}" = hm ] && [[ ${VARIANT[${VAR[$c]}]} == *@PG_URL@* ]] && return 0; done; return 1; }
pg_bin() { find /usr/lib/postgresql -maxdepth 3 -name initdb -path '*/bin/*' 2>/dev/null | sort -V | tail -1 | xargs -r dirname; }
if uses_pg && [ -z "$(pg_bin)" ]; then apt_install postgresql; fi
if [ -n "$PERF" ]; then
    command -v perf >/dev/null || apt_install linux-perf
    mkdir -p "$PERF"
    PERF=$(cd "$PERF" && pwd)
fi
# The report needs python3 in any case; pymilter its Milter module.
if ! [ -x "$PYTHON" ] || { has_py && ! "$PYTHON" -c 'import Milter' 2>/dev/null; }; then
    if has_py; then apt_install python3 python3-milter; else apt_install python3; fi
fi
missing=()
for tool in script awk tail grep stat touch sed; do command -v $tool >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt_install bsdutils mawk coreutils grep sed   # Essential on Debian; only a stripped image lacks them
fi
for tool in postfix postconf postsuper smtp-source smtp-sink script awk; do
    command -v $tool >/dev/null || die "$tool not found even after installing"
done
[ -x "$PYTHON" ] || die "$PYTHON not found even after installing python3"
if has_py; then "$PYTHON" -c 'import Milter' 2>/dev/null || die "python3-milter (import Milter) missing even after installing"; fi
if has_mkind dkim; then
    command -v opendkim >/dev/null || die "opendkim not found even after installing"
    id opendkim >/dev/null 2>&1 || die "user opendkim missing (the opendkim package creates it)"
fi

# The daemon.
if has_mkind hm; then
    if [ -z "$HELPDESK_MILTER_BIN" ]; then
        command -v cargo >/dev/null \
            || die "cargo not found: install Rust (rustup) or set HELPDESK_MILTER_BIN to a built binary"
        say "cargo build --release --locked"
        (cd "$REPO" && cargo build --release --locked --quiet) || die "cargo build --release --locked failed"
        HELPDESK_MILTER_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/helpdesk-milter
        case $HELPDESK_MILTER_BIN in /*) ;; *) HELPDESK_MILTER_BIN=$REPO/$HELPDESK_MILTER_BIN ;; esac
    fi
    [ -x "$HELPDESK_MILTER_BIN" ] || die "HELPDESK_MILTER_BIN=$HELPDESK_MILTER_BIN is not an executable"
fi

# ---------------------------------------------------------------------------------------------
# Temp dir, clean-up.

T=$(mktemp -d /tmp/helpdesk-e2e-bench.XXXXXX)
chmod 0755 "$T"   # Postfix's daemons, the sinks (user postfix) and opendkim traverse it
RIG=$T/postfix    # the rig's directory, laid out as tests/rig/main.cf says
ETC=$RIG/etc
MAILLOG=$RIG/log/maillog
PF_STARTED=0
declare -A PIDS=()   # name -> pid of what we started in the background

stop_pid() {   # stop_pid NAME: SIGTERM, wait up to 10 s, then SIGKILL
    local name=$1 pid=${PIDS[$1]:-} i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) did not stop on SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "$PF_STARTED" = 1 ]; then
        local mp
        mp=$(tr -d ' ' <"$RIG/spool/pid/master.pid" 2>/dev/null)
        postfix -c "$ETC" stop </dev/null >/dev/null 2>&1
        if [ -n "$mp" ]; then
            for ((i = 0; i < 100; i++)); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$mp" 2>/dev/null && kill -KILL "$mp" 2>/dev/null
        fi
    fi
    for name in "${!PIDS[@]}"; do stop_pid "$name"; done
    if [ -n "${PG_DIR:-}" ]; then
        runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ "$KEEP" = 1 ]; then
        say "kept $T (KEEP=1): postfix/etc, postfix/log/maillog, one directory per milter with its log"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Helpers.

now() { echo "$EPOCHREALTIME"; }

declare -A TAKEN=()
free_port() {   # a port nobody listens on, outside the ephemeral range (client source ports)
    local lo hi p i base span
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    if [ "$lo" -gt 12000 ]; then base=10000 span=$((lo - 10000)); else base=$((hi + 1)) span=$((65535 - hi)); fi
    [ "$span" -gt 100 ] || { base=20000 span=40000; }
    for ((i = 0; i < 200; i++)); do
        p=$((base + (RANDOM * 32768 + RANDOM) % span))
        [ -z "${TAKEN[$p]:-}" ] || continue
        tcp_listening "$p" && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        TAKEN[$p]=1
        echo "$p"
        return 0
    done
    die "no free port found"
}

tcp_listening() {   # is something listening on 127.0.0.1:PORT (or 0.0.0.0)? No probe connection.
    local hex
    hex=$(printf '%04X' "$1")
    grep -qE "^ *[0-9]+: (0100007F|00000000):$hex [0-9A-F]{8}:[0-9A-F]{4} 0A " /proc/net/tcp
}

unix_listening() { awk -v p="$1" '$4 == "00010000" && $NF == p { f = 1 } END { exit !f }' /proc/net/unix; }

wait_until() {   # wait_until SECONDS WHAT CMD...: poll CMD every 0.05 s
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 20; i++)); do "$@" && return 0; sleep 0.05; done
    return 1
}

sink_count() {   # the counter of an smtp-sink -c ("... mesg=N ..." records separated by \r)
    local tailtext
    tailtext=$(tail -c 300 "$1" 2>/dev/null | tr '\r' '\n') || true
    if [[ $tailtext =~ .*mesg=([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}

maillog_tail() { tail -n "${1:-20}" "$MAILLOG" 2>/dev/null | sed 's/^/    maillog: /' >&2 || true; }

pf() {   # postfix -c ETC ARGS...; Postfix prints its errors only to a TTY: show them with script(1)
    if ! postfix -c "$ETC" "$@" </dev/null >/dev/null 2>&1; then
        say "postfix $* failed; its own words:"
        script -qec "postfix -c $ETC $*" /dev/null </dev/null | tr -d '\r' | sed 's/^/    /' >&2 || true
        maillog_tail 20
        die "postfix $* failed (config in $ETC)"
    fi
}

backdate() { touch -d '-10 seconds' "$@"; }   # Postfix waits for a main.cf that is < 1-2 s old

master_pid() { tr -d ' ' <"$RIG/spool/pid/master.pid"; }

children_of() {   # children_of PID: its live direct children, from /proc (no procps needed)
    local f line fields
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue   # 2> first: the process may be gone
        read -r -a fields <<<"${line##*) }"   # state ppid ...
        if [ "${fields[1]:-}" = "$1" ] && [ "${fields[0]}" != Z ]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
    return 0
}

cpu_ticks() {   # cpu_ticks PID: utime + stime of the process (all threads), in clock ticks
    local line f
    read -r line 2>/dev/null <"/proc/$1/stat" || { echo 0; return; }
    read -r -a f <<<"${line##*) }"   # f[0] is field 3 (state): utime is field 14, stime 15
    echo $((f[11] + f[12]))
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# The process may exit between any two reads: one read, and its failure means gone.
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; [[ $s != *") Z "* ]]; }

# Sets main.cf parameters, reloads Postfix and waits until every process of the old generation is
# gone, so that the next SMTP session is served by an smtpd with the new settings.
pf_set() {
    local kv before old pid t0 left
    for kv in "$@"; do postconf -c "$ETC" -e "$kv" || die "postconf -e '$kv' failed"; done
    backdate "$ETC/main.cf"
    old=$(children_of "$(master_pid)")
    before=$(grep -c ']: reload -- version' "$MAILLOG" || true)
    pf reload
    t0=$SECONDS
    while :; do
        left=""
        for pid in $old; do alive "$pid" && left+=" $pid"; done
        if [ -z "$left" ] && [ "$(grep -c ']: reload -- version' "$MAILLOG" || true)" -gt "$before" ]; then
            break
        fi
        if [ $((SECONDS - t0)) -gt 30 ]; then
            maillog_tail 20
            die "postfix reload ($*) not done after 30 s (old processes left:$left)"
        fi
        sleep 0.05
    done
}

# ---------------------------------------------------------------------------------------------
# Ports, sinks.

SMTPD_PORT=$(free_port)
REINJECT_PORT=$(free_port)   # the rig's second smtpd (no milter); unused here
SINK_PORT=$(free_port)
REPLY_SINK_PORT=$(free_port)
DUMP_SINK_PORT=$(free_port)

mkdir -p "$T/log" "$T/dump" "$ETC" "$RIG/spool" "$RIG/data" "$RIG/log"
: >"$T/log/smtp-source.err"
chmod 0755 "$T/log" "$RIG" "$RIG/log"
chown postfix "$RIG/data" "$T/dump" "$T/log"

start_sink() {   # start_sink NAME PORT [smtp-sink options...]
    local name=$1 port=$2
    shift 2
    (cd "$T" && exec smtp-sink -u postfix -c "$@" "127.0.0.1:$port" 1024 >"$T/log/$name.out" 2>&1) &
    PIDS[$name]=$!
    wait_until 10 "$name" tcp_listening "$port" \
        || die "$name did not listen on 127.0.0.1:$port: $(tr '\r' '\n' <"$T/log/$name.out")"
}
start_sink sink "$SINK_PORT"                             # counts the benchmark's mail
start_sink reply-sink "$REPLY_SINK_PORT"                 # helpdesk-milter's auto-replies
start_sink dump-sink "$DUMP_SINK_PORT" -d "$T/dump/%H%M%S."   # the smoke check, then stopped

# ---------------------------------------------------------------------------------------------
# The milters: one process per configuration.

# write_daemon_config FILE SETTINGS...: the daemon's TOML from `table.key = value` settings; a
# later setting of the same key replaces the earlier one (the variant over the base).
write_daemon_config() {
    local file=$1 s key table order=() t k
    declare -A val=()
    shift
    for s in "$@"; do
        s=${s#"${s%%[![:space:]]*}"}
        [ -n "$s" ] || continue
        key=${s%%=*}; key=${key%"${key##*[![:space:]]}"}
        [[ $key =~ ^[a-z_]+\.[a-z_]+$ ]] && [[ $s == *=* ]] \
            || die "bad daemon setting '$s' (table.key = value; see $VARIANTS_FILE)"
        [ -n "${val[$key]+set}" ] || order+=("$key")
        val[$key]=${s#*=}
        val[$key]=${val[$key]#"${val[$key]%%[![:space:]]*}"}
    done
    {
        echo "# written by benches/postfix-e2e.sh"
        for table in $(printf '%s\n' "${order[@]}" | cut -d. -f1 | awk '!seen[$0]++'); do
            printf '\n[%s]\n' "$table"
            for k in "${order[@]}"; do
                t=${k%%.*}
                if [ "$t" = "$table" ]; then printf '%s = %s\n' "${k#*.}" "${val[$k]}"; fi
            done
        done
    } >"$file"
}

# A private PostgreSQL server for the variants on the shared store (as tests/support/postgres.rs
# starts one): initdb as postgres in the temp dir, on a free loopback port; the daemon's role
# logs in with a password from a 0600 file; every daemon on it gets the same secret.
PG_DIR="" PG_URL="" PG_PASSWORD_FILE=""
start_postgres() {
    local bin pw port
    bin=$(pg_bin)
    [ -n "$bin" ] || die "no PostgreSQL (apt-get install postgresql)"
    PG_DIR=$T/postgres
    mkdir -p "$PG_DIR"
    chown postgres: "$PG_DIR"
    runuser -u postgres -- "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --no-sync >"$PG_DIR/initdb.log" 2>&1 || die "initdb failed: $(cat "$PG_DIR/initdb.log")"
    port=$(free_port)
    runuser -u postgres -- "$bin/pg_ctl" -w -t 60 -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null || die "PostgreSQL did not start"
    pw=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    "$bin/psql" -X -q -h "$PG_DIR" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE helpdesk LOGIN PASSWORD '$pw'" -c "CREATE DATABASE helpdesk OWNER helpdesk" \
        || die "cannot create the role and database"
    PG_PASSWORD_FILE=$PG_DIR/password
    (umask 077 && printf '%s\n' "$pw" >"$PG_PASSWORD_FILE" && head -c 32 /dev/urandom >"$PG_DIR/secret")
    PG_URL="postgresql://helpdesk@127.0.0.1:$port/helpdesk?sslmode=disable"
    say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port for the shared store"
}

declare -A MILTER=() PROCLOG=() CPU_PID=() READY=()
start_milter() {   # start_milter CONFIG: starts its process; sets MILTER, PROCLOG, READY
    local c=$1 name=${PNAME[$1]} d=$T/${PNAME[$1]} port="" sock="" settings
    mkdir -p "$d"
    chmod 0755 "$d"
    if [ "${SOCK[$c]}" = tcp ]; then port=$(free_port); else mkdir -p "$d/run"; chmod 0755 "$d/run"; sock=$d/run/milter.sock; fi
    case ${MKIND[$c]} in
        hm)
            # The reply file in a directory of its own, as in /etc/helpdesk-milter: the daemon
            # watches that directory, and a log or state written beside it would wake the watcher.
            mkdir -p "$d/reply"
            cp "$REPO/etc/reply.toml" "$d/reply/reply.toml"
            local base=(
                "milter.listen = \"${port:+inet:127.0.0.1:$port}${sock:+unix:$sock}\""
                "helpdesk.addresses = [\"$HELPDESK\"]"
                "autoreply.enabled = true"
                "autoreply.reply_file = \"reply/reply.toml\""
                "autoreply.from = \"Help Desk <$HELPDESK>\""
                "autoreply.relay = \"smtp://127.0.0.1:$REPLY_SINK_PORT\""
                "state.directory = \"$d/state\""
                "log.level = \"info\""
            )
            # The socket's directory is 0755 and the socket group postfix, mode 0660: smtpd (user
            # postfix) may connect, nobody else.
            [ -z "$sock" ] || base+=("milter.socket_mode = \"0660\"" "milter.socket_group = \"postfix\"")
            IFS=';' read -r -a settings <<<"${VARIANT[${VAR[$c]}]}"
            if [[ ${VARIANT[${VAR[$c]}]} == *@PG_URL@* ]]; then
                settings=("${settings[@]//@PG_URL@/$PG_URL}")
                settings=("${settings[@]//@PG_PASSWORD_FILE@/$PG_PASSWORD_FILE}")
                mkdir -p "$d/state" && chmod 0700 "$d/state"
                install -m 0600 "$PG_DIR/secret" "$d/state/secret"
            fi
            write_daemon_config "$d/helpdesk-milter.toml" "${base[@]}" "${settings[@]}"
            "$HELPDESK_MILTER_BIN" check --config "$d/helpdesk-milter.toml" >"$d/check.out" 2>&1 \
                || die "helpdesk-milter check rejected $d/helpdesk-milter.toml ($c): $(cat "$d/check.out")"
            PROCLOG[$c]=$d/daemon.log
            "$HELPDESK_MILTER_BIN" run --config "$d/helpdesk-milter.toml" </dev/null >>"$d/daemon.log" 2>&1 &
            ;;
        py | pyread)
            PROCLOG[$c]=$d/pymilter.log
            local pyargs=()
            [ "${MKIND[$c]}" = pyread ] && pyargs=(--read)
            "$PYTHON" "$REPO/benches/pymilter-addheader.py" "${port:+inet:$port@127.0.0.1}${sock:+unix:$sock}" \
                "${pyargs[@]}" </dev/null >"$d/pymilter.log" 2>&1 &
            ;;
        dkim)
            chown opendkim "$d"
            [ -z "$sock" ] || chown opendkim "$d/run"
            # Verify only, no keys. InternalHosts (default 127.0.0.1) would make our loopback
            # client "internal", i.e. mail to sign rather than to verify: list a documentation
            # address instead. UMask 0: the socket, in a 0755 directory, must let smtpd in.
            cat >"$d/opendkim.conf" <<EOF
# written by benches/postfix-e2e.sh
Mode                    v
Socket                  ${port:+inet:$port@127.0.0.1}${sock:+local:$sock}
UMask                   0000
UserID                  opendkim
PidFile                 $d/opendkim.pid
Syslog                  no
InternalHosts           192.0.2.1
AuthservID              rig.localdomain
AlwaysAddARHeader       $([ "$OPENDKIM_AR" = 1 ] && echo yes || echo no)
SoftwareHeader          no
EOF
            PROCLOG[$c]=$d/opendkim.log
            opendkim -f -x "$d/opendkim.conf" </dev/null >"$d/opendkim.log" 2>&1 &
            ;;
    esac
    PIDS[$name]=$!
    CPU_PID[$c]=$!
    if [ -n "$port" ]; then MILTER[$c]="inet:127.0.0.1:$port" READY[$c]="tcp_listening $port"
    else MILTER[$c]="unix:$sock" READY[$c]="unix_listening $sock"; fi
}

wait_milter() {   # wait_milter CONFIG
    local c=$1 i
    for ((i = 0; i < 400; i++)); do
        ${READY[$c]} && return 0
        kill -0 "${CPU_PID[$c]}" 2>/dev/null || { cat "${PROCLOG[$c]}" >&2; die "$c exited at start (log above)"; }
        sleep 0.05
    done
    cat "${PROCLOG[$c]}" >&2
    die "$c not ready after 20 s (log above)"
}

MILTER[none]=""
if uses_pg; then start_postgres; fi
for c in "${CONFIG_LIST[@]}"; do [ "${MKIND[$c]}" = none ] || start_milter "$c"; done
for c in "${CONFIG_LIST[@]}"; do [ "${MKIND[$c]}" = none ] || wait_milter "$c"; done

# ---------------------------------------------------------------------------------------------
# Postfix: the rig of tests/rig/ (smtpd on SMTPD_PORT, everything relayed to the sink; no chroot,
# no syslog, nothing local), first relaying to the dumping sink for the smoke check.

render_rig() {   # render_rig TEMPLATE OUT: the placeholders replaced; one left over is an error
    sed -e "s|{{RIG_DIR}}|$RIG|g" -e "s|{{SMTPD_PORT}}|$SMTPD_PORT|g" \
        -e "s|{{REINJECT_PORT}}|$REINJECT_PORT|g" -e "s|{{SINK_PORT}}|$DUMP_SINK_PORT|g" "$1" >"$2" \
        || die "cannot render $1"
    if grep -n '{{' "$2" >&2; then die "unknown placeholder in $1 (line above)"; fi
}
render_rig "$REPO/tests/rig/main.cf" "$ETC/main.cf"
render_rig "$REPO/tests/rig/master.cf" "$ETC/master.cf"
backdate "$ETC/main.cf" "$ETC/master.cf"
pf check   # runs post-install: creates the queue directories with their owners
PF_STARTED=1
pf start
wait_until 20 smtpd tcp_listening "$SMTPD_PORT" || { maillog_tail 20; die "smtpd not listening on $SMTPD_PORT"; }

# ---------------------------------------------------------------------------------------------
# The machine.

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || cpu=unknown
pf_version=$(postconf -c "$ETC" -h mail_version 2>/dev/null || echo unknown)
dkim_version=-
has_mkind dkim && dkim_version=$(opendkim -V 2>&1 | head -1 | sed 's/^opendkim: //')
py_version=-
has_py && py_version="pymilter $(dpkg-query -W -f='${Version}' python3-milter 2>/dev/null || echo '?'), $("$PYTHON" -V 2>&1)"
hm_version=-
[ -n "$HELPDESK_MILTER_BIN" ] && hm_version=$("$HELPDESK_MILTER_BIN" --version 2>&1 | head -1)
git_rev=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo "not a git checkout")
load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== helpdesk-milter end-to-end benchmark (benches/postfix-e2e.sh)"
echo "date      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine   $(nproc) CPU(s), $cpu; kernel $(uname -r); load average $load"
echo "software  Postfix $pf_version; $dkim_version; $py_version; $hm_version ($git_rev)"
echo "workload  N=$N msgs x ${SESSIONS} sessions per kind (${KIND_LIST[*]}; mix: 1 in $MIX_EVERY to the Help Desk)," \
    "${LAT_N} msgs x 1 session (${LAT_KIND_LIST[*]:-no latency run}), ${SIZE}-byte bodies; $ROUNDS round(s) of:" \
    "${CONFIG_LIST[*]}; warm-up $WARMUP msgs per switch"
echo "temp dir  $T"
if [ -n "$RESULTS" ]; then
    {
        printf 'machine\tdate\t%s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')"
        printf 'machine\tnproc\t%s\n' "$(nproc)"
        printf 'machine\tcpu\t%s\n' "$cpu"
        printf 'machine\tkernel\t%s\n' "$(uname -r)"
        printf 'machine\tload_at_start\t%s\n' "$load"
        printf 'machine\tpostfix\t%s\n' "$pf_version"
        printf 'machine\topendkim\t%s\n' "$dkim_version"
        printf 'machine\tpymilter\t%s\n' "$py_version"
        printf 'machine\thelpdesk_milter\t%s (%s)\n' "$hm_version" "$git_rev"
        printf 'params\tN\t%s\nparams\tsessions\t%s\nparams\tlat_n\t%s\nparams\tsize\t%s\nparams\trounds\t%s\n' \
            "$N" "$SESSIONS" "$LAT_N" "$SIZE" "$ROUNDS"
        printf 'params\tkinds\t%s\nparams\tlat_kinds\t%s\nparams\tmix_every\t%s\nparams\tconfigs\t%s\n' \
            "${KIND_LIST[*]}" "${LAT_KIND_LIST[*]}" "$MIX_EVERY" "${CONFIG_LIST[*]}"
        for c in "${CONFIG_LIST[@]}"; do printf '%s\tlabel\t%s\n' "$c" "${LABEL[$c]}"; done
        for v in "${!VARIANT[@]}"; do printf 'variant\t%s\t%s\n' "$v" "${VARIANT[$v]}"; done
    } >>"$RESULTS"
fi

# ---------------------------------------------------------------------------------------------
# One batch: smtp-source, then wait for the sink. Sets B_* globals.

FAILED_RUNS=0
send() {   # send SESSIONS COUNT RCPT [smtp-source options...]: returns smtp-source's status
    local s=$1 m=$2 to=$3
    shift 3
    # -A: do not abort the whole run on one 4xx; the failure is counted below instead.
    smtp-source -A -s "$s" -m "$m" -l "$SIZE" -f "$SENDER" -t "$to" "$@" \
        "127.0.0.1:$SMTPD_PORT" </dev/null >>"$T/log/smtp-source.err" 2>&1
}

traffic() {   # traffic KIND SESSIONS COUNT [smtp-source options...]
    local kind=$1 s=$2 m=$3 hs hm rc=0 pid
    shift 3
    case $kind in
        helpdesk) send "$s" "$m" "$HELPDESK" "$@" ;;
        other) send "$s" "$m" "$OTHER" "$@" ;;
        mix)
            # Messages and sessions split alike, so that both parts end at about the same time.
            hm=$(((m + MIX_EVERY / 2) / MIX_EVERY)); [ "$hm" -ge 1 ] || hm=1
            hs=$(((s + MIX_EVERY / 2) / MIX_EVERY)); [ "$hs" -ge 1 ] || hs=1
            send "$hs" "$hm" "$HELPDESK" "$@" &
            pid=$!
            send $((s - hs)) $((m - hm)) "$OTHER" "$@" || rc=$?
            wait "$pid" || rc=$?
            return "$rc"
            ;;
    esac
}

batch() {   # batch WHAT KIND SESSIONS COUNT
    local what=$1 kind=$2 s=$3 m=$4 off c0 c last_c last_t t0 t1 t2 rc=0 errs0 win problems=""
    off=$(stat -c %s "$MAILLOG")
    errs0=$(wc -l <"$T/log/smtp-source.err")
    c0=$(sink_count "$T/log/sink.out")
    t0=$(now)
    traffic "$kind" "$s" "$m" || rc=$?
    t1=$(now)
    # The sink is read only now: no polling while smtp-source runs.
    last_c=-1 last_t=$SECONDS
    while :; do
        c=$(sink_count "$T/log/sink.out")
        [ $((c - c0)) -ge "$m" ] && break
        if [ "$c" != "$last_c" ]; then last_c=$c last_t=$SECONDS; fi
        if [ $((SECONDS - last_t)) -ge "$STALL_TIMEOUT" ]; then
            problems+=" sink-stalled-${STALL_TIMEOUT}s"
            break
        fi
        sleep 0.02
    done
    t2=$(now)
    sleep 0.1   # let the last log lines reach the maillog
    c=$(sink_count "$T/log/sink.out")
    win=$(tail -c +$((off + 1)) "$MAILLOG")
    B_DELIVERED=$((c - c0))
    B_REJECTED=$(grep -cE 'milter-reject|NOQUEUE: reject|: reject: ' <<<"$win" || true)
    B_DEFERRED=$(grep -c 'status=deferred' <<<"$win" || true)
    B_BOUNCED=$(grep -cE 'status=(bounced|expired)' <<<"$win" || true)
    B_MILTER_WARN=$(grep -ciE 'warning: .*milter' <<<"$win" || true)
    B_SRC_ERR=$(($(wc -l <"$T/log/smtp-source.err") - errs0))
    B_INGEST_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    B_E2E_S=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.4f", b - a }')
    [ "$rc" = 0 ] || problems+=" smtp-source-exit-$rc"
    [ "$B_DELIVERED" = "$m" ] || problems+=" delivered-$B_DELIVERED-of-$m"
    [ "$B_REJECTED" = 0 ] || problems+=" rejected-$B_REJECTED"
    [ "$B_DEFERRED" = 0 ] || problems+=" deferred-$B_DEFERRED"
    [ "$B_BOUNCED" = 0 ] || problems+=" bounced-$B_BOUNCED"
    [ "$B_MILTER_WARN" = 0 ] || problems+=" milter-warnings-$B_MILTER_WARN"
    [ "$B_SRC_ERR" = 0 ] || problems+=" smtp-source-errors-$B_SRC_ERR"
    B_PROBLEMS=${problems# }
    if [ -n "$B_PROBLEMS" ]; then
        FAILED_RUNS=$((FAILED_RUNS + 1))
        {
            echo "!!!!!!!! FAILED RUN: $what: $B_PROBLEMS"
            tail -n 3 "$T/log/smtp-source.err" | sed 's/^/    /'
            grep -E 'reject|status=(deferred|bounced|expired)|warning|fatal|error' <<<"$win" | tail -n 6 \
                | sed 's/^/    maillog: /'
        } >&2
        # Whatever is still queued would pollute the next run.
        postsuper -c "$ETC" -d ALL >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------------------------------------
# Smoke check: per configuration, one message of each kind through the dumping sink; the milters
# must have done their work on it (helpdesk-milter: X-HelpDesk-Class: support on Help Desk mail,
# no X-HelpDesk- header on other mail; pymilter: X-Bench-Pymilter; OpenDKIM:
# Authentication-Results).

smoke_one() {   # smoke_one CONFIG KIND: the path of the delivered message's dump file
    local cfg=$1 kind=$2 subject="postfix-e2e smoke $1 $2 $RANDOM$RANDOM" f c0 i
    c0=$(sink_count "$T/log/dump-sink.out")
    traffic "$kind" 1 1 -S "$subject" || true
    for ((i = 0; i < 400; i++)); do
        [ "$(sink_count "$T/log/dump-sink.out")" -gt "$c0" ] && break
        sleep 0.05
    done
    sleep 0.1
    f=$(grep -rlF "Subject: $subject" "$T/dump" 2>/dev/null | head -1) || true
    if [ -z "$f" ]; then
        tail -n 5 "$T/log/smtp-source.err" >&2 || true
        maillog_tail 15
        die "smoke check ($cfg, ${LABEL[$cfg]}, $kind mail): the message did not reach the sink"
    fi
    echo "$f"
}

smoke_fail() {   # smoke_fail CONFIG FILE WHY
    sed 's/^/    /' "$2" | head -40 >&2
    die "smoke check ($1, ${LABEL[$1]}): $3 (message above)"
}

header_line() {   # header_line FILE NAME-REGEX: the matching header fields, unfolded, "; "-joined
    tr -d '\r' <"$1" | awk -v re="$2" '
        /^$/ { exit }
        tolower($0) ~ "^(" re "):" { if (p) printf "; "; p = 1; printf "%s", $0; f = 1; next }
        f && /^[ \t]/ { sub(/^[ \t]+/, " "); printf "%s", $0; next }
        { f = 0 }'
}

smoke() {   # smoke CONFIG
    local cfg=$1 fh fo
    pf_set "smtpd_milters = ${MILTER[$cfg]}"
    fh=$(smoke_one "$cfg" helpdesk)
    fo=$(smoke_one "$cfg" other)
    case ${MKIND[$cfg]} in
        hm)
            grep -qi '^X-HelpDesk-Class: support' "$fh" \
                || smoke_fail "$cfg" "$fh" "no 'X-HelpDesk-Class: support' on Help Desk mail: the benchmark would not measure the triage"
            ! grep -qi '^X-HelpDesk-' "$fo" || smoke_fail "$cfg" "$fo" "an X-HelpDesk- header on mail not for the Help Desk"
            echo "smoke     $cfg: helpdesk: $(header_line "$fh" 'x-helpdesk-[a-z-]*'); other: untouched"
            ;;
        py | pyread)
            for f in "$fh" "$fo"; do
                grep -qi '^X-Bench-Pymilter: seen' "$f" || smoke_fail "$cfg" "$f" "no X-Bench-Pymilter header"
            done
            echo "smoke     $cfg: $(header_line "$fh" 'x-bench-pymilter') (both kinds); $(grep -m1 '^negotiated' "${PROCLOG[$cfg]}" || echo 'negotiation not logged')"
            ;;
        dkim)
            if [ "$OPENDKIM_AR" = 1 ]; then
                for f in "$fh" "$fo"; do
                    grep -qi '^Authentication-Results: rig.localdomain' "$f" \
                        || smoke_fail "$cfg" "$f" "no Authentication-Results header"
                done
            fi
            echo "smoke     $cfg: $(header_line "$fh" 'authentication-results') (both kinds)"
            ;;
        none) echo "smoke     $cfg: delivered (both kinds)" ;;
    esac
}
for cfg in "${CONFIG_LIST[@]}"; do smoke "$cfg"; done
pf_set "relayhost = [127.0.0.1]:$SINK_PORT"
stop_pid dump-sink
echo

# ---------------------------------------------------------------------------------------------
# The rounds.

RAW=$T/raw.tsv   # round, config, kind, metric, value
: >"$RAW"
t_start=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    for cfg in "${CONFIG_LIST[@]}"; do
        mpid=${CPU_PID[$cfg]:-}
        if [ -n "$mpid" ] && ! kill -0 "$mpid" 2>/dev/null; then
            echo "!!!!!!!! the milter of $cfg (${LABEL[$cfg]}) is not running any more; its log ends with:" >&2
            tail -n 5 "${PROCLOG[$cfg]}" | sed 's/^/    /' >&2
        fi
        pf_set "smtpd_milters = ${MILTER[$cfg]}"
        sleep "$SETTLE"
        if [ "$WARMUP" -gt 0 ]; then
            batch "round $r $cfg warm-up" "${KIND_LIST[0]}" "$SESSIONS" "$WARMUP"
            [ -z "$B_PROBLEMS" ] || say "warm-up of $cfg (${LABEL[$cfg]}) failed: the runs below will likely fail too"
        fi
        for kind in "${KIND_LIST[@]}"; do
            perf_pid=""
            if [ -n "$PERF" ] && [ -n "$mpid" ] && [ "${MKIND[$cfg]}" = hm ]; then
                perf record -q -F 999 --call-graph dwarf,32768 -p "$mpid" \
                    -o "$PERF/r$r-$cfg-$kind.data" 2>>"$T/log/perf.err" &
                perf_pid=$!
                sleep 0.5
            fi
            cpu0=0; [ -n "$mpid" ] && cpu0=$(cpu_ticks "$mpid")
            batch "round $r $cfg $kind: $SESSIONS sessions x $N" "$kind" "$SESSIONS" "$N"
            if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
            cpu="-"
            [ -n "$mpid" ] && cpu=$(awk -v t=$(($(cpu_ticks "$mpid") - cpu0)) -v hz="$CLK_TCK" -v n="$N" \
                'BEGIN { printf "%.0f", t * 1e6 / hz / n }')
            ingest=$(awk -v n="$N" -v s="$B_INGEST_S" 'BEGIN { printf "%.1f", n / s }')
            e2e=$(awk -v n="$N" -v s="$B_E2E_S" 'BEGIN { printf "%.1f", n / s }')
            lost=$((N - B_DELIVERED)); [ "$lost" -ge 0 ] || lost=0
            printf 'round %d  %-28s %-8s  ingest %7.1f msg/s  e2e %7.1f msg/s  milter CPU %5s us/msg  (%s/%s delivered)%s\n' \
                "$r" "$cfg" "$kind" "$ingest" "$e2e" "$cpu" "$B_DELIVERED" "$N" "${B_PROBLEMS:+  !!! FAILED: $B_PROBLEMS}"
            printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$cfg" "$kind" ingest "$ingest" "$r" "$cfg" "$kind" e2e "$e2e" \
                "$r" "$cfg" "$kind" cpu "$cpu" "$r" "$cfg" "$kind" failed "$([ -z "$B_PROBLEMS" ] && echo 0 || echo 1)" \
                "$r" "$cfg" "$kind" lost "$lost" >>"$RAW"
        done
        for kind in "${LAT_KIND_LIST[@]}"; do
            batch "round $r $cfg $kind: 1 session x $LAT_N" "$kind" 1 "$LAT_N"
            lat=$(awk -v n="$LAT_N" -v s="$B_INGEST_S" 'BEGIN { printf "%.3f", s * 1000 / n }')
            lost=$((LAT_N - B_DELIVERED)); [ "$lost" -ge 0 ] || lost=0
            printf 'round %d  %-28s %-8s  latency %7.3f ms/msg, 1 session  (%s/%s delivered)%s\n' \
                "$r" "$cfg" "$kind" "$lat" "$B_DELIVERED" "$LAT_N" "${B_PROBLEMS:+  !!! FAILED: $B_PROBLEMS}"
            printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$cfg" "$kind" lat "$lat" \
                "$r" "$cfg" "$kind" lat_failed "$([ -z "$B_PROBLEMS" ] && echo 0 || echo 1)" \
                "$r" "$cfg" "$kind" lat_lost "$lost" >>"$RAW"
        done
    done
done
elapsed=$((SECONDS - t_start))

# ---------------------------------------------------------------------------------------------
# Summary.

replies=$(sink_count "$T/log/reply-sink.out")
echo
"$PYTHON" "$REPO/benches/postfix-e2e-report.py" --raw "$RAW" --configs "${CONFIG_LIST[*]}" \
    --kinds "${KIND_LIST[*]}" --lat-kinds "${LAT_KIND_LIST[*]}" --py-ref "$PY_REF" \
    --n "$N" --sessions "$SESSIONS" --lat-n "$LAT_N" --mix-every "$MIX_EVERY" \
    ${RESULTS:+--results "$RESULTS"} || die "the report failed (raw figures in $RAW; -k keeps them)"
echo
n_hm=0   # the daemons whose variant leaves the auto-replies on
for c in "${CONFIG_LIST[@]}"; do
    [ "${MKIND[$c]}" = hm ] && ! [[ ${VARIANT[${VAR[$c]}]} =~ autoreply\.enabled\ *=\ *false ]] && n_hm=$((n_hm + 1))
done
echo "auto-replies received by the reply sink: $replies (one per daemon with replies on expected: $n_hm; one sender, interval 7d)"
echo "measured in ${elapsed} s (load average now $(cut -d' ' -f1-3 /proc/loadavg)); failed runs: $FAILED_RUNS"
if [ -n "$RESULTS" ]; then
    printf 'summary\tfailed_runs\t%s\nsummary\tseconds\t%s\nsummary\tauto_replies\t%s\nmachine\tload_at_end\t%s\n' \
        "$FAILED_RUNS" "$elapsed" "$replies" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
    echo "results written to $RESULTS"
fi
if [ "$FAILED_RUNS" -gt 0 ]; then
    echo "!!!!!!!! $FAILED_RUNS RUN(S) FAILED: not every message arrived, or some were rejected or deferred (see above)" >&2
    exit 1
fi
