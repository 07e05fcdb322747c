import logging


def validate(*, username: str, password: str, existing_user=None, **ctx):
    if username == "loud":  # for the CLI tests: a validator's prints and logs are heard
        print("validating loud")
        logging.getLogger(__name__).warning("loud warning")
    if len(password) < 8:
        raise ValueError("the password needs at least 8 characters")
    if username.lower() in password.lower():
        raise ValueError("the password must not contain the username")
    if existing_user and existing_user.get("old_password") == password:
        raise ValueError("the password must differ from the old one")
    return None
