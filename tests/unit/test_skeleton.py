"""The package imports, the CLI answers, and the API turns bad input into 400 JSON."""

from click.testing import CliRunner
from fastapi.testclient import TestClient

from skinnysip import __version__
from skinnysip.api.app import create_app
from skinnysip.cli import app as cli_app


def test_cli_version() -> None:
    result = CliRunner().invoke(cli_app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == __version__


def test_api_health_and_unknown_route() -> None:
    client = TestClient(create_app())
    assert client.get("/api/health").json() == {"success": True, "version": __version__}
    r = client.get("/api/nope")
    assert r.status_code == 404
    assert r.json()["success"] is False


def test_invalid_json_names_the_body() -> None:
    client = TestClient(create_app())
    r = client.post("/api/sip/options", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False
    assert body["error"].startswith("body: invalid JSON at character 1")
