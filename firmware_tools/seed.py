"""What goes onto the boot partition: cloud-init or firstrun.sh, and the agent's first boot.

Detection (:func:`choose_mode`): a Raspberry Pi OS boot partition always has
``cmdline.txt``. Images that boot with cloud-init (Raspberry Pi OS from the
2025 "trixie" releases on) ship ``user-data``, ``meta-data`` or
``network-config`` in the boot partition, or name the NoCloud data source
(``ds=nocloud``) on the kernel command line; those get cloud-init files. Any
other Raspberry Pi OS image gets ``firstrun.sh`` and the one-line
``cmdline.txt`` patch Raspberry Pi Imager uses, run once by systemd before the
normal boot. Either way the bundle is copied to ``edgebus/bundle`` and
``edgebus/firstboot.sh`` installs it, then deletes the seed (it holds broker
credentials, and FAT has no permissions).

Jetson: L4T images are GPT with an ext4 root file system and no FAT seed
partition, so ``edge-flash image`` refuses them. Seed a Jetson from the L4T
BSP instead: ``sudo tools/l4t_create_default_user.sh -u USER -p PASSWORD -n
HOSTNAME --accept-license`` in ``Linux_for_Tegra`` (skips the oem-config
wizard), copy the bundle into ``rootfs/opt/edgebus/seed/``, then flash
(``sudo ./flash.sh`` or ``l4t_initrd_flash.sh``) and run
``sudo sh /opt/edgebus/seed/install.sh`` on first login or from a one-shot unit.
"""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass, field

from schemas.errors import ConfigError

__all__ = ["CMDLINE_PATCH", "CLOUD_INIT_FILES", "SEED_DIR", "SeedOptions", "choose_mode", "cloud_init_files",
           "firstboot_script", "firstrun_script", "patch_cmdline"]

SEED_DIR = "edgebus"
CMDLINE_PATCH = ("systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
                 "systemd.unit=kernel-command-line.target")
CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config")


@dataclass(frozen=True, slots=True)
class SeedOptions:
    device: str
    hostname: str | None = None
    user: str | None = None
    password_hash: str | None = None
    ssh_keys: tuple[str, ...] = field(default_factory=tuple)
    wifi_ssid: str | None = None
    wifi_psk: str | None = None
    wifi_country: str = "GB"

    def check(self) -> None:
        if self.password_hash is not None and not self.password_hash.startswith("$"):
            raise ConfigError("--password-hash must be a crypt(3) hash such as $6$... or $y$... "
                              "(make one with: openssl passwd -6), not a plain password")
        if (self.password_hash or self.ssh_keys) and not self.user:
            raise ConfigError("--password-hash and --ssh-key need --user")
        if self.wifi_psk is not None and not self.wifi_ssid:
            raise ConfigError("--wifi-psk needs --wifi-ssid")
        if self.wifi_psk is not None and not 8 <= len(self.wifi_psk) <= 63:
            raise ConfigError("--wifi-psk must be 8-63 characters (WPA2)")
        if len(self.wifi_country) != 2 or not self.wifi_country.isalpha():
            raise ConfigError(f"--wifi-country must be a two-letter country code, not {self.wifi_country!r}")


def choose_mode(present: set[str], cmdline: str | None) -> str:
    """``cloud-init`` or ``firstrun`` for a boot partition holding ``present`` files."""
    if cmdline is None:
        raise ConfigError("the boot partition has no cmdline.txt: not a Raspberry Pi OS image")
    if present & set(CLOUD_INIT_FILES) or "ds=nocloud" in cmdline:
        return "cloud-init"
    return "firstrun"


def patch_cmdline(cmdline: str) -> str:
    """``cmdline.txt`` with the firstrun arguments appended once, kept on one line."""
    line = " ".join(cmdline.split())
    if CMDLINE_PATCH in line:
        return line + "\n"
    if "systemd.run=" in line:
        raise ConfigError("cmdline.txt already runs another systemd.run= script; remove it first")
    return f"{line} {CMDLINE_PATCH}\n"


