"""
Imports point one way: the client never loads the server, and L{tsecho.wire},
what both ends share, loads nothing of tsecho.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import tsecho.client

#: The modules of tsecho that are neither side's: the client may load these.
SIDE_NEUTRAL = {"tsecho", "tsecho.wire", "tsecho.framing", "tsecho._logtext", "tsecho._cli", "tsecho._endpoint_errors"}


def modules_after(statement: str) -> set[str]:
    """
    The names in C{sys.modules} after C{statement} runs in a fresh interpreter.
    """
    script = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


def not_the_clients(modules: set[str]) -> list[str]:
    """
    The modules of tsecho in C{modules} that the client has no business loading.
    """
    return sorted(
        name
        for name in modules
        if name.startswith("tsecho.") and name not in SIDE_NEUTRAL and not name.startswith("tsecho.client")
    )


class ClientImportsTests(SynchronousTestCase):
    """
    The client stands without the server.
    """

    def test_package_loads_no_server_module(self) -> None:
        """
        C{import tsecho.client} loads no server module (C{tsecho.protocol},
        C{tsecho.service}, C{tsecho.tap}, C{tsecho._idle}, C{tsecho.datagram}, ...),
        nor C{twisted.internet.tcp}, nor a reactor.
        """
        modules = modules_after("import tsecho.client")
        self.assertIn("tsecho.client._stream", modules)  # the check can see what was loaded
        self.assertEqual(not_the_clients(modules), [])
        self.assertEqual({"tsecho.protocol", "twisted.internet.tcp", "twisted.internet.reactor"} & modules, set())

    def test_command_loads_no_server_module(self) -> None:
        """
        The C{tsecho-client} command (endpoints, TLS, standard input) loads no
        server module either.
        """
        modules = modules_after("import tsecho.client._command")
        self.assertEqual(not_the_clients(modules), [])
        self.assertEqual({"tsecho.protocol", "twisted.internet.reactor"} & modules, set())

    def test_wire_is_a_leaf(self) -> None:
        """
        L{tsecho.wire} loads nothing of tsecho but the package, and no Twisted.
        """
        modules = modules_after("import tsecho.wire")
        self.assertEqual(sorted(name for name in modules if name.startswith("tsecho.")), ["tsecho.wire"])
        self.assertEqual(sorted(name for name in modules if name.startswith("twisted")), [])


class ClientFaceTests(SynchronousTestCase):
    """
    C{tsecho.client} names what users may rely on.
    """

    def test_all(self) -> None:
        """
        Every name in C{__all__} is there, none is private, and the face
        includes the sessions, the base error and the command.
        """
        for name in tsecho.client.__all__:
            self.assertFalse(name.startswith("_"), name)
            self.assertTrue(hasattr(tsecho.client, name), name)
        self.assertLessEqual(
            {"EchoSession", "DatagramClient", "ClientError", "NoReplyError", "main"}, set(tsecho.client.__all__)
        )

    def test_errors_are_client_errors(self) -> None:
        """
        Every error class on the face is a L{tsecho.client.ClientError}, so
        one C{except} catches them all.
        """
        errors = [getattr(tsecho.client, name) for name in tsecho.client.__all__ if name.endswith("Error")]
        self.assertGreater(len(errors), 1)
        for error in errors:
            self.assertTrue(issubclass(error, tsecho.client.ClientError), error)


class PublicAPITests(SynchronousTestCase):
    """
    C{tsecho/__init__.py} names the public modules without loading them.
    """

    def test_import_tsecho_loads_nothing(self) -> None:
        """
        C{import tsecho} loads no module of tsecho besides itself.
        """
        modules = modules_after("import tsecho")
        self.assertEqual(sorted(m for m in modules if m.startswith("tsecho")), ["tsecho"])

    def test_named_modules_are_public(self) -> None:
        """
        Each name in C{tsecho.__all__} (besides C{__version__}) is a public
        module of the package, and the package itself is installed: no
        private module is named public, and none named is missing.
        """
        import importlib

        import tsecho

        named = [name for name in tsecho.__all__ if name != "__version__"]
        self.assertIn("testing", named)
        for name in named:
            self.assertFalse(name.startswith("_"), name)
            self.assertEqual(importlib.import_module(f"tsecho.{name}").__name__, f"tsecho.{name}")
