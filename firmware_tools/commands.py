"""`edge-flash` commands (needs the flash extra: pyfatfs, cryptography); see cli.py for the entry point.

Exit codes: 0 ok, 1 failure (including a bundle that fails verification), 2 usage
or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from broker.cli_support import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run_tool, setup_logging
from firmware_tools.agent_config import parse_broker_url
from firmware_tools.bundle import PYTHON_VERSION, TARGETS, BundleRequest, build_bundle
from firmware_tools.image import DEVICE_COLUMNS, seed_device_list, seed_image
from firmware_tools.keys import init_keys, load_trusted, rotate_keys
from firmware_tools.manifest import BundleInvalid, verify_bundle
from firmware_tools.seed import SeedOptions
from schemas.errors import ConfigError

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

exit codes: 0 ok, 1 failure (I/O, verification), 2 usage or configuration error
"""


def _keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create or rotate the Ed25519 signing key",
                          description="Manage the Ed25519 key that signs bundles and updates. "
                          "trusted_keys.json lists every public key agents accept; "
                          "a rotated-out key stays there marked superseded.")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="{init,rotate}")
    for name, text in (("init", "create a key pair (signing.key is mode 0600)"),
                       ("rotate", "replace the signing key; keep the old public key as superseded")):
        p = ksub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", type=Path, default=Path("keys"), help="keys directory (default: keys)")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-flash", formatter_class=_RAW, epilog=EXAMPLES,
                                     description="Build signed agent bundles and seed boot images. "
                                     "(Over-the-air updates are not implemented yet.)")
    parser.add_argument("--log-level", default="info", help="debug, info, warning (default: info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{keys,bundle,verify,image}")
    _keys_parser(sub)
    _bundle_parser(sub)
    v = sub.add_parser("verify", help="check a bundle's signature and every file's hash",
                       description="Check the manifest signature against the trusted keys, then every "
                       "file's size and SHA-256; report the first mismatch. Exit 1 when it fails.")
    v.add_argument("bundle", type=Path)
    v.add_argument("--keys", type=Path, required=True, help="keys directory or trusted_keys.json")
    _image_parser(sub)
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
