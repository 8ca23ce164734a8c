#!/bin/bash
# postfix-e2e.sh -- end-to-end benchmark: a real Postfix on loopback, with and without milters.
#
#   smtp-source --SMTP--> Postfix smtpd (+ smtpd_milters) -> queue -> smtp -> smtp-sink (counts)
#
# Four configurations, on ONE private Postfix instance, interleaved over ROUNDS rounds
# (a b c d, a b c d, ...), so that a slow moment of the machine hits them all alike:
#   a  no milter (the limit)
#   b  helpdesk-milter over TCP          (inet:127.0.0.1:PORT)
#   c  helpdesk-milter over a UNIX socket (socket_group postfix, mode 0660)
#   d  OpenDKIM in verify mode over TCP  (a peer: Debian's libmilter-based milter)
# Every message goes from writer@example.net to the Help Desk address helpdesk@example.org,
# so helpdesk-milter triages it as a support request (the realistic path: classify, headers,
# auto-reply decision in its state store). Its auto-replies go to a second smtp-sink, so that they
# do not count as delivered mail. milter_default_action = tempfail: a dead milter shows up as
# failures, never as mail passing untriaged.
#
# Per configuration and round:
#   throughput  smtp-source -s SESSIONS -m N -l SIZE: ingest msg/s = N / smtp-source's wall time
#               (every message accepted, milter EOM included); end-to-end msg/s = N / time until
#               the sink's counter grew by N.
#   latency     smtp-source -s 1 -m LAT_N -l SIZE: ms per message = wall time / LAT_N.
#   milter CPU  CPU time (user + system, all threads) the milter process used during the
#               throughput run, per message, in microseconds (from /proc/PID/stat).
# Then the median over rounds, and for b, c, d the ratio to a of the same round (median of the
# per-round ratios) and the added latency (median of the per-round differences).
#
# Usage (as root; installs postfix and opendkim with apt-get when missing):
#   benches/postfix-e2e.sh [-n N] [-r ROUNDS] [-s SESSIONS] [-l LAT_N] [-c "a b c d"] [-o RESULTS] [-k]
#   N=500 ROUNDS=1 benches/postfix-e2e.sh          # a quick try
#
# Options / environment (a flag wins over the environment):
#   -n N             messages per throughput run                       [5000]
#   -r ROUNDS        rounds                                            [3]
#   -s SESSIONS      parallel SMTP sessions of the throughput run      [20]
#   -l LAT_N         messages of the 1-session latency run             [500]
#   -c CONFIGS       configurations to run, in this order per round    ["a b c d"]
#   -o RESULTS       write machine-readable results (TSV: config, metric, value) to this file
#   -k  (KEEP=1)     keep the temp dir (configs, maillog, daemon logs) and print its path
#   SIZE             message body bytes (smtp-source -l)               [4096]
#   WARMUP           messages sent (and not measured) after each milter switch [200]
#   STALL_TIMEOUT    seconds without progress of the sink's counter before giving up [30]
#   SETTLE           seconds to wait after a reload, before the warm-up [1]
#   OPENDKIM_AR      1: OpenDKIM adds Authentication-Results to unsigned mail too (it adds one
#                    header, as helpdesk-milter does, and as it would for signed mail) [1]
#   HELPDESK_MILTER_BIN  the daemon binary; default: cargo build --release --locked, then
#                        target/release/helpdesk-milter
#
# Exit status: 0 when every run delivered all its messages, 1 when any run lost or deferred mail
# (the table is still printed, with the failed runs marked), 2 on a setup error.
set -euo pipefail

PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH:${HOME:-/root}/.cargo/bin
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

N=${N:-5000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
LAT_N=${LAT_N:-500}
CONFIGS=${CONFIGS:-a b c d}
RESULTS=${RESULTS:-}
KEEP=${KEEP:-0}
SIZE=${SIZE:-4096}
WARMUP=${WARMUP:-200}
STALL_TIMEOUT=${STALL_TIMEOUT:-30}
SETTLE=${SETTLE:-1}
OPENDKIM_AR=${OPENDKIM_AR:-1}
HELPDESK_MILTER_BIN=${HELPDESK_MILTER_BIN:-}

SENDER=writer@example.net
HELPDESK=helpdesk@example.org

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "postfix-e2e: error: $*" >&2; exit 2; }
say() { echo "postfix-e2e: $*" >&2; }

