"""`edge-flash` commands (needs the flash extra: pyfatfs, cryptography); see cli.py for the entry point.

Exit codes: 0 ok, 1 failure (including a bundle that fails verification), 2 usage
or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from broker.cli_support import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run_tool, setup_logging
from firmware_tools.agent_config import parse_broker_url
from firmware_tools.bundle import PYTHON_VERSION, TARGETS, BundleRequest, build_bundle
from firmware_tools.image import DEVICE_COLUMNS, seed_device_list, seed_image
from firmware_tools.keys import init_keys, load_trusted, revoke_key, rotate_keys
from firmware_tools.manifest import verify_bundle
from firmware_tools.ota.publish import PublishRequest, parse_fraction, publish
from firmware_tools.seed import SeedOptions
from protocols.ota.rollout import RolloutPolicy
from schemas.errors import BundleInvalid, ConfigError
from schemas.ota import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, UPDATE_KINDS

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

_RAW = argparse.RawDescriptionHelpFormatter

EXAMPLES = """\
examples:
  edge-flash keys init --dir keys
  pip wheel --no-deps . -w wheels && pip download -d wheels paho-mqtt msgpack zstandard psutil \\
      --platform manylinux2014_aarch64 --python-version 3.11 --only-binary=:all:
  edge-flash bundle --target pi-arm64 --device cam-1 --broker mqtt://broker.local \\
      --username cam-1 --password secret --wheels wheels --keys keys --out bundles/cam-1
  edge-flash verify bundles/cam-1 --keys keys
  edge-flash image --image raspios.img --bundle bundles/cam-1 --device cam-1 --hostname cam-1 \\
      --user pi --password-hash "$(openssl passwd -6)" --ssh-key ~/.ssh/id_ed25519.pub
  edge-flash image --image raspios.img --device-list devices.csv --bundle 'bundles/{device}' --out images
  edge-flash keys rotate --dir keys
  edge-flash ota publish bundles/agent-2.0 --kind agent --version 2.0 --to lobby \
      --keys keys --broker mqtt://ops:secret@broker.local --canary 10% --max-failures 0%

exit codes: 0 ok, 1 failure (I/O, verification), 2 usage or configuration error
"""


def _keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create or rotate the Ed25519 signing key",
                          description="Manage the Ed25519 key that signs bundles and updates. "
                          "trusted_keys.json lists every public key agents accept; "
                          "a rotated-out key stays there marked superseded.")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="{init,rotate,revoke}")
    for name, text in (("init", "create a key pair (signing.key is mode 0600)"),
                       ("rotate", "replace the signing key; keep the old public key as superseded"),
                       ("revoke", "mark a (rotated-out) key revoked: agents refuse what it signed, even "
                                  "with a valid signature; deliver trusted_keys.json as a keys update")):
        p = ksub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", type=Path, default=Path("keys"), help="keys directory (default: keys)")
        if name == "revoke":
            p.add_argument("key_id", metavar="KEY_ID", help="the key to revoke (its id)")
            p.add_argument("--reason", default="compromised", help="why (kept in the list)")


def _bundle_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bundle", help="build an offline, signed agent bundle for one device",
                       formatter_class=_RAW,
                       description="Build an offline agent bundle: wheels for the target, agent.toml, "
                       "trusted keys, install.sh (A/B slots) and a hardened systemd unit, listed in a "
                       "signed manifest.",
                       epilog="example:\n  edge-flash bundle --target pi-arm64 --device cam-1 "
                       "--broker mqtts://broker.example:8883 --username cam-1 --password s3cret "
                       "--wheels wheels --out bundles/cam-1")
    p.add_argument("--target", required=True, choices=sorted(TARGETS))
    p.add_argument("--device", required=True, help="the device id on the bus")
    p.add_argument("--broker", required=True, help="mqtt://host[:port] or mqtts://host[:port]")
    p.add_argument("--username")
    p.add_argument("--password")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wheels", type=Path, help="a directory of wheels (must include edgebus's own)")
    src.add_argument("--download", action="store_true",
                     help="pip download the wheels for the target platform (needs network)")
    p.add_argument("--python-version", default=PYTHON_VERSION,
                   help=f"the device's Python for --download (default {PYTHON_VERSION}; Raspberry Pi OS "
                   "trixie: 3.13, Jetson L4T r36: 3.10)")
    p.add_argument("--source", type=Path, help="edgebus source tree to build its wheel from (--download)")
    p.add_argument("--keys", type=Path, default=Path("keys"), help="keys directory (default: keys)")
    p.add_argument("--out", type=Path, required=True, help="output directory (empty or absent)")


def _image_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help="seed a Raspberry Pi OS image's boot partition for first boot",
                       formatter_class=_RAW,
                       description="Write the first-boot seed into the image's FAT boot partition, "
                       "without root and without mounting: cloud-init files on images that use "
                       "cloud-init, else firstrun.sh plus a cmdline.txt patch; the bundle is installed "
                       "and started on first boot. GPT images (Jetson) are refused: see "
                       "`pydoc firmware_tools.seed` for the l4t_create_default_user.sh path.",
                       epilog=f"--device-list CSV columns: {','.join(DEVICE_COLUMNS)} (only device is "
                       "required;\nothers override the flags). One seeded copy OUT/<device>.img per row.")
    p.add_argument("--image", type=Path, required=True, help="the image file, edited in place")
    p.add_argument("--bundle", required=True,
                   help="the device's bundle directory (with --device-list may contain {device})")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", help="device id (must match the bundle)")
    who.add_argument("--device-list", type=Path, help="CSV of devices; writes OUT/<device>.img each")
    p.add_argument("--out", type=Path, help="output directory for --device-list")
    p.add_argument("--mode", choices=("auto", "cloud-init", "firstrun"), default="auto",
                   help="seed style (default: detect from the boot partition)")
    p.add_argument("--hostname")
    p.add_argument("--user")
    p.add_argument("--password-hash", help="crypt(3) hash, e.g. from `openssl passwd -6`")
    p.add_argument("--ssh-key", type=Path, action="append", default=[], help="public key file (repeatable)")
    p.add_argument("--wifi-ssid")
    p.add_argument("--wifi-psk")
    p.add_argument("--wifi-country", default="GB", help="two-letter regulatory domain (default: GB)")


OTA_EPILOG = """\
examples:
  # a new agent to the "lobby" group: 10% canary first, halt at the first failure
  edge-flash ota publish bundles/agent-2.0 --kind agent --version 2.0 --to lobby \\
      --keys keys --broker mqtts://broker.example:8883 --username ops --password s3cret
  # a detection model to two cameras, both at once
  edge-flash ota publish person.onnx --kind model --version 2024-06 --devices cam-1,cam-2 \\
      --keys keys --broker mqtt://broker.local --canary 100%
  # a rotated trusted_keys.json to every device that supports updates
  edge-flash ota publish keys/trusted_keys.json --kind keys --version rot-2 --to all \\
      --keys keys --broker mqtt://broker.local --canary 5% --max-failures 10% --parallel 16

