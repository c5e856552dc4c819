"""`voicecall secrets` through the real CLI, with a file-backed keyring backend made for the test.

The backend is a real `keyring` backend class selected the documented way
(PYTHON_KEYRING_BACKEND), so the CLI's lazy import, backend discovery and error handling all run
for real; only the storage is a JSON file we can inspect.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Value-9f8e"

BACKEND_SOURCE = '''
"""A keyring backend storing passwords in the JSON file named by $TEST_KEYRING_FILE."""
import io
import json
import os

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class JsonKeyring(KeyringBackend):
    priority = 1

    def _path(self):
        return os.environ["TEST_KEYRING_FILE"]

    def _load(self):
        try:
            with open(self._path()) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def _save(self, data):
        with open(self._path(), "w") as fh:
            json.dump(data, fh)

    def get_password(self, service, username):
        return self._load().get(f"{service}/{username}")

    def set_password(self, service, username, password):
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service, username):
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError("not found")
        self._save(data)
'''


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An isolated environment whose keyring is a JSON file in tmp_path."""
    (tmp_path / "testkr.py").write_text(BACKEND_SOURCE)
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_TOKEN", "_API_KEY", "_AUTHTOKEN", "_PUBLIC_KEY"))
    }
    clean.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        PYTHON_KEYRING_BACKEND="testkr.JsonKeyring",
        TEST_KEYRING_FILE=str(tmp_path / "keyring.json"),
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        VOICECALL_NO_AUTOSTART="1",
    )
    return clean


def stored(env: dict[str, str]) -> dict[str, str]:
    path = Path(env["TEST_KEYRING_FILE"])
    return json.loads(path.read_text()) if path.exists() else {}


def voicecall(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicecall_cli", *args],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_set_prompts_without_echo(env: dict[str, str]) -> None:
    """The value is typed twice at a hidden prompt; it is stored and never echoed."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "voicecall_cli", "secrets", "set", "twilio.auth_token"],
        env=env,
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=30,
    )
    seen = io.StringIO()
    child.logfile_read = seen  # everything the terminal showed, prompts included
    child.expect("Value for twilio.auth_token: ")
    child.sendline(SECRET)
    child.expect("Repeat for confirmation: ")
    child.sendline(SECRET)
    child.expect(pexpect.EOF)
    child.close()
    transcript = seen.getvalue()
    assert child.exitstatus == 0, transcript
    assert "Stored twilio.auth_token" in transcript
    assert SECRET not in transcript
    assert stored(env) == {"voicecall/twilio.auth_token": SECRET}


def test_prompt_retries_on_mismatch(env: dict[str, str]) -> None:
    """Two different entries are refused and asked again."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "voicecall_cli", "secrets", "set", "plivo.auth_token"],
        env=env,
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=30,
    )
    child.expect("Value for plivo.auth_token: ")
    child.sendline("first")
    child.expect("Repeat for confirmation: ")
    child.sendline("second")
    child.expect("do not match")
    child.expect("Value for plivo.auth_token: ")
    child.sendline(SECRET)
    child.expect("Repeat for confirmation: ")
    child.sendline(SECRET)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert stored(env) == {"voicecall/plivo.auth_token": SECRET}


def test_stdin_list_delete_round_trip(env: dict[str, str]) -> None:
    """--stdin stores the value (minus its newline); list shows presence only; delete removes."""
    done = voicecall(env, "secrets", "set", "telnyx.api_key", "--stdin", stdin=SECRET + "\n")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert stored(env) == {"voicecall/telnyx.api_key": SECRET}

    listed = voicecall(env, "secrets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert SECRET not in listed.stdout
    doc = json.loads(listed.stdout)
    assert doc["backend"] == "testkr.JsonKeyring" and doc["usable"] is True
    rows = {row["name"]: row for row in doc["secrets"]}
    assert rows["telnyx.api_key"] == {
        "name": "telnyx.api_key",
        "envVar": "TELNYX_API_KEY",
        "inEnv": False,
        "inKeyring": True,
    }
    assert rows["twilio.auth_token"]["inKeyring"] is False

    human = voicecall(env, "secrets", "list")
    assert human.returncode == 0
    line = next(ln for ln in human.stdout.splitlines() if ln.startswith("telnyx.api_key"))
    assert line.split()[1:] == ["TELNYX_API_KEY", "-", "set"]

    deleted = voicecall(env, "secrets", "delete", "telnyx.api_key")
    assert deleted.returncode == 0, deleted.stderr
    assert stored(env) == {}
    again = voicecall(env, "secrets", "delete", "telnyx.api_key")
    assert again.returncode == 1
    assert "not stored in the keyring" in again.stderr


def test_empty_stdin_is_a_usage_error(env: dict[str, str]) -> None:
    """Nothing on stdin stores nothing."""
    done = voicecall(env, "secrets", "set", "telnyx.api_key", "--stdin", stdin="")
    assert done.returncode == 2
    assert "no value on stdin" in done.stderr
    assert stored(env) == {}


def test_env_variable_wins_and_is_reported(env: dict[str, str]) -> None:
    """Setting a secret whose variable is exported warns that the variable takes precedence."""
    env["TWILIO_AUTH_TOKEN"] = "from-env"
    done = voicecall(env, "secrets", "set", "twilio.auth_token", "--stdin", stdin=SECRET)
    assert done.returncode == 0
    assert "TWILIO_AUTH_TOKEN is set" in done.stderr
    listed = json.loads(voicecall(env, "secrets", "list", "--json").stdout)
    row = next(r for r in listed["secrets"] if r["name"] == "twilio.auth_token")
    assert (row["inEnv"], row["inKeyring"]) == (True, True)
    assert "from-env" not in json.dumps(listed)


def test_unknown_name_lists_valid_names(env: dict[str, str]) -> None:
    """A name that is not a secret key is a usage error naming the valid ones."""
    done = voicecall(env, "secrets", "set", "twilio.password", "--stdin", stdin=SECRET)
    assert done.returncode == 2
    assert "twilio.password" in done.stderr
    assert "twilio.auth_token" in done.stderr and "tunnel.ngrok_authtoken" in done.stderr


def test_backend_reports_the_active_backend(env: dict[str, str]) -> None:
    """`backend --json` names the class and says it works."""
    done = voicecall(env, "secrets", "backend", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["backend"], doc["usable"]) == ("testkr.JsonKeyring", True)


def test_headless_without_backend(env: dict[str, str]) -> None:
    """With no working backend, set fails with status 1 and the fallbacks; backend says why."""
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    done = voicecall(env, "secrets", "set", "twilio.auth_token", "--stdin", stdin=SECRET)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no usable OS keyring (keyring.backends.fail.Keyring)")
    for hint in (
        "TWILIO_AUTH_TOKEN",
        "config file",
        "chmod 600",
        "keyrings.alt",
        "PYTHON_KEYRING_BACKEND",
    ):
        assert hint in done.stderr
    assert SECRET not in done.stdout + done.stderr

    info = voicecall(env, "secrets", "backend")
    assert info.returncode == 1
    assert "usable:  no" in info.stdout and "keyrings.alt" in info.stdout
    doc = json.loads(voicecall(env, "secrets", "backend", "--json").stdout)
    assert doc["usable"] is False and "keyrings.alt" in doc["fallback"]

    listed = json.loads(voicecall(env, "secrets", "list", "--json").stdout)
    assert listed["usable"] is False
    assert {row["inKeyring"] for row in listed["secrets"]} == {None}
