"""tsecho-client (being written)."""


def main() -> None:
    raise SystemExit("tsecho-client: not yet written")
