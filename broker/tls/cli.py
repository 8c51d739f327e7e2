"""``edge-broker tls ...``: make the project CA, the broker's certificate and the devices' certificates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from broker.cli_support import EXIT_OK
from broker.tls.ca import (
    CA_DAYS,
    CLIENT_DAYS,
    SERVER_DAYS,
    IssuedFiles,
    init_ca,
    issue_client_cert,
    issue_server_cert,
)

__all__ = ["add_tls_parser", "run_tls"]

_CA_DIR_HELP = "the project CA's directory (default ./tls): ca.pem, ca.key, server.*, clients/*"


def add_tls_parser(sub: Any) -> None:
    """Add ``tls init-ca | server-cert | device-cert`` to the ``edge-broker`` subcommands."""
    tls = sub.add_parser(
        "tls", help="project CA and certificates for Mosquitto's TLS listener",
        description="Make a project certificate authority and the certificates for TLS with "
                    "client certificates: 1) init-ca once, 2) server-cert for the broker, "
                    "3) device-cert for every device (its CN is the device id, which the "
                    "generated ACL then uses as the user name), 4) mosquitto-config "
                    "--tls-ca DIR/ca.pem --tls-cert DIR/server.pem --tls-key DIR/server.key "
                    "--client-certs. Private keys are written mode 0600.",
        epilog="Agents: set tls_ca, tls_cert and tls_key in their [broker] section. "
               "Exit codes: 0 ok, 2 bad usage or an existing CA.")
    steps = tls.add_subparsers(dest="tls_command", required=True, metavar="STEP")

    ca = steps.add_parser("init-ca", help="create the project CA (refuses to replace one)",
                          description="Create DIR/ca.pem and DIR/ca.key (EC P-256). An existing "
                                      "CA is kept unless --force: replacing it invalidates every "
                                      "certificate it signed.")
    ca.add_argument("--force", action="store_true", help="replace an existing CA")
    ca.add_argument("--name", default="edgebus project CA", help="the CA's common name")
    ca.add_argument("--days", type=int, default=CA_DAYS, help=f"validity (default {CA_DAYS})")

    server = steps.add_parser("server-cert", help="issue the broker's certificate",
                              description="Write DIR/server.pem and DIR/server.key, valid for "
                                          "every --host (names and IP addresses clients connect "
                                          "to; clients check it).")
    server.add_argument("--host", action="append", required=True, metavar="NAME_OR_IP",
                        help="a name or address of the broker; repeat for more "
                             "(e.g. --host broker.lan --host 192.168.1.10 --host 127.0.0.1)")
    server.add_argument("--days", type=int, default=SERVER_DAYS,
                        help=f"validity (default {SERVER_DAYS})")

    device = steps.add_parser("device-cert", help="issue a device's client certificate",
                              description="Write DIR/clients/DEVICE.pem and .key with CN=DEVICE. "
                                          "On the client-certificate listener the CN is the MQTT "
                                          "user: a device gets its own lanes; a coordinator user "
                                          "name gets that coordinator's rights.")
    device.add_argument("device", metavar="DEVICE", help="device id (or coordinator user name)")
    device.add_argument("--days", type=int, default=CLIENT_DAYS,
                        help=f"validity (default {CLIENT_DAYS})")

    for step in (ca, server, device):
        step.add_argument("--dir", type=Path, default=Path("tls"), help=_CA_DIR_HELP)
        step.add_argument("--json", action="store_true", help="print the written files as JSON")


def run_tls(args: argparse.Namespace) -> int:
    """Run one ``edge-broker tls`` step; ConfigError (exit 2) names what is wrong."""
    directory: Path = args.dir.resolve()
    files: IssuedFiles
    if args.tls_command == "init-ca":
        files = init_ca(directory, common_name=args.name, days=args.days, force=args.force)
    elif args.tls_command == "server-cert":
        files = issue_server_cert(directory, args.host, days=args.days)
    else:
        files = issue_client_cert(directory, args.device, days=args.days)
    if args.json:
        print(json.dumps({"cert": str(files.cert), "key": str(files.key)}))
    else:
        print(f"wrote {files.cert} and {files.key} (0600)")
    return EXIT_OK