ARTIFACT is a bundle directory (verified against --keys, then sent as a reproducible
tar.gz; its install.sh runs on the device with EDGEBUS_OTA=1) or a single file.
Devices are found from their retained births (group membership and the "ota"
capability), or named with --devices. A device that reports nothing for --timeout
seconds counts as failed. Progress: one line per device on a terminal, log lines
otherwise; a summary at the end with the bytes sent per device.

exit codes: 0 every targeted device committed; 1 any failed, timed out, was not
offered (halted rollout) or the broker was unreachable; 2 usage or configuration error
"""


def _positive(kind: type[int] | type[float], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, not {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be positive, not {text!r}")
        return value
    return parse


def _ota_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ota = sub.add_parser("ota", help="over-the-air updates over MQTT",
                         description="Over-the-air updates: signed manifests, chunked transfer "
                         "the devices pull at their own pace, staged rollouts with a canary.")
    osub = ota.add_subparsers(dest="ota_command", required=True, metavar="{publish}")
    p = osub.add_parser("publish", help="sign an artifact and roll it out to devices",
                        formatter_class=_RAW, epilog=OTA_EPILOG,
                        description="Sign ARTIFACT's manifest with the current key of --keys, offer it "
                        "to the devices in stages (canary, then the rest), serve their chunk requests "
                        "and follow each device until it commits, rolls back or times out.")
    p.add_argument("artifact", type=Path, metavar="ARTIFACT", help="bundle directory or file")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--to", dest="group", metavar="GROUP",
                     help='devices whose birth lists GROUP ([device] groups); "all": every device')
    who.add_argument("--devices", help="comma-separated device ids (the first ones form the canary)")
    p.add_argument("--kind", required=True, choices=UPDATE_KINDS,
                   help="agent (bundle directory), model (an .onnx file) or keys (trusted_keys.json)")
    p.add_argument("--version", required=True, help="the version the devices report once updated")
    p.add_argument("--keys", type=Path, default=Path("keys"), help="keys directory (default: keys)")
    p.add_argument("--broker", required=True, help="mqtt://[user:pass@]host[:port] or mqtts://...")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--ca", type=Path, help="CA file for mqtts:// (default: the system's)")
    p.add_argument("--root", default="edgebus", help="topic root (default: edgebus)")
    p.add_argument("--canary", default="10%",
                   help="share of the devices updated first; 100%% means one stage (default: 10%%)")
    p.add_argument("--max-failures", default="0%",
                   help="halt when a stage's failures exceed this share (default: 0%%, any failure halts)")
    p.add_argument("--parallel", type=_positive(int, "--parallel"), default=4,
                   help="devices updating at once (default: 4)")
    p.add_argument("--chunk-size", type=_positive(int, "--chunk-size"), default=DEFAULT_CHUNK_SIZE,
                   help=f"bytes per chunk, {MIN_CHUNK_SIZE}-{MAX_CHUNK_SIZE} (default: {DEFAULT_CHUNK_SIZE})")
    p.add_argument("--timeout", type=_positive(float, "--timeout"), default=900.0,
                   help="seconds without a word from a device before it counts as failed (default: 900)")
    p.add_argument("--health-window", type=_positive(float, "--health-window"), default=60.0,
                   help="seconds a device watches a new agent before it commits (default: 60)")
    p.add_argument("--settle", type=_positive(float, "--settle"), default=3.0,
                   help="seconds to collect retained births for --to (default: 3)")


def _ota(args: argparse.Namespace) -> int:
    devices = tuple(d.strip() for d in (args.devices or "").split(",") if d.strip())
    if args.devices is not None and not devices:
        raise ConfigError("--devices lists no device")
    policy = RolloutPolicy(canary_fraction=parse_fraction(args.canary, "--canary", zero_ok=False),
                           max_failure_fraction=parse_fraction(args.max_failures, "--max-failures",
                                                               zero_ok=True),
                           parallel=int(args.parallel))
    req = PublishRequest(artifact=args.artifact, kind=args.kind, version=args.version, keys_dir=args.keys,
                         broker=parse_broker_url(args.broker, args.username, args.password),
                         group=args.group, devices=devices, policy=policy, chunk_size=int(args.chunk_size),
                         timeout=float(args.timeout), health_window=float(args.health_window),
                         root=args.root, settle=float(args.settle), tls_ca=args.ca)
    code, _ = publish(req)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-flash", formatter_class=_RAW, epilog=EXAMPLES,
                                     description="Build signed agent bundles, seed boot images and "
                                     "roll out over-the-air updates.")
    parser.add_argument("--log-level", default="info", help="debug, info, warning (default: info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{keys,bundle,verify,image,ota}")
    _keys_parser(sub)
    _bundle_parser(sub)
    v = sub.add_parser("verify", help="check a bundle's signature and every file's hash",
                       description="Check the manifest signature against the trusted keys, then every "
                       "file's size and SHA-256; report the first mismatch. Exit 1 when it fails.")
    v.add_argument("bundle", type=Path)
    v.add_argument("--keys", type=Path, required=True, help="keys directory or trusted_keys.json")
    _image_parser(sub)
    _ota_parser(sub)
    return parser


def _ssh_keys(paths: Sequence[Path]) -> tuple[str, ...]:
    keys = []
    for path in paths:
        try:
            keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ConfigError(f"cannot read --ssh-key {path}: {exc}") from exc
    return tuple(keys)


def _image(args: argparse.Namespace) -> int:
    base = SeedOptions(device=args.device or "", hostname=args.hostname, user=args.user,
                       password_hash=args.password_hash, ssh_keys=_ssh_keys(args.ssh_key),
                       wifi_ssid=args.wifi_ssid, wifi_psk=args.wifi_psk, wifi_country=args.wifi_country)
    if args.device_list is not None:
        if args.out is None:
            raise ConfigError("--device-list needs --out DIR")
        results = seed_device_list(args.device_list, args.image, args.bundle, base, args.out, args.mode)
    else:
        results = [seed_image(args.image, Path(args.bundle), base, args.mode)]
    for r in results:
        print(f"{r.image}: {r.mode} seed ({', '.join(r.files)})")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    manifest = verify_bundle(args.bundle, load_trusted(args.keys))
    print(f"{args.bundle}: OK ({len(manifest['files'])} files, device {manifest.get('device')}, "
          f"bundle {manifest.get('bundle_id')})")
    return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keys":
        if args.keys_command == "init":
            print(f"created key {init_keys(args.dir)} in {args.dir}")
        elif args.keys_command == "revoke":
            revoke_key(args.dir, args.key_id, args.reason)
            print(f"revoked {args.key_id}; deliver {args.dir}/trusted_keys.json to agents: edge-flash ota "
                  f"publish {args.dir}/trusted_keys.json --kind keys ...")
        else:
            old, new = rotate_keys(args.dir)
            print(f"rotated {old} -> {new}; distribute {args.dir}/trusted_keys.json to agents")
        return EXIT_OK
    if args.command == "bundle":
        req = BundleRequest(target=args.target, device=args.device, keys_dir=args.keys, out=args.out,
                            broker=parse_broker_url(args.broker, args.username, args.password),
                            wheels=args.wheels, download=args.download, source=args.source,
                            python_version=args.python_version)
        print(f"bundle written to {build_bundle(req)}")
        return EXIT_OK
    if args.command == "verify":
        return _verify(args)
    if args.command == "ota":
        return _ota(args)
    return _image(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    setup_logging(args.log_level)
    return run_tool("edge-flash", lambda: _checked(args))


def _checked(args: argparse.Namespace) -> int:
    """A bundle that fails verification is a failure (1), not a usage error."""
    try:
        return _dispatch(args)
    except BundleInvalid as exc:
        print(f"edge-flash: verification FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
