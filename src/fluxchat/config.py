"""Load the node's JSON configuration once into validated, frozen dataclasses.

Every message names the file and the key, e.g. `var/config1.json: ipc.port: expected
1..65535, got "abc"`. Relative paths resolve against the working directory.
"""

from __future__ import annotations

from pathlib import Path

from .config_reader import Reader, read_json, refuse_unknown_keys
from .contact import parse_contact
from .errors import ConfigError
from .ids import IdError, parse_id
from .mail_rules import MAX_BODY_BYTES
from .records import record

LOG_LEVELS = ("debug", "info", "warning", "error")


@record
class ChallengeConfig:
    min: int = 16
    max: int = 24


@record
class ClientConfig:
    auth_timeout: float = 10.0
    request_timeout: float = 10.0
    idle_timeout: float = 300.0
    ping_interval: float = 60.0
    max_links: int = 256
    max_handshakes: int = 32
    connections_per_second: float = 5.0


@record
class LinksConfig:
    """Per-link and per-source limits of peer links (docs/PROTOCOL.md §5.2, §7). None: derived
    from `client.max_links` / `client.max_handshakes` as documented."""
    per_prefix: int | None = None              # inbound links per /24 or /64: max_links // 8, >= 4
    handshakes_per_prefix: int | None = None   # max_handshakes // 8, at least 1
    reserved_handshakes: int | None = None     # kept for known addresses: max_handshakes // 4
    busy_handshakes: int | None = None         # from here every dialer pays work: max_handshakes // 2
    blame_time: float = 600.0                  # seconds misbehaviour makes a source or ID pay work
    tls_timeout: float = 3.0                   # accept to TLS done
    requests_in_flight: int = 64               # unanswered peer requests per link
    frames_per_second: float = 250.0           # frame budget per link …
    frame_burst: float = 1000.0                # … and its burst
    mail_requests_per_second: float = 500.0    # mail requests from all links together …
    mail_request_burst: float = 2000.0         # … and their burst (shared fairly, fairshare.py)
    max_queued_bytes: int = 4 * 1024 * 1024    # output not yet taken by the peer, per link
    write_timeout: float = 20.0                # queued output must start draining within this


@record
class KademliaConfig:
    k: int = 20
    alpha: int = 3
    refresh_interval: float = 3600.0
    republish_interval: float = 3600.0


@record
class MailConfig:
    retention_time: float = 168.0
    replicas: int = 5
    fetch_interval: float = 300.0
    max_body_bytes: int = MAX_BODY_BYTES
    quota_per_recipient: int = 64 * 1024 * 1024
    quota_per_peer: int = 64 * 1024 * 1024
    quota_total: int = 1024 * 1024 * 1024
    display_name: str = ""  # signed into our mail as a hint to the reader; never an identity
    # One storing peer for one recipient: well below quota_per_recipient, so no single
    # sender can fill a recipient's share (see held.py for the fair eviction).
    quota_per_sender_recipient: int = 8 * 1024 * 1024


@record
class MailKeysConfig:
    """Mail key records (mailkeys.py): on by default; off means v1 (RSA) envelopes only."""
    enabled: bool = True
    rotation_interval: float = 24.0   # hours between new records


@record
class IpcConfig:
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 26001
    allow_remote: bool = False


@record
class WebConfig:
    """The local web app (fluxchat/web): off by default, loopback only, signs in with the IPC token."""
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 26080


@record
class DiscoveryConfig:
    enabled: bool = False
    port: int = 26100
    interval: float = 30.0
    broadcast: str = "255.255.255.255"


@record
class DatagramConfig:
    """Lookup queries over UDP on the peer port (docs/PROTOCOL.md §16): answered and sent."""
    enabled: bool = True
    per_source: float = 20.0     # requests answered per second per /24 (IPv4) or /64 (IPv6)
    total: float = 200.0         # requests answered per second in all


@record
class LogConfig:
    level: str = "info"
    file: Path | None = None
    max_bytes: int = 10 * 1024 * 1024   # rotate the file at this size; 0: never
    backups: int = 3                    # rotated files kept (file.1 … file.N)