while getopts 'n:r:s:l:c:o:kh' opt; do
    case $opt in
        n) N=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        s) SESSIONS=$OPTARG ;;
        l) LAT_N=$OPTARG ;;
        c) CONFIGS=$OPTARG ;;
        o) RESULTS=$OPTARG ;;
        k) KEEP=1 ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (see -h)"
for v in N ROUNDS SESSIONS LAT_N SIZE WARMUP STALL_TIMEOUT SETTLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$N" -gt 0 ] && [ "$ROUNDS" -gt 0 ] && [ "$SESSIONS" -gt 0 ] && [ "$LAT_N" -gt 0 ] \
    || die "N, ROUNDS, SESSIONS and LAT_N must be at least 1"
read -r -a CONFIG_LIST <<<"$CONFIGS"
[ ${#CONFIG_LIST[@]} -gt 0 ] || die "no configuration to run (CONFIGS is empty)"
for c in "${CONFIG_LIST[@]}"; do
    [[ $c =~ ^[abcd]$ ]] || die "unknown configuration '$c' (a, b, c or d)"
done
has_config() { [[ " ${CONFIG_LIST[*]} " == *" $1 "* ]]; }
if [ -n "$RESULTS" ]; then
    case $RESULTS in /*) ;; *) RESULTS=$PWD/$RESULTS ;; esac
    : >"$RESULTS" || die "cannot write RESULTS file $RESULTS"
fi

declare -A LABEL=(
    [a]="no milter"
    [b]="helpdesk-milter, TCP"
    [c]="helpdesk-milter, UNIX socket"
    [d]="OpenDKIM (verify), TCP"
)

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
if has_config d && ! command -v opendkim >/dev/null; then apt_install opendkim; fi
missing=()
for tool in script awk tail grep stat touch; do command -v $tool >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt_install bsdutils mawk coreutils grep   # Essential on Debian; only a stripped image lacks them
fi
for tool in postfix postconf postsuper smtp-source smtp-sink script awk; do
    command -v $tool >/dev/null || die "$tool not found even after installing"
done
has_config d && { command -v opendkim >/dev/null || die "opendkim not found even after installing"; }
has_config d && { id opendkim >/dev/null 2>&1 || die "user opendkim missing (the opendkim package creates it)"; }

# The daemon.
if has_config b || has_config c; then
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
ETC=$T/postfix/etc
MAILLOG=$T/log/maillog
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
        mp=$(tr -d ' ' <"$T/postfix/spool/pid/master.pid" 2>/dev/null)
        postfix -c "$ETC" stop </dev/null >/dev/null 2>&1
        if [ -n "$mp" ]; then
            for ((i = 0; i < 100; i++)); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$mp" 2>/dev/null && kill -KILL "$mp" 2>/dev/null
        fi
    fi
    for name in "${!PIDS[@]}"; do stop_pid "$name"; done
    if [ "$KEEP" = 1 ]; then
        say "kept $T (KEEP=1): postfix/etc, log/maillog, helpdesk-*/daemon.log, opendkim/opendkim.log"
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

master_pid() { tr -d ' ' <"$T/postfix/spool/pid/master.pid"; }

children_of() {   # children_of PID: its live direct children, from /proc (no procps needed)
    local f line fields
    for f in /proc/[0-9]*/stat; do
        read -r line <"$f" 2>/dev/null || continue
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
    read -r line <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
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
SINK_PORT=$(free_port)
REPLY_SINK_PORT=$(free_port)
DUMP_SINK_PORT=$(free_port)
HM_TCP_PORT=$(free_port)
DKIM_PORT=$(free_port)
HM_SOCKET=$T/helpdesk-unix/run/milter.sock

mkdir -p "$T/log" "$T/dump" "$ETC" "$T/postfix/spool" "$T/postfix/data"
: >"$T/log/smtp-source.err"
chmod 0755 "$T/log" "$T/postfix"
chown postfix "$T/postfix/data" "$T/dump" "$T/log"

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
# The milters.

start_helpdesk() {   # start_helpdesk NAME LISTEN [extra [milter] lines]
    local name=$1 listen=$2 extra=${3:-} d=$T/$1
    # The reply file in a directory of its own, as in /etc/helpdesk-milter: the daemon watches
    # that directory, and a log or state written beside it would wake the watcher on every line.
    mkdir -p "$d/reply"
    cp "$REPO/etc/reply.toml" "$d/reply/reply.toml"
    cat >"$d/helpdesk-milter.toml" <<EOF
# written by benches/postfix-e2e.sh
[milter]
listen = "$listen"
$extra
[helpdesk]
addresses = ["$HELPDESK"]

[autoreply]
enabled = true
reply_file = "reply/reply.toml"
from = "Help Desk <$HELPDESK>"
relay = "smtp://127.0.0.1:$REPLY_SINK_PORT"

[state]
directory = "$d/state"

[log]
level = "info"
EOF
    "$HELPDESK_MILTER_BIN" check --config "$d/helpdesk-milter.toml" >"$d/check.out" 2>&1 \
        || die "helpdesk-milter check rejected $d/helpdesk-milter.toml: $(cat "$d/check.out")"
    "$HELPDESK_MILTER_BIN" run --config "$d/helpdesk-milter.toml" \
        </dev/null >>"$d/daemon.log" 2>&1 &
    PIDS[$name]=$!
}

wait_milter() {   # wait_milter NAME LOG CHECK-CMD...
    local name=$1 log=$2 i
    shift 2
    for ((i = 0; i < 400; i++)); do
        "$@" && return 0
        kill -0 "${PIDS[$name]}" 2>/dev/null || { cat "$log" >&2; die "$name exited at start (log above)"; }
        sleep 0.05
    done
    cat "$log" >&2
    die "$name not ready after 20 s (log above)"
}

if has_config b; then
    start_helpdesk helpdesk-tcp "inet:127.0.0.1:$HM_TCP_PORT"
fi
if has_config c; then
    # The socket's directory is 0755 and the socket group postfix, mode 0660: smtpd (user
    # postfix) may connect, nobody else.
    mkdir -p "$(dirname "$HM_SOCKET")"
    chmod 0755 "$T/helpdesk-unix" "$(dirname "$HM_SOCKET")"
    start_helpdesk helpdesk-unix "unix:$HM_SOCKET" $'socket_mode = "0660"\nsocket_group = "postfix"'
fi
if has_config d; then
    mkdir -p "$T/opendkim"
    chown opendkim "$T/opendkim"
    # Verify only, no keys. InternalHosts (default 127.0.0.1) would make our loopback client
    # "internal", i.e. mail to sign rather than to verify: list a documentation address instead.
    cat >"$T/opendkim/opendkim.conf" <<EOF
# written by benches/postfix-e2e.sh
Mode                    v
Socket                  inet:$DKIM_PORT@127.0.0.1
UserID                  opendkim
PidFile                 $T/opendkim/opendkim.pid
Syslog                  no
InternalHosts           192.0.2.1
AuthservID              rig.localdomain
AlwaysAddARHeader       $([ "$OPENDKIM_AR" = 1 ] && echo yes || echo no)
SoftwareHeader          no
EOF
    opendkim -f -x "$T/opendkim/opendkim.conf" </dev/null >"$T/opendkim/opendkim.log" 2>&1 &
    PIDS[opendkim]=$!
fi
has_config b && wait_milter helpdesk-tcp "$T/helpdesk-tcp/daemon.log" tcp_listening "$HM_TCP_PORT"
has_config c && wait_milter helpdesk-unix "$T/helpdesk-unix/daemon.log" unix_listening "$HM_SOCKET"
has_config d && wait_milter opendkim "$T/opendkim/opendkim.log" tcp_listening "$DKIM_PORT"

declare -A PROC=([a]="" [b]=helpdesk-tcp [c]=helpdesk-unix [d]=opendkim)
declare -A PROCLOG=(
    [helpdesk-tcp]=$T/helpdesk-tcp/daemon.log
    [helpdesk-unix]=$T/helpdesk-unix/daemon.log
    [opendkim]=$T/opendkim/opendkim.log
)
declare -A MILTER=(
    [a]=""
    [b]="inet:127.0.0.1:$HM_TCP_PORT"
    [c]="unix:$HM_SOCKET"
    [d]="inet:127.0.0.1:$DKIM_PORT"
)

# ---------------------------------------------------------------------------------------------
# Postfix: smtpd on SMTPD_PORT, everything relayed to relayhost (first the dumping sink for the
# smoke check, then the counting sink). No chroot, no syslog, nothing local.

cat >"$ETC/main.cf" <<EOF
# written by benches/postfix-e2e.sh
compatibility_level = 3.6
queue_directory = $T/postfix/spool
data_directory = $T/postfix/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $MAILLOG
maillog_file_prefixes = $T
myhostname = rig.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:$DUMP_SINK_PORT
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_milters =
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
EOF
cat >"$ETC/master.cf" <<EOF
# written by benches/postfix-e2e.sh; chroot "n" everywhere
127.0.0.1:$SMTPD_PORT inet n - n - - smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
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
has_config d && dkim_version=$(opendkim -V 2>&1 | head -1 | sed 's/^opendkim: //')
hm_version=-
[ -n "$HELPDESK_MILTER_BIN" ] && hm_version=$("$HELPDESK_MILTER_BIN" --version 2>&1 | head -1)
git_rev=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo "not a git checkout")
echo "== helpdesk-milter end-to-end benchmark (benches/postfix-e2e.sh)"
echo "date      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine   $(nproc) CPU(s), $cpu; kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "software  Postfix $pf_version; $dkim_version; $hm_version ($git_rev)"
echo "workload  N=$N msgs x ${SESSIONS} sessions and ${LAT_N} msgs x 1 session, ${SIZE}-byte bodies," \
    "$SENDER -> $HELPDESK; $ROUNDS round(s) of: ${CONFIG_LIST[*]}; warm-up $WARMUP msgs per switch"
echo "temp dir  $T"
if [ -n "$RESULTS" ]; then
    {
        printf 'machine\tdate\t%s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')"
        printf 'machine\tnproc\t%s\n' "$(nproc)"
        printf 'machine\tcpu\t%s\n' "$cpu"
        printf 'machine\tkernel\t%s\n' "$(uname -r)"
        printf 'machine\tpostfix\t%s\n' "$pf_version"
        printf 'machine\topendkim\t%s\n' "$dkim_version"
        printf 'machine\thelpdesk_milter\t%s (%s)\n' "$hm_version" "$git_rev"
        printf 'params\tN\t%s\nparams\tsessions\t%s\nparams\tlat_n\t%s\nparams\tsize\t%s\nparams\trounds\t%s\n' \
            "$N" "$SESSIONS" "$LAT_N" "$SIZE" "$ROUNDS"
        for c in "${CONFIG_LIST[@]}"; do printf '%s\tlabel\t%s\n' "$c" "${LABEL[$c]}"; done
    } >>"$RESULTS"
fi

# ---------------------------------------------------------------------------------------------
# One batch: smtp-source, then wait for the sink. Sets B_* globals.

FAILED_RUNS=0
send() {   # send SESSIONS COUNT [smtp-source options...]: returns smtp-source's status
    local s=$1 m=$2
    shift 2
    # -A: do not abort the whole run on one 4xx; the failure is counted below instead.
    smtp-source -A -s "$s" -m "$m" -l "$SIZE" -f "$SENDER" -t "$HELPDESK" "$@" \
        "127.0.0.1:$SMTPD_PORT" </dev/null >>"$T/log/smtp-source.err" 2>&1
}

batch() {   # batch WHAT SESSIONS COUNT
    local what=$1 s=$2 m=$3 off c0 c last_c last_t t0 t1 t2 rc=0 errs0 win problems=""
    off=$(stat -c %s "$MAILLOG")
    errs0=$(wc -l <"$T/log/smtp-source.err")
    c0=$(sink_count "$T/log/sink.out")
    t0=$(now)
    send "$s" "$m" || rc=$?
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
# Smoke check: one message per configuration through the dumping sink; the milters must have done
# their work (helpdesk-milter: X-HelpDesk-Class: support; OpenDKIM: Authentication-Results).

smoke() {   # smoke CONFIG
    local cfg=$1 subject="postfix-e2e smoke $1 $RANDOM$RANDOM" f c0 i
    pf_set "smtpd_milters = ${MILTER[$cfg]}"
    c0=$(sink_count "$T/log/dump-sink.out")
    send 1 1 -S "$subject" || true
    for ((i = 0; i < 400; i++)); do
        [ "$(sink_count "$T/log/dump-sink.out")" -gt "$c0" ] && break
        sleep 0.05
    done
    sleep 0.1
    f=$(grep -rlF "Subject: $subject" "$T/dump" 2>/dev/null | head -1) || true
    if [ -z "$f" ]; then
        tail -n 5 "$T/log/smtp-source.err" >&2 || true
        maillog_tail 15
        die "smoke check ($cfg, ${LABEL[$cfg]}): the message did not reach the sink"
    fi
    case $cfg in
        b | c)
            grep -qi '^X-HelpDesk-Class: support' "$f" || {
                sed 's/^/    /' "$f" | head -40 >&2
                die "smoke check ($cfg, ${LABEL[$cfg]}): no 'X-HelpDesk-Class: support' in the delivered message (above): the benchmark would not measure the triage"
            }
            echo "smoke     $cfg ${LABEL[$cfg]}: $(grep -i '^X-HelpDesk-' "$f" | tr -d '\r' | paste -sd ';' | sed 's/;/; /g')"
            ;;
        d)
            if [ "$OPENDKIM_AR" = 1 ]; then
                grep -qi '^Authentication-Results: rig.localdomain' "$f" || {
                    sed 's/^/    /' "$f" | head -40 >&2
                    die "smoke check (d, OpenDKIM): no Authentication-Results header in the delivered message (above)"
                }
            fi
            echo "smoke     d ${LABEL[d]}: $(tr -d '\r' <"$f" | awk '
                tolower($0) ~ /^authentication-results:/ { p = 1; printf "%s", $0; next }
                p && /^[ \t]/ { sub(/^[ \t]+/, " "); printf "%s", $0; next }
                { p = 0 }')"
            ;;
        a) echo "smoke     a ${LABEL[a]}: delivered" ;;
    esac
}
for cfg in "${CONFIG_LIST[@]}"; do smoke "$cfg"; done
pf_set "relayhost = [127.0.0.1]:$SINK_PORT"
stop_pid dump-sink
echo

