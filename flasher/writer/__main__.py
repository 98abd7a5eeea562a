"""`python -m flasher.writer`: the privileged writer helper (see flasher.writer.helper)."""

from flasher.writer.helper import main

if __name__ == "__main__":
    raise SystemExit(main())
