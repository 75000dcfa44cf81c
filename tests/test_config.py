"""Configuration loading: defaults, validation messages naming file and key."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import unittest
from pathlib import Path

from fluxchat.admission import AdmissionLimits
from fluxchat.config import Config, LinksConfig, load_config
from fluxchat.errors import ConfigError
from fluxchat.link import OutputLimits
from fluxchat.link_setup import link_settings
from tests.keys import identity

ROOT = Path(__file__).resolve().parent.parent


class ConfigTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def write(self, data: object, text: str | None = None) -> Path:
        path = self.dir / "config.json"
        path.write_text(json.dumps(data) if text is None else text)
        return path

    def error(self, data: object, text: str | None = None) -> str:
        path = self.write(data, text)
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        message = str(caught.exception)
        self.assertTrue(message.startswith(str(path)), message)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self) -> None:
        config = load_config(self.write({}))
        self.assertEqual((config.port, config.ipc.port, config.ipc.address), (25001, 26001, "127.0.0.1"))
        self.assertEqual(config.mail.retention_time, 168)
        self.assertEqual(config.mail.replicas, 5)
        self.assertEqual(config.kademlia.k, 20)
        self.assertIsNone(config.id)
        self.assertFalse(config.discovery.enabled)
        self.assertEqual((config.datagrams.enabled, config.datagrams.per_source,
                          config.datagrams.total), (True, 20.0, 200.0))

    def test_datagrams_section(self) -> None:
        config = load_config(self.write({"datagrams": {"enabled": False, "per_source": 5,
                                                       "total": 50.5}}))
        self.assertEqual((config.datagrams.enabled, config.datagrams.per_source,
                          config.datagrams.total), (False, 5.0, 50.5))
        self.assertIn("datagrams.enabled: expected true or false",
                      self.error({"datagrams": {"enabled": "no"}}))
        self.assertIn("datagrams.per_source: expected", self.error({"datagrams": {"per_source": 0}}))
        self.assertIn("datagrams.total: expected", self.error({"datagrams": {"total": "many"}}))
        self.assertIn("did you mean 'datagrams.total'",
                      self.error({"datagrams": {"totl": 3}}))

    def test_example_config_renders_and_loads(self) -> None:
        text = (ROOT / "config-example.json").read_text()
        for name, value in {"FLUXCHAT_ID": identity(0).id_text, "FLUXCHAT_ADDRESS": "0.0.0.0",
                            "FLUXCHAT_PORT": "25002", "FLUXCHAT_CONTACT": "public",
                            "FLUXCHAT_DATA_DIR": "var/data2", "FLUXCHAT_IPC_PORT": "26002",
                            "FLUXCHAT_LOG_FILE": "fluxchat.log"}.items():
            text = text.replace("${" + name + "}", value)
        config = load_config(self.write(None, text))
        self.assertEqual(config.id, identity(0).node_id)
        self.assertEqual((config.port, config.ipc.port), (25002, 26002))
        self.assertEqual(config.log.file, Path("var/data2/fluxchat.log"))
        self.assertEqual(config.data_dir, Path("var/data2"))

    def test_messages_name_the_key(self) -> None:
        self.assertIn('ipc.port: expected 0..65535, got "abc"', self.error({"ipc": {"port": "abc"}}))
        self.assertIn("port: expected", self.error({"port": 70000}))
        self.assertIn("challenge.max", self.error({"challenge": {"min": 20, "max": 10}}))
        self.assertIn("contact", self.error({"contact": "somewhere"}))
        self.assertIn("id: expected a node ID", self.error({"id": "FC_nope"}))
        self.assertIn("log.level", self.error({"log": {"level": "loud"}}))
        self.assertIn("mail: expected an object", self.error({"mail": 3}))
        self.assertIn("bootstrap", self.error({"bootstrap": "1.2.3.4:5"}))
        self.assertIn("ipc.enabled: expected true or false", self.error({"ipc": {"enabled": 1}}))

    def test_missing_file_and_bad_json(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load_config(self.dir / "nope.json")
        self.assertIn("run bin/setup.sh", str(caught.exception))
        self.assertIn("not valid JSON", self.error(None, "{oops"))
        self.assertIn("top level must be a JSON object", self.error([1, 2]))

    def test_contact_forms(self) -> None:
        for contact in ("public", "private", "public:25009", "example.org:25001", "192.0.2.1:1"):
            self.assertEqual(load_config(self.write({"contact": contact})).contact, contact)
        for bad in ("public:0", "host:", ":25001", "host:99999", "bad host:1", "0.0.0.0:25001", "a..b:1"):
            self.error({"contact": bad})

    def test_unknown_keys_are_refused_with_a_suggestion(self) -> None:
        self.assertEqual(self.error({"prot": 25001}), f"{self.dir / 'config.json'}: unknown key 'prot'; "
                                                      "did you mean 'port'?")
        self.assertIn("unknown key 'ipc.prot'; did you mean 'ipc.port'?", self.error({"ipc": {"prot": 1}}))
        self.assertIn("unknown key 'mail.retention'; did you mean 'mail.retention_time'?",
                      self.error({"mail": {"retention": 1}}))
        message = self.error({"log": {"zzz": 1}})
        self.assertIn("unknown key 'log.zzz'; known keys: level, file", message)
        self.assertIn("unknown key 'path'", self.error({"path": "x"}))   # a field, but not a key of the file

    def test_every_section_of_the_dataclasses_is_checked(self) -> None:
        # The allowed keys come from the dataclasses: each section refuses a stray key of its own.
        config = load_config(self.write({}))
        sections = [f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]
        self.assertGreaterEqual(len(sections), 7)
        for name in sections:
            self.assertIn(f"unknown key '{name}.no_such_key'", self.error({name: {"no_such_key": 1}}))


if __name__ == "__main__":
    unittest.main()


class LinksConfigTest(unittest.TestCase):
    """The `links` section: per-link and per-source limits, mapped onto the link layer."""

    def load(self, data: object) -> Config:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(data))
            return load_config(path)

    def test_defaults_derive_from_the_client_caps(self) -> None:
        config = self.load({"client": {"max_links": 64, "max_handshakes": 16}})
        _, limits = link_settings(config, identity(0))
        self.assertEqual(config.links, LinksConfig())
        self.assertEqual(limits.prefix_links(), 8)
        self.assertEqual(limits.busy(), 8)
        self.assertEqual(limits.admission(), AdmissionLimits(16, 2, 4))

    def test_every_key_reaches_the_link_layer(self) -> None:
        config = self.load({"links": {
            "per_prefix": 3, "handshakes_per_prefix": 2, "reserved_handshakes": 5,
            "busy_handshakes": 7, "blame_time": 30, "tls_timeout": 1.5,
            "requests_in_flight": 9, "frames_per_second": 50, "frame_burst": 80,
            "max_queued_bytes": 131072, "write_timeout": 4}})
        session, limits = link_settings(config, identity(0))
        self.assertEqual((limits.prefix_links(), limits.busy(), limits.blame_seconds,
                          limits.tls_timeout), (3, 7, 30, 1.5))
        self.assertEqual(limits.admission(), AdmissionLimits(32, 2, 5))
        self.assertEqual((session.max_inflight, session.frame_rate, session.frame_burst),
                         (9, 50, 80))
        self.assertEqual(limits.output, OutputLimits(max_queued=131072, write_timeout=4))

    def test_bad_values_name_the_key(self) -> None:
        for key, value in (("per_prefix", 0), ("reserved_handshakes", 32),
                           ("handshakes_per_prefix", "4"), ("max_queued_bytes", 10),
                           ("frames_per_second", 0), ("blame_time", -1)):
            with self.subTest(key=key), self.assertRaises(ConfigError) as caught:
                self.load({"links": {key: value}})
            self.assertIn(f"links.{key}: expected", str(caught.exception))
        with self.assertRaisesRegex(ConfigError, "did you mean 'links.per_prefix'"):
            self.load({"links": {"per_prefx": 4}})
