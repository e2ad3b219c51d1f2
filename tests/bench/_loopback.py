"""Run an aiohttp application on a loopback port in a background thread (test fakes)."""

import asyncio
import socket
import threading


def free_base_port(n: int = 8) -> int:
    """A block of n free loopback ports, below Linux's ephemeral range (32768-60999), so that no
    client connection of another test takes one of them between this check and the bind."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - n)
        if all(_bindable(base + i) for i in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackApp:
    def __init__(self, app, port: int):
        self.app, self.port = app, port
        self.loop = asyncio.new_event_loop()
        self.thread = None

    def start(self) -> "LoopbackApp":
        from aiohttp import web

        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            runner = web.AppRunner(self.app)
            self.loop.run_until_complete(runner.setup())
            self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"loopback app on port {self.port} did not start")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
