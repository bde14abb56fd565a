"""Config and themes: bad input is one clear FpmonError, never a traceback."""

from __future__ import annotations

import pytest

from fpmon import themes
from fpmon.errors import FpmonError
from fpmon.monitor.config import parse_config


def test_good_config():
    cfg = parse_config(
        {
            "monitor": {"endpoints": ["tcp://127.0.0.1:7791"], "state": "tcp://127.0.0.1:7782"},
            "keymap": {"fleet": "f1"},
            "limits": {"max_verdicts": 100, "stale_after_s": 3},
        }
    )
    assert cfg.monitor.endpoints == ["tcp://127.0.0.1:7791"] and cfg.limits.max_verdicts == 100
    assert isinstance(cfg.limits.max_verdicts, int)


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"monitr": {}}, "unknown key 'monitr'; known: monitor, curve, keymap, limits"),
        ({"monitor": {"endpoint": "x"}}, "[monitor] unknown key 'endpoint'; known: endpoints"),
        ({"monitor": {"endpoints": ["localhost:7791"]}}, "not a ZeroMQ endpoint"),
        ({"monitor": {"refresh_s": -1}}, "[monitor] refresh_s = -1 must be > 0"),
        ({"limits": {"max_verdicts": "many"}}, "max_verdicts = 'many': expected an integer"),
        ({"limits": {"max_verdicts": 0}}, "[limits] max_verdicts = 0 must be >= 1"),
        ({"keymap": {"fleet": 3}}, "key name"),
        ({"curve": {"server_key": "short", "client_keys": "x"}}, "40-character Z85"),
        ({"curve": {"server_key": "a" * 40, "client_keys": "/nonexistent"}}, "is not a file"),
        ({"curve": {"server_key": "a" * 40, "state_server_key": "b"}}, "40-character Z85"),
        ({"monitor": {"verifier_key": "ab" * 31}}, "[monitor] verifier_key: expected an Ed25519"),
        ({"monitor": {"verifier_key": "zz" * 32}}, "64 hex digits"),
    ],
)
def test_bad_config(raw, words):
    with pytest.raises(FpmonError) as e:
        parse_config(raw)
    assert words in str(e.value)


def test_verifier_key_and_the_daemons_own_curve_key(tmp_path, curve_cert):
    import zmq
    import zmq.auth

    _, secret = curve_cert(tmp_path, "monitor")
    hub, daemon = zmq.curve_keypair()[0].decode(), zmq.curve_keypair()[0].decode()
    curve = {"server_key": hub, "client_keys": str(secret)}
    cfg = parse_config({"monitor": {"verifier_key": "ab" * 32}, "curve": curve})
    assert cfg.monitor.verifier_key == bytes.fromhex("ab" * 32)
    assert cfg.curve is not None and cfg.curve.state_key == hub.encode()  # one server: the same
    cfg = parse_config({"curve": {**curve, "state_server_key": daemon}})
    assert cfg.curve is not None and cfg.curve.state_key == daemon.encode()


def test_themes_load_with_app_variables_defined_once():
    names = themes.available()
    for want in ("fpmon-dark", "fpmon-light", "fpmon-high-contrast", "fpmon-colorblind"):
        assert want in names
    for t in themes.load_all():
        assert set(themes.APP_VARIABLES) <= set(t.variables)
    dark = themes.load_theme("fpmon-dark")
    assert dark.variables["fpmon-mismatch"] == dark.error  # follows the theme unless set
    cb = themes.load_theme("fpmon-colorblind")
    assert cb.variables["fpmon-ok"] != "#00ff00"  # no red/green pair


def test_unknown_theme_names_the_ones_there_are():
    with pytest.raises(FpmonError, match=r"unknown theme 'neon'; available: .*fpmon-dark"):
        themes.load_theme("neon")


def test_bad_theme_file(tmp_path):
    (tmp_path / "x.toml").write_text('primary = "#fff"\nsparkle = 1\n')
    with pytest.raises(FpmonError, match="unknown key"):
        themes.load_theme("x", tmp_path)
