"""The lab's TOML configuration: defaults, every error names its key, demo passwords stay on
loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinnysip.lab.config import DEFAULT_EXTENSIONS, ConfigError, LabSettings, load_settings


def test_defaults_are_the_readme_demo() -> None:
    s = load_settings(None)
    assert (s.domain, s.realm, s.algorithm) == ("lab.skinnysip", "lab.skinnysip", "MD5")
    assert (s.sip_port, s.sips_port, s.sccp_port) == (5060, 5061, 2000)
    assert (s.ws_port, s.wss_port) == (None, None)  # SIP over WebSocket only when asked for
    assert s.hosts == ("127.0.0.1", "::1")
    assert [(u.user, u.password) for u in s.users] == [("1001", "demo1001"), ("1002", "demo1002"), ("1003", "demo1003")]
    assert [(d.name, d.line) for d in s.devices] == [("SEP001122334455", "2001"), ("SEP00112233445A", "2002")]
    assert s.extensions == DEFAULT_EXTENSIONS
    s.check_exposure()  # loopback only: fine


def test_a_full_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('domain = "pbx.test"\nalgorithm = "sha-256"\nhosts = ["0.0.0.0"]\n'
                    "[ports]\nsip = 5070\nsips = 5071\nsccp = 2001\nws = 5066\nwss = 7443\n"
                    '[[users]]\nuser = 2100\npassword = "s3cret"\n'
                    '[[devices]]\nname = "sep0011223344ff"\nline = 3001\n'
                    '[extensions]\n700 = "echo"\n')
    s = load_settings(path)
    assert (s.domain, s.realm, s.algorithm, s.sip_port) == ("pbx.test", "pbx.test", "SHA-256", 5070)
    assert (s.ws_port, s.wss_port) == (5066, 7443)
    assert s.users[0].user == "2100" and s.devices[0].name == "SEP0011223344FF" and s.devices[0].line == "3001"
    assert s.extensions == {"700": "echo"}
    s.check_exposure()  # beyond loopback, but no demo password
    path.write_text('algorithm = ["sha-256", "md5"]\n')
    assert load_settings(path).algorithms == ("SHA-256", "MD5")


@pytest.mark.parametrize(("text", "message"), [
    ('[[users]]\nuser = "1001"\n', "users[0].password: missing"),
    ('colour = "red"\n', "colour: unknown key"),
    ("[ports]\nsip = 70000\n", "ports.sip: 70000 is not a port"),
    ("[ports]\nwss = -1\n", "ports.wss: -1 is not a port"),
    ('[ports]\nsip = "x"\n', "ports.sip: a port number expected"),
    ('hosts = ["lab.example"]\n', "hosts[0]: 'lab.example' is not an IP address"),
    ('[extensions]\n600 = "karaoke"\n', "extensions.600: 'karaoke' is not one of"),
    ('[[devices]]\nname = "PHONE1"\nline = "2001"\n', "devices[0].name: 'PHONE1' is not a device name"),
    ('[tls]\ncert = "/nonexistent.pem"\n', "tls.cert: '/nonexistent.pem' is not a readable file"),
    ("[registrar]\nmin_expires = 0\n", "registrar.min_expires"),
    ('[[users]]\nuser = "600"\npassword = "x"\n', "users[0].user: '600' is also an extension"),
    ("[ports\n", "not valid TOML"),
    ('[stir]\nsign = "yes"\n', "stir.sign: true or false expected"),
    ('[stir]\nattest = "D"\n', "stir.attest: 'D' is not A, B or C"),
    ('[stir]\nx5u = "ftp://x/c.pem"\n', "stir.x5u: 'ftp://x/c.pem' is not an http(s) URL"),
    ('[stir]\nkey = "/nonexistent.pem"\n', "stir.key: '/nonexistent.pem' is not a readable file"),
    ('[stir]\ncolour = 1\n', "stir.colour: unknown key"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(path)
    assert message in str(info.value)


def test_a_file_that_never_ends_or_is_not_there_is_one_line() -> None:
    with pytest.raises(ConfigError, match="^/dev/zero: larger than 1024 KiB"):
        load_settings("/dev/zero")  # read up to a cap, not until memory runs out
    with pytest.raises(ConfigError, match="^/nonexistent.toml: cannot read"):
        load_settings("/nonexistent.toml")


def test_demo_passwords_refused_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match=r"users\[0\]\.password: the demo password of 1001"):
        LabSettings(hosts=("127.0.0.1", "192.0.2.10")).check_exposure()
    LabSettings(hosts=("::1",)).check_exposure()


def test_the_stir_table(tmp_path: Path) -> None:
    """``[stir]``: the lab as STIR/SHAKEN authentication service (RFC 8224 §5)."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    key.write_text("k")
    cert.write_text("c")
    path = tmp_path / "lab.toml"
    path.write_text(f'[stir]\nsign = true\nattest = "B"\nx5u = "https://sti.example.test/c.pem"\n'
                    f'key = "{key}"\ncert = "{cert}"\n')
    settings = load_settings(path)
    assert (settings.stir_sign, settings.stir_attest, settings.stir_x5u) == (True, "B", "https://sti.example.test/c.pem")
    assert (settings.stir_key, settings.stir_cert) == (str(key), str(cert))
    assert not LabSettings().stir_sign
    path.write_text(f'[stir]\nkey = "{key}"\n')
    with pytest.raises(ConfigError, match="stir.key: give both stir.key and stir.cert"):
        load_settings(path)
