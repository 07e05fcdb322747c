import os


def read(*, name: str, **ctx):
    return os.environ.get(name)


def pid(**ctx):
    return os.getpid()


def slow(**ctx):
    import time

    time.sleep(5)


def crash(**ctx):
    os._exit(7)
