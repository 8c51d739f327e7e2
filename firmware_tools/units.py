"""The files a bundle installs with: ``install.sh`` (A/B slots), ``edgebus-slot`` and the systemd unit.

Layout on the device::

    /opt/edgebus/slot-a, slot-b   two virtual environments; one is live
    /opt/edgebus/current          symlink to the live slot
    /opt/edgebus/bin/edgebus-slot the crash-loop guard run before every agent start
    /etc/edgebus/agent.toml       the agent configuration (root:edgebus 0640)
    /etc/edgebus/trusted_keys.json  the update-verification keys
    /var/lib/edgebus              the agent's data directory (outbox, ota/)

Over-the-air updates (``EDGEBUS_OTA=1``): the agent runs the new bundle's
``install.sh``, which fills the inactive slot and stops there; the agent
itself switches ``current``, restarts, and watches the new slot for a health
window. Should the new agent crash before it can judge itself,
``edgebus-slot prestart`` counts the starts of the trial and, at the third,
switches ``current`` back and records ``rolled_back``/``crash_loop``. That is
why the agent user owns ``/opt/edgebus`` and the unit may write there.

Files the agent and ``edgebus-slot`` share in ``{data}/ota/`` (plain text, one value each,
so that a POSIX sh script can read them without a JSON parser):

    trial.json             written by the agent when it switches to a new slot; its presence
                           means "a trial is running"
    trial_previous_slot    the slot to go back to (``slot-a`` / ``slot-b``)
    trial_update_id        the update being tried
    trial_attempts         starts of the trial so far (written by ``edgebus-slot``)
    last_result.json       the outcome the previous agent publishes when it starts again
"""

from __future__ import annotations

__all__ = ["DATA_DIR", "PREFIX", "RESTART_EXIT_CODE", "SERVICE", "SLOT_TOOL", "TRIAL_MAX_STARTS",
           "install_script", "slot_script", "systemd_unit"]

SERVICE = "edgebus-agent.service"
DATA_DIR = "/var/lib/edgebus"
PREFIX = "/opt/edgebus"
SLOT_TOOL = "bin/edgebus-slot"
#: ``edgebus-slot prestart`` switches back when a trial reaches this many starts.
TRIAL_MAX_STARTS = 3
#: The exit code with which the agent asks systemd to start it again (on the other slot).
RESTART_EXIT_CODE = 75
_USER = "edgebus"

_SLOT = r"""#!/bin/sh
# edgebus-slot: the A/B slot guard, written by the edgebus installer.
#   edgebus-slot prestart   (systemd ExecStartPre) count the starts of a trial update; at
#                           __MAX__ switch `current` back to the previous slot and record
#                           {"outcome": "rolled_back", "reason": "crash_loop"}.
#   edgebus-slot status     print the live slot and any trial in progress.
# It must never keep the agent from starting, so it exits 0 whatever happens.
# Environment (for tests): EDGEBUS_PREFIX, EDGEBUS_DATA.
PREFIX=${EDGEBUS_PREFIX:-__PREFIX__}
DATA=${EDGEBUS_DATA:-__DATA__}
OTA="$DATA/ota"
MAX=__MAX__

say() { echo "edgebus-slot: $*" >&2; }

clean() {  # a value from a file, reduced to the characters update ids and slots may hold
  { tr -cd 'A-Za-z0-9_.-' < "$1"; } 2>/dev/null | cut -c1-128
}

from_trial() {  # one string value of trial.json, without a JSON parser
  sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([A-Za-z0-9_.-]*\)\".*/\1/p" "$OTA/trial.json" \
    2>/dev/null | head -n 1
}

switch_to() {
  ln -sfn "$1" "$PREFIX/current.new" && mv -Tf "$PREFIX/current.new" "$PREFIX/current"
}

prestart() {
  [ -f "$OTA/trial.json" ] || return 0
  n=$(clean "$OTA/trial_attempts")
  case "$n" in ''|*[!0-9]*) n=0 ;; esac
  n=$((n + 1))
  echo "$n" > "$OTA/trial_attempts.tmp" && mv -f "$OTA/trial_attempts.tmp" "$OTA/trial_attempts" \
    || say "cannot record the trial's start count in $OTA"
  if [ "$n" -lt "$MAX" ]; then
    say "trial start $n of $MAX on $(readlink "$PREFIX/current" 2>/dev/null || echo '?')"
    return 0
  fi
  previous=$(clean "$OTA/trial_previous_slot")
  update_id=$(clean "$OTA/trial_update_id")
  # The plain-text files are the contract; trial.json's own keys are the fallback.
  if [ -z "$previous" ]; then previous=$(from_trial previous_slot); fi
  if [ -z "$update_id" ]; then update_id=$(from_trial update_id); fi
  case "$previous" in
    slot-a|slot-b) ;;
    *) say "trial failed $n starts but no previous slot is recorded; staying"; return 0 ;;
  esac
  if [ ! -d "$PREFIX/$previous" ]; then
    say "trial failed $n starts but $PREFIX/$previous is missing; staying"
    return 0
  fi
  if ! switch_to "$previous"; then
    say "cannot switch $PREFIX/current back to $previous"
    return 0
  fi
  version=$(from_trial version)
  # An OtaProgress document (schemas/ota.py) that also says "outcome", for the agent to publish.
  printf '{"format": 1, "update_id": "%s", "phase": "rolled_back", "outcome": "rolled_back", %s}\n' \
    "$update_id" "\"reason\": \"crash_loop\", \"version\": \"${version:-unknown}\", \"slot\": \"$previous\", \
\"detail\": \"the new agent failed $n starts in a row; back on $previous\", \"time_ms\": $(date +%s)000" \
    > "$OTA/last_result.json.tmp" && mv -f "$OTA/last_result.json.tmp" "$OTA/last_result.json"
  rm -f "$OTA/trial.json" "$OTA/trial_attempts" "$OTA/trial_previous_slot" "$OTA/trial_update_id"
  say "update $update_id crashed $n starts in a row: rolled back to $previous"
  return 0
}

status() {
  echo "current: $(readlink "$PREFIX/current" 2>/dev/null || echo none)"
  if [ -f "$OTA/trial.json" ]; then
    echo "trial: update $(clean "$OTA/trial_update_id"), start $(clean "$OTA/trial_attempts") of $MAX," \
         "previous $(clean "$OTA/trial_previous_slot")"
  fi
}

case "${1:-}" in
  prestart) prestart ;;
  status) status ;;
  *) echo "usage: edgebus-slot prestart|status" >&2; exit 2 ;;
esac
exit 0
"""