# ---------------------------------------------------------------------------------------------
# The rounds.

RAW=$T/raw.tsv   # round, config, metric, value
: >"$RAW"
t_start=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    for cfg in "${CONFIG_LIST[@]}"; do
        proc=${PROC[$cfg]}
        if [ -n "$proc" ] && ! kill -0 "${PIDS[$proc]:-0}" 2>/dev/null; then
            echo "!!!!!!!! $proc (milter of $cfg, ${LABEL[$cfg]}) is not running any more; its log ends with:" >&2
            tail -n 5 "${PROCLOG[$proc]}" | sed 's/^/    /' >&2
        fi
        pf_set "smtpd_milters = ${MILTER[$cfg]}"
        sleep "$SETTLE"
        if [ "$WARMUP" -gt 0 ]; then
            batch "round $r $cfg warm-up" "$SESSIONS" "$WARMUP"
            [ -z "$B_PROBLEMS" ] || say "warm-up of $cfg (${LABEL[$cfg]}) failed: the runs below will likely fail too"
        fi
        mpid=""
        [ -z "$proc" ] || mpid=${PIDS[$proc]:-}
        cpu0=0; [ -n "$mpid" ] && cpu0=$(cpu_ticks "$mpid")
        batch "round $r $cfg ${LABEL[$cfg]}: $SESSIONS sessions x $N" "$SESSIONS" "$N"
        cpu="-"
        [ -n "$mpid" ] && cpu=$(awk -v t=$(($(cpu_ticks "$mpid") - cpu0)) -v hz="$CLK_TCK" -v n="$N" \
            'BEGIN { printf "%.0f", t * 1e6 / hz / n }')
        ingest=$(awk -v n="$N" -v s="$B_INGEST_S" 'BEGIN { printf "%.1f", n / s }')
        e2e=$(awk -v n="$N" -v s="$B_E2E_S" 'BEGIN { printf "%.1f", n / s }')
        tp_problems=$B_PROBLEMS tp_delivered=$B_DELIVERED
        batch "round $r $cfg ${LABEL[$cfg]}: 1 session x $LAT_N" 1 "$LAT_N"
        lat=$(awk -v n="$LAT_N" -v s="$B_INGEST_S" 'BEGIN { printf "%.3f", s * 1000 / n }')
        fails=$(( (N - tp_delivered) + (LAT_N - B_DELIVERED) ))
        [ "$fails" -ge 0 ] || fails=0
        flag=""
        [ -z "$tp_problems$B_PROBLEMS" ] || flag="  !!! FAILED: ${tp_problems:+throughput: $tp_problems }${B_PROBLEMS:+latency: $B_PROBLEMS}"
        printf 'round %d  %s %-30s ingest %7.1f msg/s  e2e %7.1f msg/s  latency %7.3f ms/msg  milter CPU %4s us/msg  (%s/%s + %s/%s delivered)%s\n' \
            "$r" "$cfg" "${LABEL[$cfg]}" "$ingest" "$e2e" "$lat" "$cpu" "$tp_delivered" "$N" "$B_DELIVERED" "$LAT_N" "$flag"
        printf '%s\t%s\t%s\t%s\n' "$r" "$cfg" ingest "$ingest" "$r" "$cfg" e2e "$e2e" "$r" "$cfg" lat "$lat" "$r" "$cfg" cpu "$cpu" \
            "$r" "$cfg" failed "$([ -z "$flag" ] && echo 0 || echo 1)" "$r" "$cfg" lost "$fails" >>"$RAW"
    done