def _y(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def firstboot_script() -> str:
    """Copies the bundle off the FAT partition, installs it, and deletes the seed."""
    return f"""#!/bin/sh
# edgebus first boot, written by `edge-flash image`: install the seeded agent bundle.
set -eu
SEED=$(cd "$(dirname "$0")" && pwd)
BUNDLE_ID=$(cat "$SEED/bundle/BUNDLE_ID")
DEST=/opt/edgebus/bundles/$BUNDLE_ID
mkdir -p /opt/edgebus/bundles
rm -rf "$DEST.tmp"
cp -r "$SEED/bundle" "$DEST.tmp"
chmod 0600 "$DEST.tmp/agent.toml"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
sh "$DEST/install.sh"
rm -rf "$SEED"   # the seed holds broker credentials; FAT has no permissions
echo "edgebus: first boot done ({SEED_DIR} seed removed)"
"""


def cloud_init_files(opts: SeedOptions) -> dict[str, str]:
    """``user-data``, ``meta-data`` (fresh instance-id) and ``network-config``."""
    hostname = opts.hostname or opts.device
    user = ["#cloud-config", "# written by `edge-flash image`", f"hostname: {_y(hostname)}",
            "manage_etc_hosts: true"]
    if opts.user:
        user += ["users:", f"  - name: {_y(opts.user)}",
                 "    groups: [users, adm, dialout, audio, netdev, video, plugdev, sudo, gpio, i2c]",
                 "    shell: /bin/bash", "    sudo: \"ALL=(ALL) NOPASSWD:ALL\""]
        if opts.password_hash:
            user += ["    lock_passwd: false", f"    passwd: {_y(opts.password_hash)}"]
        if opts.ssh_keys:
            user += ["    ssh_authorized_keys:", *(f"      - {_y(k)}" for k in opts.ssh_keys)]
    user += ["enable_ssh: true", f"ssh_pwauth: {'false' if opts.ssh_keys else 'true'}",
             "runcmd:",
             "  - [sh, -c, 'for b in /boot/firmware /boot; do if [ -f \"$b/edgebus/firstboot.sh\" ]; "
             "then EDGEBUS_NO_BLOCK=1 exec sh \"$b/edgebus/firstboot.sh\"; fi; done']"]
    meta = f"instance-id: {_y('edgebus-' + opts.device + '-' + uuid.uuid4().hex)}\n" \
           f"local-hostname: {_y(hostname)}\n"
    net = ["network:", "  version: 2", "  ethernets:", "    eth0:", "      dhcp4: true",
           "      optional: true"]
    if opts.wifi_ssid:
        net += ["  wifis:", "    wlan0:", "      dhcp4: true", "      optional: true",
                f"      regulatory-domain: {_y(opts.wifi_country)}", "      access-points:",
                f"        {_y(opts.wifi_ssid)}:"]
        net += [f"          password: {_y(opts.wifi_psk)}"] if opts.wifi_psk else ["          {}"]
    return {"user-data": "\n".join(user) + "\n", "meta-data": meta, "network-config": "\n".join(net) + "\n"}


def firstrun_script(opts: SeedOptions) -> str:
    """The one-shot script ``cmdline.txt`` runs on older images, modelled on Raspberry Pi Imager's."""
    q = shlex.quote
    hostname = opts.hostname or opts.device
    lines = ["#!/bin/bash", "# edgebus first run, written by `edge-flash image`; removes itself.", "set +e",
             'BOOT=$(dirname "$(readlink -f "$0")")', "CUSTOM=/usr/lib/raspberrypi-sys-mods/imager_custom",
             f"NEW_HOSTNAME={q(hostname)}",
             'CURRENT=$(tr -d " \\t\\n\\r" < /etc/hostname)',
             'if [ -x "$CUSTOM" ]; then "$CUSTOM" set_hostname "$NEW_HOSTNAME"; else',
             '  echo "$NEW_HOSTNAME" > /etc/hostname',
             '  sed -i "s/127.0.1.1.*$CURRENT/127.0.1.1\\t$NEW_HOSTNAME/g" /etc/hosts', "fi"]
    if opts.user:
        lines += [f"NEW_USER={q(opts.user)}", f"PW_HASH={q(opts.password_hash or '')}",
                  "FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)",
                  "USERCONF=/usr/lib/userconf-pi/userconf",
                  '# userconf (Bullseye 2022+) renames the first user, sets the password, skips the wizard',
                  'if [ -n "$PW_HASH" ] && [ -x "$USERCONF" ]; then "$USERCONF" "$NEW_USER" "$PW_HASH"; else',
                  '  if [ -z "$FIRSTUSER" ]; then useradd -m -u 1000 -G sudo,video,gpio,i2c "$NEW_USER";',
                  '  elif [ "$FIRSTUSER" != "$NEW_USER" ]; then',
                  '    usermod -l "$NEW_USER" -d "/home/$NEW_USER" -m "$FIRSTUSER"',
                  '    groupmod -n "$NEW_USER" "$FIRSTUSER"; fi',
                  '  if [ -n "$PW_HASH" ]; then echo "$NEW_USER:$PW_HASH" | chpasswd -e; fi', "fi"]
        if opts.ssh_keys:
            keys = " ".join(q(k) for k in opts.ssh_keys)
            lines += ['install -d -m 700 -o "$NEW_USER" -g "$NEW_USER" "/home/$NEW_USER/.ssh"',
                      f"printf '%s\\n' {keys} > \"/home/$NEW_USER/.ssh/authorized_keys\"",
                      'chown "$NEW_USER:$NEW_USER" "/home/$NEW_USER/.ssh/authorized_keys"',
                      'chmod 600 "/home/$NEW_USER/.ssh/authorized_keys"',
                      "sed -i 's/^#*PasswordAuthentication.*/PasswordAuthentication no/' "
                      "/etc/ssh/sshd_config"]
        lines += ["systemctl enable ssh", "rm -f /etc/ssh/sshd_config.d/rename_user.conf"]
    if opts.wifi_ssid:
        ssid, psk, country = q(opts.wifi_ssid), q(opts.wifi_psk or ""), q(opts.wifi_country)
        lines += [f'if [ -x "$CUSTOM" ]; then "$CUSTOM" set_wlan {ssid} {psk} {country}; else',
                  "  cat > /etc/wpa_supplicant/wpa_supplicant.conf <<'WPAEOF'",
                  f"country={opts.wifi_country}", "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev",
                  "network={", f"  ssid={json.dumps(opts.wifi_ssid)}",
                  f"  psk={json.dumps(opts.wifi_psk)}" if opts.wifi_psk else "  key_mgmt=NONE", "}",
                  "WPAEOF", "  chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf",
                  "  rfkill unblock wifi", "fi"]
    lines += [f'EDGEBUS_NO_START=1 sh "$BOOT/{SEED_DIR}/firstboot.sh"',
              'rm -f "$BOOT/firstrun.sh"',
              "sed -i 's| systemd.run.*||g' \"$BOOT/cmdline.txt\"", "exit 0"]
    return "\n".join(lines) + "\n"