_INSTALL = r"""#!/bin/sh
# edgebus agent installer, written by `edge-flash bundle` for device __DEVICE__.
# Idempotent: running it again with the same bundle changes nothing. A new bundle
# goes into the inactive A/B slot, and `current` switches only after pip succeeded.
# Installs from the bundled wheels only (no network).
# Environment (for tests and unusual layouts): EDGEBUS_PREFIX, EDGEBUS_ETC, EDGEBUS_DATA,
# EDGEBUS_UNIT_DIR, EDGEBUS_PYTHON, EDGEBUS_SKIP_SYSTEM=1 (no user, chown or systemctl),
# EDGEBUS_NO_START=1 (enable the unit but do not start it, e.g. from firstrun.sh),
# EDGEBUS_NO_BLOCK=1 (start without waiting for readiness, e.g. from cloud-init).
# EDGEBUS_OTA=1 (run by the agent for an over-the-air update): install into the inactive
# slot even when it holds this bundle already, and stop there: no switch of `current`,
# nothing in /etc, no users, no systemctl. The last line names the slot:
#   edgebus: installed into slot-b
set -eu
BUNDLE_DIR=$(cd "$(dirname "$0")" && pwd)
PREFIX=${EDGEBUS_PREFIX:-__PREFIX__}
ETC=${EDGEBUS_ETC:-/etc/edgebus}
DATA=${EDGEBUS_DATA:-__DATA__}
UNIT_DIR=${EDGEBUS_UNIT_DIR:-/etc/systemd/system}
PYTHON=${EDGEBUS_PYTHON:-python3}
SKIP_SYSTEM=${EDGEBUS_SKIP_SYSTEM:-0}
NO_START=${EDGEBUS_NO_START:-0}
OTA=${EDGEBUS_OTA:-0}
NO_BLOCK=""
if [ "${EDGEBUS_NO_BLOCK:-0}" = 1 ]; then NO_BLOCK=--no-block; fi
BUNDLE_ID=$(cat "$BUNDLE_DIR/BUNDLE_ID")
USER_NAME=__USER__

mkdir -p "$PREFIX"
active=""
case "$(readlink "$PREFIX/current" 2>/dev/null || true)" in
  slot-a) active=slot-a; target=slot-b ;;
  slot-b) active=slot-b; target=slot-a ;;
  *) target=slot-a ;;
esac

fill_slot() {
  echo "edgebus: installing bundle $BUNDLE_ID into $PREFIX/$target"
  rm -rf "$PREFIX/$target"
  "$PYTHON" -m venv "$PREFIX/$target"
  "$PREFIX/$target/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$BUNDLE_DIR/wheels" -r "$BUNDLE_DIR/requirements.txt"
  if [ -f "$BUNDLE_DIR/VERSION" ]; then cp "$BUNDLE_DIR/VERSION" "$PREFIX/$target/VERSION"; fi
  echo "$BUNDLE_ID" > "$PREFIX/$target/BUNDLE_ID"
}

install_slot_tool() {  # bin/edgebus-slot, replaced atomically and only when it changed
  mkdir -p "$PREFIX/bin"
  cat > "$PREFIX/bin/edgebus-slot.new" <<'EDGEBUS_SLOT_END'
__SLOT__EDGEBUS_SLOT_END
  chmod 0755 "$PREFIX/bin/edgebus-slot.new"
  if cmp -s "$PREFIX/bin/edgebus-slot.new" "$PREFIX/bin/edgebus-slot"; then
    rm -f "$PREFIX/bin/edgebus-slot.new"
  else
    mv -f "$PREFIX/bin/edgebus-slot.new" "$PREFIX/bin/edgebus-slot"
  fi
}

if [ "$OTA" = 1 ]; then
  fill_slot
  # A device flashed before OTA existed gets the guard; an existing one is kept, so that a
  # broken update cannot take away the way back.
  if [ ! -x "$PREFIX/bin/edgebus-slot" ]; then install_slot_tool; fi
  echo "edgebus: installed into $target"
  exit 0
fi

changed=0
if [ -n "$active" ] && [ "$(cat "$PREFIX/$active/BUNDLE_ID" 2>/dev/null || true)" = "$BUNDLE_ID" ]; then
  echo "edgebus: bundle $BUNDLE_ID already installed in $PREFIX/$active"
else
  fill_slot
  ln -sfn "$target" "$PREFIX/current.new"
  mv -Tf "$PREFIX/current.new" "$PREFIX/current"
  changed=1
fi
install_slot_tool

if [ "$SKIP_SYSTEM" != 1 ] && ! id -u "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
  for group in video gpio i2c; do
    if getent group "$group" >/dev/null; then usermod -a -G "$group" "$USER_NAME"; fi
  done
fi
install -d -m 0750 "$ETC" "$DATA"
install -m 0640 "$BUNDLE_DIR/agent.toml" "$ETC/agent.toml"
install -m 0644 "$BUNDLE_DIR/keys/trusted_keys.json" "$ETC/trusted_keys.json"
mkdir -p "$UNIT_DIR"
install -m 0644 "$BUNDLE_DIR/__SERVICE__" "$UNIT_DIR/__SERVICE__"
if [ "$SKIP_SYSTEM" != 1 ]; then
  chown root:"$USER_NAME" "$ETC" "$ETC/agent.toml"
  chown "$USER_NAME":"$USER_NAME" "$DATA"
  # The agent installs updates into the inactive slot and switches `current` itself.
  chown -R "$USER_NAME":"$USER_NAME" "$PREFIX"
  systemctl daemon-reload
  systemctl enable __SERVICE__
  if [ "$NO_START" = 1 ]; then
    :
  elif [ "$changed" = 1 ]; then
    systemctl restart $NO_BLOCK __SERVICE__
  else
    systemctl start $NO_BLOCK __SERVICE__
  fi
fi
echo "edgebus: agent for __DEVICE__ installed ($PREFIX/current -> $(readlink "$PREFIX/current"))"
"""