done
elapsed=$((SECONDS - t_start))

# ---------------------------------------------------------------------------------------------
# Summary.

replies=$(sink_count "$T/log/reply-sink.out")
echo
awk -F'\t' -v order="${CONFIG_LIST[*]}" -v results="$RESULTS" -v n="$N" -v s="$SESSIONS" \
    -v latn="$LAT_N" -v la="${LABEL[a]}" -v lb="${LABEL[b]}" -v lc="${LABEL[c]}" -v ld="${LABEL[d]}" '
function median(list,   a, k, i, j, t) {
    k = split(list, a, " ")
    for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    if (k == 0) return ""
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function out(cfg, metric, value) { if (results != "") printf "%s\t%s\t%s\n", cfg, metric, value >> results }
{ v[$1, $2, $3] = $4; if (!($1 in seen)) { seen[$1] = 1; rounds[++nr] = $1 } }
END {
    label["a"] = la; label["b"] = lb; label["c"] = lc; label["d"] = ld
    nc = split(order, cfgs, " ")
    printf "Medians over %d round(s): %d msgs x %d sessions (ingest, end-to-end), %d msgs x 1 session (latency)\n", nr, n, s, latn
    printf "%-3s %-30s %12s %12s %12s %14s %8s\n", "", "config", "ingest msg/s", "e2e msg/s", "ms/msg (s=1)", "milter us/msg", "failed"
    for (i = 1; i <= nc; i++) {
        c = cfgs[i]; li = le = ll = lc = ""; nf = 0; lost = 0
        for (j = 1; j <= nr; j++) {
            r = rounds[j]
            li = li " " v[r, c, "ingest"]; le = le " " v[r, c, "e2e"]; ll = ll " " v[r, c, "lat"]
            if (v[r, c, "cpu"] != "-") lc = lc " " v[r, c, "cpu"]
            nf += v[r, c, "failed"]; lost += v[r, c, "lost"]
            out(c, "round" r "_ingest_msg_s", v[r, c, "ingest"]); out(c, "round" r "_e2e_msg_s", v[r, c, "e2e"])
            out(c, "round" r "_latency_ms", v[r, c, "lat"])
        }
        mi[c] = median(li); me[c] = median(le); ml[c] = median(ll); mc = median(lc)
        failed[c] = nf
        printf "%-3s %-30s %12.1f %12.1f %12.3f %14s %8s\n", c, label[c], mi[c], me[c], ml[c], mc == "" ? "-" : sprintf("%.0f", mc), nf ? nf " run(s)!" : "0"
        if (mc != "") out(c, "milter_cpu_us_per_msg", sprintf("%.0f", mc))
        out(c, "ingest_msg_s", sprintf("%.1f", mi[c])); out(c, "e2e_msg_s", sprintf("%.1f", me[c]))
        out(c, "latency_ms", sprintf("%.3f", ml[c])); out(c, "failed_runs", nf); out(c, "lost_messages", lost)
    }
    has_a = 0
    for (i = 1; i <= nc; i++) if (cfgs[i] == "a") has_a = 1
    if (!has_a) exit
    printf "\nVersus (a) no milter, same round (median of per-round ratios / differences):\n"
    printf "%-3s %-30s %12s %12s %14s\n", "", "config", "ingest ratio", "e2e ratio", "added ms/msg"
    for (i = 1; i <= nc; i++) {
        c = cfgs[i]; if (c == "a") continue
        ri = re = dl = ""
        for (j = 1; j <= nr; j++) {
            r = rounds[j]
            ri = ri " " v[r, c, "ingest"] / v[r, "a", "ingest"]
            re = re " " v[r, c, "e2e"] / v[r, "a", "e2e"]
            dl = dl " " v[r, c, "lat"] - v[r, "a", "lat"]
        }
        qi[c] = median(ri); qe[c] = median(re); ql[c] = median(dl)
        printf "%-3s %-30s %12.3f %12.3f %14.3f\n", c, label[c], qi[c], qe[c], ql[c]
        out(c, "ingest_ratio_to_a", sprintf("%.3f", qi[c])); out(c, "e2e_ratio_to_a", sprintf("%.3f", qe[c]))
        out(c, "latency_added_ms", sprintf("%.3f", ql[c]))
    }
    for (i = 1; i <= nc; i++) {
        c = cfgs[i]; if (c != "b" && c != "c") continue
        if (failed[c] || failed["a"] || (("d" in qe) && failed["d"])) {
            printf "NOTE: failed runs above: the comparisons of %s are not meaningful\n", label[c]; continue
        }
        if (qe[c] < 0.9 || qi[c] < 0.9)
            printf "NOTE: %s is more than 10%% below no milter (ingest x%.3f, e2e x%.3f)\n", label[c], qi[c], qe[c]
        if (("d" in qe) && (qe[c] < qe["d"] || qi[c] < qi["d"]))
            printf "NOTE: %s is slower than OpenDKIM (e2e x%.3f vs x%.3f, ingest x%.3f vs x%.3f)\n", label[c], qe[c], qe["d"], qi[c], qi["d"]
    }
}' "$RAW"
echo
echo "auto-replies received by the reply sink: $replies (one per daemon expected: one sender, interval 7d)"
echo "measured in ${elapsed} s; failed runs: $FAILED_RUNS"
if [ -n "$RESULTS" ]; then
    printf 'summary\tfailed_runs\t%s\nsummary\tseconds\t%s\nsummary\tauto_replies\t%s\n' \
        "$FAILED_RUNS" "$elapsed" "$replies" >>"$RESULTS"
    echo "results written to $RESULTS"
fi
if [ "$FAILED_RUNS" -gt 0 ]; then
    echo "!!!!!!!! $FAILED_RUNS RUN(S) FAILED: not every message arrived, or some were rejected or deferred (see above)" >&2
    exit 1
fi
