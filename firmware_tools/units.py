"""The files a bundle installs with: ``install.sh`` (A/B slots) and the hardened systemd unit.

Layout on the device::

    /opt/edgebus/slot-a, slot-b   two virtual environments; one is live
    /opt/edgebus/current          symlink to the live slot
    /etc/edgebus/agent.toml       the agent configuration (root:edgebus 0640)
    /etc/edgebus/trusted_keys.json  the update-verification keys
    /var/lib/edgebus              the agent's data directory (outbox)
"""

from __future__ import annotations

__all__ = ["DATA_DIR", "SERVICE", "install_script", "systemd_unit"]

SERVICE = "edgebus-agent.service"
DATA_DIR = "/var/lib/edgebus"
_USER = "edgebus"

_INSTALL = r"""#!/bin/sh
# edgebus agent installer, written by `edge-flash bundle` for device __DEVICE__.
# Idempotent: running it again with the same bundle changes nothing. A new bundle
# goes into the inactive A/B slot, and `current` switches only after pip succeeded.
# Installs from the bundled wheels only (no network).
# Environment (for tests and unusual layouts): EDGEBUS_PREFIX, EDGEBUS_ETC, EDGEBUS_DATA,
# EDGEBUS_UNIT_DIR, EDGEBUS_PYTHON, EDGEBUS_SKIP_SYSTEM=1 (no user, chown or systemctl),
# EDGEBUS_NO_START=1 (enable the unit but do not start it, e.g. from firstrun.sh),
# EDGEBUS_NO_BLOCK=1 (start without waiting for readiness, e.g. from cloud-init).
set -eu
BUNDLE_DIR=$(cd "$(dirname "$0")" && pwd)
PREFIX=${EDGEBUS_PREFIX:-/opt/edgebus}
ETC=${EDGEBUS_ETC:-/etc/edgebus}
DATA=${EDGEBUS_DATA:-__DATA__}
UNIT_DIR=${EDGEBUS_UNIT_DIR:-/etc/systemd/system}
PYTHON=${EDGEBUS_PYTHON:-python3}
SKIP_SYSTEM=${EDGEBUS_SKIP_SYSTEM:-0}
NO_START=${EDGEBUS_NO_START:-0}
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
changed=0
if [ -n "$active" ] && [ "$(cat "$PREFIX/$active/BUNDLE_ID" 2>/dev/null || true)" = "$BUNDLE_ID" ]; then
  echo "edgebus: bundle $BUNDLE_ID already installed in $PREFIX/$active"
else
  echo "edgebus: installing bundle $BUNDLE_ID into $PREFIX/$target"
  rm -rf "$PREFIX/$target"
  "$PYTHON" -m venv "$PREFIX/$target"
  "$PREFIX/$target/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$BUNDLE_DIR/wheels" -r "$BUNDLE_DIR/requirements.txt"
  echo "$BUNDLE_ID" > "$PREFIX/$target/BUNDLE_ID"
  ln -sfn "$target" "$PREFIX/current.new"
  mv -Tf "$PREFIX/current.new" "$PREFIX/current"
  changed=1
fi

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
ExecStart=/opt/edgebus/current/bin/edge-agent run --config /etc/edgebus/agent.toml
User=__USER__
Group=__USER__
WatchdogSec=30
Restart=on-failure
RestartSec=5
# Exit code 2 is a configuration error: restarting will not fix it.
RestartPreventExitStatus=2
TimeoutStartSec=90
StateDirectory=edgebus
StateDirectoryMode=0750
ReadWritePaths=__DATA__
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


def _fill(text: str, device: str) -> str:
    return (text.replace("__DEVICE__", device).replace("__USER__", _USER).replace("__DATA__", DATA_DIR)
            .replace("__SERVICE__", SERVICE))


def install_script(device: str) -> str:
    """The idempotent A/B installer (POSIX sh)."""
    return _fill(_INSTALL, device)


def systemd_unit(device: str) -> str:
    """The hardened ``edgebus-agent.service``."""
    return _fill(_UNIT, device)