_UNIT = """\
[Unit]
Description=edgebus agent (device __DEVICE__)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
# Counts the starts of an over-the-air update on trial; rolls back a crash loop.
ExecStartPre=__PREFIX__/bin/edgebus-slot prestart
ExecStart=__PREFIX__/current/bin/edge-agent run --config /etc/edgebus/agent.toml
User=__USER__
Group=__USER__
WatchdogSec=30
Restart=on-failure
RestartSec=5
# Exit code 2 is a configuration error: restarting will not fix it.
RestartPreventExitStatus=2
# Exit code 75: the agent switched slots (an update, or its roll-back) and must start again.
RestartForceExitStatus=__RESTART__
TimeoutStartSec=90
StateDirectory=edgebus
StateDirectoryMode=0750
# The agent installs updates into the inactive slot under __PREFIX__ and switches `current`.
ReadWritePaths=__DATA__ __PREFIX__
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=multi-user.target
"""


def _fill(text: str, device: str = "") -> str:
    return (text.replace("__DEVICE__", device).replace("__USER__", _USER).replace("__DATA__", DATA_DIR)
            .replace("__SERVICE__", SERVICE).replace("__PREFIX__", PREFIX)
            .replace("__MAX__", str(TRIAL_MAX_STARTS)).replace("__RESTART__", str(RESTART_EXIT_CODE)))


def slot_script() -> str:
    """``edgebus-slot`` (POSIX sh): the crash-loop guard systemd runs before each agent start."""
    return _fill(_SLOT)


def install_script(device: str) -> str:
    """The idempotent A/B installer (POSIX sh); it carries ``edgebus-slot`` in a here-document."""
    return _fill(_INSTALL, device).replace("__SLOT__", slot_script())


def systemd_unit(device: str) -> str:
    """The hardened ``edgebus-agent.service``."""
    return _fill(_UNIT, device)
