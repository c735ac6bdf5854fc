"""Security: the optional API key, an API that never fetches URLs or reads paths, and a container
that runs without privileges on a read-only root file system."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from harness.server import can_mount_privately, free_port, running_service, service_env
from service.security import API_KEY_HEADER, MISSING, WRONG
from tests.packaging.test_serve_env import dockerfile_instructions
from tests.system.test_limits import read_response, slow_upload

KEY = "s3cret-key"
OPEN_PATHS = (
    "/health",
    "/ready",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/",
    "/static/app.js",  # the demo page's own files
    "/static-offline-docs/swagger-ui-bundle.js",  # the docs pages' files
)


@pytest.fixture(scope="module")
def locked(make_client):
    with make_client(api_key=KEY) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict"),
        ("POST", "/predict/batch"),
        ("POST", "/predict/annotated"),
        ("GET", "/model"),
        ("GET", "/metrics"),
        ("GET", "/no-such-page"),
    ],
)
def test_with_a_key_set_every_other_endpoint_needs_it(locked, portrait_bytes, method, path):
    files = {"files" if path == "/predict/batch" else "file": portrait_bytes}
    upload = {"files": files} if method == "POST" else {}
    for headers, detail in (({}, MISSING), ({API_KEY_HEADER: "guess"}, WRONG)):
        response = locked.request(method, path, headers=headers, **upload)
        assert response.status_code == 401
        assert response.json() == {"detail": detail}
        assert response.headers["www-authenticate"].startswith("APIKey")
    allowed = locked.request(method, path, headers={API_KEY_HEADER: KEY}, **upload)
    assert allowed.status_code == (404 if path == "/no-such-page" else 200)


def test_the_probes_and_the_docs_need_no_key(locked):
    for path in OPEN_PATHS:
        response = locked.get(path, follow_redirects=False)
        assert response.status_code == 200, path


def test_without_a_key_the_api_is_open_and_the_docs_show_no_lock(client, make_client):
    assert client.get("/model").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})
    with make_client(api_key="") as empty_key:  # API_KEY= (empty) is no key
        assert empty_key.get("/model").status_code == 200


def test_the_openapi_docs_declare_the_key_where_it_is_needed(locked):
    schema = locked.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert list(schemes.values()) == [
        {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
            "description": schemes["APIKeyHeader"]["description"],
        }
    ]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            secured = operation.get("security") == [{"APIKeyHeader": []}]
            assert secured == (path not in OPEN_PATHS), path


def test_cors_preflights_pass_without_the_key(make_client):
    with make_client(api_key=KEY, cors_origins="https://app.example.com") as client:
        preflight = client.options(
            "/predict",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": API_KEY_HEADER,
            },
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"


def test_a_request_without_the_key_is_refused_before_its_body_is_read(model_path):
    """Over HTTP: an upload announced without a key is answered 401 with its body unsent, so a
    client without the key cannot make the service read (or queue) anything."""
    with running_service(model_path, settings={"API_KEY": KEY}) as url, slow_upload(url) as sock:
        status, headers, body = read_response(sock)
    assert status == 401
    assert json.loads(body) == {"detail": MISSING}
    assert headers["www-authenticate"].startswith("APIKey")


def test_no_endpoint_takes_a_url_or_a_path_from_the_client(client):
    """What a client can send is the uploaded bytes and two enumerated or numeric parameters:
    nothing the service could fetch or open. A new parameter must be added here on purpose."""
    schema = client.get("/openapi.json").json()
    allowed_parameters = {
        "detect": "DetectMode",
        "max_faces": "integer",
        "fps": "number",
        "smoothing": "number",
    }
    for path, operations in schema["paths"].items():
        assert "{" not in path, f"{path} takes a path parameter"
        for name, operation in operations.items():
            for parameter in operation.get("parameters", []):
                assert parameter["in"] == "query", (path, parameter)
                kind = parameter["schema"].get("type") or parameter["schema"]["$ref"]
                assert kind.endswith(allowed_parameters[parameter["name"]]), (path, parameter)
            body = operation.get("requestBody")
            if body:
                assert (
                    path in {"/predict", "/predict/batch", "/predict/annotated", "/predict/video"}
                    and name == "post"
                )
                raw = {"image/*", "application/octet-stream"}  # the image itself as the body
                if path in {"/predict", "/predict/annotated"}:
                    assert set(body["content"]) == {"multipart/form-data", *raw}
                    for media_type in raw:
                        schema_of_body = body["content"][media_type]["schema"]
                        assert schema_of_body == {"type": "string", "format": "binary"}
                else:
                    assert list(body["content"]) == ["multipart/form-data"]
    text = str(schema)
    assert "'format': 'uri'" not in text and "'format': 'url'" not in text
    forms = [
        schema["components"]["schemas"][name]["properties"]
        for name in schema["components"]["schemas"]
        if name.startswith("Body_")
    ]
    assert forms, "the upload forms are not in the schema"
    for properties in forms:
        for field in properties.values():
            file = field.get("items", field)
            if "anyOf" in file:  # optional where the image may come as the body instead
                (file,) = [variant for variant in file["anyOf"] if variant.get("type") != "null"]
            assert file["type"] == "string" and file["contentMediaType"] == (
                "application/octet-stream"
            ), field


def test_the_image_runs_as_a_numeric_non_root_user_and_writes_no_bytecode(repo_root):
    dockerfile = repo_root / "Dockerfile.serve"
    (user,) = dockerfile_instructions(dockerfile, "USER")
    uid, _, gid = user.partition(":")
    # numeric: Kubernetes can only enforce runAsNonRoot on a numeric user
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    runs = dockerfile_instructions(dockerfile, "RUN")
    assert any(f"--uid {uid}" in run and f"--gid {gid}" in run for run in runs)  # user exists
    env = " ".join(dockerfile_instructions(dockerfile, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_compose_runs_the_api_read_only_unprivileged_with_only_a_tmpfs(repo_root):
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    assert api["read_only"] is True
    assert [mount.split(":")[0] for mount in api["tmpfs"]] == ["/tmp"]
    assert api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    uid = str(api["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    assert "volumes" not in api  # nothing writable but the tmpfs
    # the stop grace period covers the service's own shutdown timeout
    grace = int(re.fullmatch(r"(\d+)s", api["stop_grace_period"]).group(1))
    timeout = float(api["environment"].get("SHUTDOWN_TIMEOUT_SECONDS", 30))
    assert grace > timeout


def _can_make_a_read_only_root() -> bool:
    return bool(shutil.which("setpriv")) and can_mount_privately("mount -o remount,bind,ro /")


@pytest.mark.skipif(
    not _can_make_a_read_only_root(), reason="needs root and mount namespaces (unshare)"
)
def test_the_service_runs_on_a_read_only_root_with_a_tmpfs_and_no_capabilities(
    model_path, portrait, portrait_bytes, repo_root
):
    """What compose and the Kubernetes manifest ask for, made for real in a private mount
    namespace: / remounted read-only, a fresh tmpfs on /tmp, every capability dropped, no new
    privileges. Two workers (their metrics live on the tmpfs) answer a photo, an upload large
    enough to be spooled to a temporary file, a batch and /metrics."""
    port = free_port()
    # The tmpfs goes on a directory of its own, named by TMPDIR (as /tmp is in the image): a
    # tmpfs on /tmp itself would hide this checkout and its venv wherever they live under /tmp.
    scratch = Path(tempfile.mkdtemp(prefix="tmpfs-"))
    script = textwrap.dedent(
        f"""
        set -e
        mount --bind {model_path.parent} /mnt
        mount -o remount,bind,ro /mnt
        mount -o remount,bind,ro /
        mount -o remount,bind,ro "$(findmnt -n -o TARGET --target {repo_root})"
        mount -t tmpfs -o size=256m,mode=1777 tmpfs {scratch}
        touch /probe 2>/dev/null && exit 90
        touch {model_path.parent}/probe 2>/dev/null && exit 91
        exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs \
            {sys.executable} -m service
        """
    )
    env = service_env(
        Path("/mnt") / model_path.name,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="2",
        PYTHONDONTWRITEBYTECODE="1",
        LOG_LEVEL="warning",
        TMPDIR=str(scratch),
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    big = _large_png(portrait)
    try:
        _wait_ready(process, url)
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200
            spooled = http.post("/predict", files={"file": big})
            assert spooled.status_code == 200, spooled.text
            batch = http.post("/predict/batch", files=[("files", big), ("files", portrait_bytes)])
            assert batch.status_code == 200
            assert all("faces" in result for result in batch.json()["results"])
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert 'route="/predict",status="200"' in metrics.text
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    assert process.returncode == 0, output
    assert "Read-only file system" not in output and "Traceback" not in output, output


def _large_png(portrait) -> bytes:
    """The portrait at 1600x1600 as PNG: over a megabyte, so Starlette spools it to /tmp."""
    buffer = io.BytesIO()
    portrait.resize((1600, 1600)).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) > 1024 * 1024
    return data


def _wait_ready(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("not ready")
