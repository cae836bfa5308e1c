"""
C{python -m tsecho.client}: the C{tsecho-client} command.
"""

from tsecho.client import main

if __name__ == "__main__":
    main()
