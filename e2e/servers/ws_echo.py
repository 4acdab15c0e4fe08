"""WebSocket test peer: `server PORT` echoes messages; `client URI` sends
three and prints the echoes."""
import asyncio
import sys

import websockets


async def echo(ws, path=None):
    async for message in ws:
        await ws.send("echo:" + message)


async def serve(port):
    async with websockets.serve(echo, "", int(port)):
        await asyncio.Future()


async def client(uri):
    async with websockets.connect(uri, open_timeout=10) as ws:
        for i in range(3):
            await ws.send(f"m{i}")
            print(await asyncio.wait_for(ws.recv(), 10))


if sys.argv[1] == "server":
    asyncio.run(serve(sys.argv[2]))
else:
    asyncio.run(client(sys.argv[2]))