@record
class Config:
    path: Path
    id: bytes | None
    address: str
    port: int
    contact: str
    data_dir: Path
    bootstrap: tuple[str, ...]
    challenge: ChallengeConfig
    client: ClientConfig
    kademlia: KademliaConfig
    mail: MailConfig
    ipc: IpcConfig
    discovery: DiscoveryConfig
    log: LogConfig
    mail_keys: MailKeysConfig = MailKeysConfig()
    web: WebConfig = WebConfig()
    links: LinksConfig = LinksConfig()
    datagrams: DatagramConfig = DatagramConfig()


def _node_id(reader: Reader) -> bytes | None:
    value = reader.data.get("id")
    if value in (None, ""):
        return None
    try:
        return parse_id(value)
    except IdError:
        raise reader.fail("id", "a node ID (FC_…)", value) from None


def load_config(path: Path | str) -> Config:
    path = Path(path)
    data = read_json(path)
    config = _build(Reader(path, data))
    refuse_unknown_keys(path, data, config)
    return config


def _build(root: Reader) -> Config:
    path = root.path
    contact = root.text("contact", "public")
    try:
        parse_contact(contact)
    except ValueError:
        raise root.fail("contact", "public, public:PORT, private or HOST:PORT", contact) from None
    bootstrap = root.get("bootstrap", [], lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                         "a list of \"host:port\" strings")
    challenge = root.section("challenge")
    c_min = challenge.integer("min", ChallengeConfig.min, 0, 32)
    c_max = challenge.integer("max", ChallengeConfig.max, c_min, 40)
    log = root.section("log")
    log_file = log.data.get("file")
    if log_file is not None and not (isinstance(log_file, str) and log_file):
        raise log.fail("file", "a file name or null", log_file)
    data_dir = Path(root.text("data_dir", "var/data1"))
    ipc, web = _ipc(root.section("ipc")), _web(root.section("web"))
    if web.enabled and not ipc.enabled:
        raise ConfigError(f"{path}: web.enabled: the web app signs in with the local API's token; "
                          "set ipc.enabled to true as well")
    return Config(
        path=path,
        id=_node_id(root),
        address=root.text("address", "0.0.0.0"),
        port=root.integer("port", 25001, 0, 65535),
        contact=contact,
        data_dir=data_dir,
        bootstrap=tuple(bootstrap),
        challenge=ChallengeConfig(c_min, c_max),
        client=_client(root.section("client")),
        kademlia=_kademlia(root.section("kademlia")),
        mail=_mail(root.section("mail")),
        ipc=ipc,
        web=web,
        discovery=_discovery(root.section("discovery")),
        log=LogConfig(
            level=log.get("level", "info", lambda v: v in LOG_LEVELS, " or ".join(LOG_LEVELS)),
            file=None if log_file is None else Path(log_file),
            max_bytes=log.integer("max_bytes", LogConfig.max_bytes, 0, 2**40),
            backups=log.integer("backups", LogConfig.backups, 1, 100),
        ),
        mail_keys=_mail_keys(root.section("mail_keys")),
        links=_links(root.section("links"), _client(root.section("client"))),
        datagrams=_datagrams(root.section("datagrams")),
    )


def _client(r: Reader) -> ClientConfig:
    d = ClientConfig
    return ClientConfig(
        auth_timeout=r.number("auth_timeout", d.auth_timeout, 0.1, 600),
        request_timeout=r.number("request_timeout", d.request_timeout, 0.1, 600),
        idle_timeout=r.number("idle_timeout", d.idle_timeout, 1, 86400),
        ping_interval=r.number("ping_interval", d.ping_interval, 0.1, 86400),
        max_links=r.integer("max_links", d.max_links, 1, 100_000),
        max_handshakes=r.integer("max_handshakes", d.max_handshakes, 1, 10_000),
        connections_per_second=r.number("connections_per_second", d.connections_per_second, 0.01, 1e6),
    )


