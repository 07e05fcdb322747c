not_callable = 42


def fine(**payload):
    return None


def needs_payload_key(*, record, **payload):
    # A required parameter the payload is expected to carry: not an error at load time.
    return None
