"""An MJPEG-over-HTTP camera in a few lines: ``python tests/mjpeg_server.py PORT IMAGE [FPS]``.

Serves ``IMAGE`` (a JPEG file) as ``multipart/x-mixed-replace`` on any path,
as IP cameras and ``motion`` do, ``FPS`` times a second to every client. Run as
its own process so a test can kill it (SIGKILL: the stream stops mid-frame)
and start it again on the same port.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOUNDARY = "edgebusframe"


def main(port: int, image: Path, fps: float) -> None:
    jpeg = image.read_bytes()
    part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            .encode() + jpeg + b"\r\n")

    class Stream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(part)
                    self.wfile.flush()
                    time.sleep(1 / fps)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per client is noise in a test log

    ThreadingHTTPServer.daemon_threads = True
    with ThreadingHTTPServer(("127.0.0.1", port), Stream) as server:
        print(f"mjpeg: serving {image.name} on http://127.0.0.1:{port}/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 10.0)
