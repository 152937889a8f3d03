"""A WSGI app for the tests that run gunicorn, a server written for
systemd's socket activation, unchanged under arbord: every reply names the
pid of the gunicorn master (the process arbord or systemd-socket-activate
started), in the same form as http-hello's replies."""

import os


def app(environ, start_response):
    body = f"hello from pid {os.getppid()}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
