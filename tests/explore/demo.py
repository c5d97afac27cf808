"""A small image that shows every kind of change: a base, a package install that empties a cache
directory (opaque) and deletes a file (whiteout), an app copied in, and a step that replaces files."""

from __future__ import annotations

from pathlib import Path

from conformance.ref.layout import Layout
from conformance.ref.oci import History
from tests.ref.trees import Entry, directory, file, hardlink, make_tar, symlink, whiteout

BASE = (directory("bin"), file("bin/busybox", b"\x7fELF busybox" * 40, mode=0o755), symlink("bin/sh", "busybox"),
        hardlink("bin/ls", "bin/busybox"), directory("etc"), file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        file("etc/group", b"root:x:0:\n"), file("etc/hostname", b"base\n"), file("etc/motd", b"Welcome!\n"),
        file("etc/os-release", b"NAME=demo\n"), directory("lib"), file("lib/libc.so.6", b"libc" * 300, mode=0o755),
        directory("tmp", mode=0o1777), directory("usr"), directory("usr/share"), directory("usr/share/doc"),
        file("usr/share/doc/README", b"docs\n"), directory("var"), directory("var/cache"),
        directory("var/cache/apt"), file("var/cache/apt/pkgcache.bin", b"p" * 2000),
        file("var/cache/apt/srcpkgcache.bin", b"s" * 2000))
INSTALL = (directory("etc"), whiteout("etc/.wh.motd"), directory("etc/ssl"),
           file("etc/ssl/ca-certificates.crt", b"-----BEGIN CERTIFICATE-----\n" * 20), directory("usr"),
           directory("usr/bin"), file("usr/bin/curl", b"\x7fELF curl" * 100, mode=0o755), directory("usr/lib"),
           file("usr/lib/libcurl.so.4", b"libcurl" * 200, mode=0o755), directory("var/cache/apt"),
           file("var/cache/apt/.wh..wh..opq"), file("var/cache/apt/lists.lock", b""))
APP = (directory("app"), file("app/server.py", b"print('hello')\n"), file("app/config.yaml", b"port: 8080\n"),
       directory("app/static"), file("app/static/index.html", b"<h1>hi</h1>\n"))
USERS = (directory("etc"), file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
         file("etc/group", b"root:x:0:\napp:x:1000:\n"), directory("home"), directory("home/app", uid=1000, gid=1000),
         file("home/app/.profile", b"export PS1='$ '\n", uid=1000, gid=1000), directory("usr/share/doc"),
         whiteout("usr/share/doc/.wh.README"))

LAYERS: tuple[tuple[Entry, ...], ...] = (BASE, INSTALL, APP, USERS)
HISTORY = (History("ADD rootfs.tar /", created="2024-05-01T10:00:00Z"),
           History("RUN apt-get install -y curl && rm -rf /var/cache/apt/* && rm /etc/motd"),
           History("ENV PATH=/usr/bin:/bin", empty_layer=True),
           History("WORKDIR /app", empty_layer=True),
           History("COPY app/ /app/"),
           History("RUN adduser -D app && rm /usr/share/doc/README"),
           History("USER app", empty_layer=True),
           History('CMD ["python3", "server.py"]', empty_layer=True))
CONFIG = {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["python3", "server.py"], "WorkingDir": "/app", "User": "app",
          "Labels": {"org.opencontainers.image.title": "demo"}}


def build_demo(where: Path, *, tag: str = "demo") -> Layout:
    """The demo image in a new layout at `where`; the base layer gzipped, the rest plain tars."""
    layout = Layout.create(where)
    layers = [layout.add_layer(make_tar(*entries), compress=n == 0) for n, entries in enumerate(LAYERS)]
    layout.add_image(tag, layers, history=HISTORY, config=CONFIG)
    return layout


def change_container(merged: Path) -> None:
    """What a running container might do: edit a file of the image, add some, delete one."""
    (merged / "app" / "config.yaml").write_text("port: 9090\n")
    (merged / "etc" / "hostname").write_text("web-1\n")
    (merged / "tmp" / "server.pid").write_text("42\n")
    (merged / "var" / "log").mkdir(parents=True, exist_ok=True)
    (merged / "var" / "log" / "app.log").write_text("started\n")
    (merged / "app" / "static" / "index.html").unlink()
