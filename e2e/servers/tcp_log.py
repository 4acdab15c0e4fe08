"""TCP test server: prints what each connection sends first (so that the
log shows every byte that reached the app), answers `ok`, closes."""
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9091
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen()
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        print("received", c.recv(4096), flush=True)
        c.sendall(b"ok\n")
    except OSError:
        pass
    c.close()
