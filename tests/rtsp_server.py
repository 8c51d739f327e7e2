"""An RTSP camera from Debian packages: ``/usr/bin/python3 tests/rtsp_server.py PORT IMAGE [FPS]``.

Serves ``IMAGE`` (a JPEG file) as a live Motion-JPEG RTP stream at
``rtsp://127.0.0.1:PORT/cam`` with GStreamer's RTSP server, which needs the
system Python with ``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0`` (plus
``gstreamer1.0-plugins-good`` for the JPEG elements), not the project's
virtualenv. Run as its own process so a test can kill it and start it again
on the same port. Exit status 3 means those packages are missing.
"""

import sys

PATH = "/cam"
# Rebuilt for every client; imagefreeze is-live keeps a real camera's pace.
LAUNCH = ("( filesrc location={image} ! jpegdec ! videoconvert ! "
          "imagefreeze is-live=true ! video/x-raw,framerate={fps}/1 ! "
          "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )")


def main(port: int, image: str, fps: int) -> None:
    # Imported here: pytest collects this file (doctests) in a virtualenv without gi.
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(f"rtsp: GStreamer's RTSP server is not available: {exc}", file=sys.stderr)
        sys.exit(3)
    Gst.init(None)
    for element in ("filesrc", "jpegdec", "videoconvert", "imagefreeze", "jpegenc", "rtpjpegpay"):
        if Gst.ElementFactory.find(element) is None:
            print(f"rtsp: GStreamer element {element} is missing "
                  "(apt-get install gstreamer1.0-plugins-base gstreamer1.0-plugins-good)",
                  file=sys.stderr)
            sys.exit(3)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH.format(image=image, fps=fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory(PATH, factory)
    if server.attach(None) == 0:
        print(f"rtsp: cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        sys.exit(2)
    print(f"rtsp: serving rtsp://127.0.0.1:{port}{PATH}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