def _links(r: Reader, client: ClientConfig) -> LinksConfig:
    d = LinksConfig

    def derived(key: str, low: int, high: int) -> int | None:
        value: int | None = r.get(key, None, lambda v: v is None or (
            isinstance(v, int) and not isinstance(v, bool) and low <= v <= high),
            f"null or {low}..{high}")
        return value
    handshakes = client.max_handshakes
    return LinksConfig(
        per_prefix=derived("per_prefix", 1, client.max_links),
        handshakes_per_prefix=derived("handshakes_per_prefix", 1, handshakes),
        reserved_handshakes=derived("reserved_handshakes", 0, handshakes - 1),
        busy_handshakes=derived("busy_handshakes", 1, handshakes),
        blame_time=r.number("blame_time", d.blame_time, 0, 86400),
        tls_timeout=r.number("tls_timeout", d.tls_timeout, 0.1, 600),
        requests_in_flight=r.integer("requests_in_flight", d.requests_in_flight, 1, 10_000),
        frames_per_second=r.number("frames_per_second", d.frames_per_second, 1, 1e6),
        frame_burst=r.number("frame_burst", d.frame_burst, 1, 1e7),
        mail_requests_per_second=r.number("mail_requests_per_second",
                                          d.mail_requests_per_second, 1, 1e6),
        mail_request_burst=r.number("mail_request_burst", d.mail_request_burst, 1, 1e7),
        max_queued_bytes=r.integer("max_queued_bytes", d.max_queued_bytes, 65536, 2**30),
        write_timeout=r.number("write_timeout", d.write_timeout, 0.1, 3600),
    )


def _kademlia(r: Reader) -> KademliaConfig:
    d = KademliaConfig
    return KademliaConfig(
        k=r.integer("k", d.k, 2, 64),
        alpha=r.integer("alpha", d.alpha, 1, 16),
        refresh_interval=r.number("refresh_interval", d.refresh_interval, 1, 864000),
        republish_interval=r.number("republish_interval", d.republish_interval, 1, 864000),
    )


def _mail(r: Reader) -> MailConfig:
    d = MailConfig
    return MailConfig(
        retention_time=r.number("retention_time", d.retention_time, 0.01, 24 * 365),
        replicas=r.integer("replicas", d.replicas, 1, 20),
        fetch_interval=r.number("fetch_interval", d.fetch_interval, 0.1, 86400),
        max_body_bytes=r.integer("max_body_bytes", d.max_body_bytes, 1, MAX_BODY_BYTES),
        quota_per_recipient=r.integer("quota_per_recipient", d.quota_per_recipient, 0, 2**40),
        quota_per_peer=r.integer("quota_per_peer", d.quota_per_peer, 0, 2**40),
        quota_total=r.integer("quota_total", d.quota_total, 0, 2**44),
        display_name=r.get("display_name", d.display_name,
                           lambda v: isinstance(v, str) and len(v) <= 64 and v.isprintable(),
                           "printable text of at most 64 characters"),
        quota_per_sender_recipient=r.integer("quota_per_sender_recipient",
                                             d.quota_per_sender_recipient, 0, 2**40),
    )


def _mail_keys(r: Reader) -> MailKeysConfig:
    d = MailKeysConfig
    return MailKeysConfig(
        enabled=r.flag("enabled", d.enabled),
        rotation_interval=r.number("rotation_interval", d.rotation_interval, 0.01, 24 * 14),
    )


def _ipc(r: Reader) -> IpcConfig:
    d = IpcConfig
    return IpcConfig(
        enabled=r.flag("enabled", d.enabled),
        address=r.text("address", d.address),
        port=r.integer("port", d.port, 0, 65535),
        allow_remote=r.flag("allow_remote", d.allow_remote),
    )


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _web(r: Reader) -> WebConfig:
    d = WebConfig
    return WebConfig(
        enabled=r.flag("enabled", d.enabled),
        # Never anything but loopback: the web app trusts whoever holds the session cookie.
        address=r.get("address", d.address, lambda v: v in _LOOPBACK, " or ".join(_LOOPBACK)),
        port=r.integer("port", d.port, 0, 65535),
    )


def _datagrams(r: Reader) -> DatagramConfig:
    d = DatagramConfig
    return DatagramConfig(
        enabled=r.flag("enabled", d.enabled),
        per_source=r.number("per_source", d.per_source, 0.1, 100_000),
        total=r.number("total", d.total, 0.1, 1_000_000),
    )


def _discovery(r: Reader) -> DiscoveryConfig:
    d = DiscoveryConfig
    return DiscoveryConfig(
        enabled=r.flag("enabled", d.enabled),
        port=r.integer("port", d.port, 1, 65535),
        interval=r.number("interval", d.interval, 0.1, 86400),
        broadcast=r.text("broadcast", d.broadcast),
    )
