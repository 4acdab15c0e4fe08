"""A hostile HTTP client over a raw socket, for the robustness scenarios.

  raw_http.py send HOST PORT FILE [PAUSE_AT PAUSE_S]
      sends the bytes of FILE (a pause of PAUSE_S seconds after PAUSE_AT bytes),
      reads until the peer closes or 15 s pass, and prints every status
      line received, then `closed` or `open`.
  raw_http.py slowloris HOST PORT N SECONDS
      opens N connections that send a partial request, then one byte every
      2 s; prints `closed=K of N after T s` once all are closed or SECONDS
      pass.
"""
import socket
import sys
import time


def send(host, port, payload, pause_at=None, pause_s=0.0):
    s = socket.create_connection((host, port), timeout=15)
    if pause_at is None:
        s.sendall(payload)
    else:
        s.sendall(payload[:pause_at])
        time.sleep(pause_s)
        s.sendall(payload[pause_at:])
    data = b""
    closed = False
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/"):
            print(line.decode(errors="replace"))
    print("closed" if closed else "open")


def slowloris(host, port, n, seconds):
    conns = []
    for _ in range(n):
        c = socket.create_connection((host, port), timeout=5)
        c.setblocking(False)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        conns.append(c)
    start = time.time()
    open_ = set(range(n))
    while open_ and time.time() - start < seconds:
        for i in list(open_):
            try:
                if conns[i].recv(4096) == b"":
                    open_.discard(i)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
                continue
            try:
                conns[i].send(b"X")
            except OSError:
                open_.discard(i)
        time.sleep(2)
    print(f"closed={n - len(open_)} of {n} after {time.time() - start:.0f} s")


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "send":
        with open(sys.argv[4], "rb") as f:
            payload = f.read()
        if len(sys.argv) > 6:
            send(host, port, payload, int(sys.argv[5]), float(sys.argv[6]))
        else:
            send(host, port, payload)
    else:
        slowloris(host, port, int(sys.argv[4]), float(sys.argv[5]))
