# Each hook appends its name to the file named by the payload's "trace" key.


def _mark(trace, name):
    with open(trace, "a") as f:
        f.write(name + "\n")


def first(*, trace, say=None, **payload):
    _mark(trace, "first")
    if say:  # for the CLI tests: a hook's prints are heard
        print(say)


def veto_if_asked(*, trace, veto=False, **payload):
    _mark(trace, "veto_if_asked")
    if veto:
        raise PermissionError("saving this screen is not allowed")


def after_boom(*, trace, **payload):
    _mark(trace, "after_boom")
    raise RuntimeError("after hook failed")


def third(*, trace, **payload):
    _mark(trace, "third")
