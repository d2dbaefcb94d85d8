"""`kocurate push-to-hub` against a real HTTP server on 127.0.0.1 that speaks the Hub API.

The server answers what huggingface_hub 2.x sends for create_repo + create_branch + one
create_commit: POST /api/repos/create, POST /api/validate-yaml, POST .../preupload/{rev},
the git-LFS batch endpoint (parquet files are LFS, as on the real Hub), the LFS PUT and verify,
and POST .../commit/{rev} (NDJSON). Files become visible only when the commit lands, like the Hub.
Xet is disabled (HF_HUB_DISABLE_XET) so LFS files take the plain HTTP path a test can serve.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from kocurate.cli import main
from kocurate.publish import hub
from kocurate.publish.card import render_card, validate_card

TOKEN = "hf_kocurateTestToken1234567890abcdef"


# ------------------------------------------------------------------------------ the fake Hub


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: {path: bytes}}, "commits": [...]}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.fail: dict[str, list[int]] = {}  # route name -> statuses to answer first (consumed)
        self.reject_token = False
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"].get(branch, {})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload=None, headers: dict | None = None):
        body = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def _handle(self, method: str):
        hub = self.hub
        body = self._body()
        path = self.path.split("?")[0]
        query = self.path.split("?")[1] if "?" in self.path else ""
        with hub.lock:
            hub.requests.append({"method": method, "path": self.path, "body": body,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
        route = self._route(method, path)
        if hub.fail.get(route):
            status = hub.fail[route].pop(0)
            return self._send(status, {"error": f"injected {status}"})
        if route not in ("lfs-put",):
            auth = self.headers.get("Authorization")
            if hub.reject_token or auth != f"Bearer {TOKEN}":
                return self._send(401, {"error": "Invalid credentials in Authorization header"},
                                  {"X-Error-Message": "Invalid credentials in Authorization header"})
        return getattr(self, "route_" + route.replace("-", "_"))(path, query, body)

    @staticmethod
    def _route(method: str, path: str) -> str:
        if path == "/api/repos/create":
            return "create"
        if path == "/api/validate-yaml":
            return "validate"
        if "/preupload/" in path:
            return "preupload"
        if path.endswith(".git/info/lfs/objects/batch"):
            return "lfs-batch"
        if path.startswith("/lfs-upload/"):
            return "lfs-put"
        if path.startswith("/lfs-verify/"):
            return "lfs-verify"
        if "/commit/" in path:
            return "commit"
        if "/branch/" in path:
            return "branch"
        if method == "GET" and path.startswith("/api/datasets/"):
            return "info"
        return "unknown"

    def _repo(self, path: str) -> str:
        return "/".join(path.split("/")[3:5])

    def route_unknown(self, path, query, body):
        return self._send(404, {"error": f"no route {path}"})

    def route_create(self, path, query, body):
        data = json.loads(body)
        repo_id = f"{data['organization']}/{data['name']}"
        if repo_id in self.hub.repos:
            return self._send(409, {"error": "You already created this dataset repo", "url": f"{self.hub.url}/datasets/{repo_id}"})
        self.hub.repos[repo_id] = {"private": data.get("visibility") == "private" or data.get("private") is True,
                                   "type": data.get("type"), "branches": {"main": {}}, "commits": []}
        return self._send(200, {"url": f"{self.hub.url}/datasets/{repo_id}", "name": repo_id})

    def route_info(self, path, query, body):
        repo_id = self._repo(path)
        if repo_id not in self.hub.repos:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return self._send(200, {"id": repo_id, "sha": "0" * 40, "private": self.hub.repos[repo_id]["private"]})

    def route_validate(self, path, query, body):
        return self._send(200, {"errors": [], "warnings": []})

    def route_branch(self, path, query, body):
        repo_id, branch = self._repo(path), path.split("/branch/")[1]
        branches = self.hub.repos[repo_id]["branches"]
        if branch in branches:
            return self._send(409, {"error": "Reference already exists"})
        branches[branch] = dict(branches["main"])
        return self._send(200, {})

    def route_preupload(self, path, query, body):
        repo_id = self._repo(path)
        if repo_id not in self.hub.repos:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        files = json.loads(body)["files"]
        return self._send(200, {"files": [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular",
                                           "shouldIgnore": False, "oid": None} for f in files]})

    def route_lfs_batch(self, path, query, body):
        objects = json.loads(body)["objects"]
        out = []
        for o in objects:
            actions = None if o["oid"] in self.hub.lfs else {
                "upload": {"href": f"{self.hub.url}/lfs-upload/{o['oid']}"},
                "verify": {"href": f"{self.hub.url}/lfs-verify/{o['oid']}"},
            }
            out.append({"oid": o["oid"], "size": o["size"], "authenticated": True, **({"actions": actions} if actions else {})})
        return self._send(200, {"transfer": "basic", "objects": out})

    def route_lfs_put(self, path, query, body):
        oid = path.rsplit("/", 1)[1]
        if hashlib.sha256(body).hexdigest() != oid:
            return self._send(400, {"error": "sha256 mismatch"})
        self.hub.lfs[oid] = body
        return self._send(200, {})

    def route_lfs_verify(self, path, query, body):
        oid = path.rsplit("/", 1)[1]
        return self._send(200 if oid in self.hub.lfs else 404, {})

    def route_commit(self, path, query, body):
        repo_id = self._repo(path)
        branch = path.split("/commit/")[1]
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        staged = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    return self._send(422, {"error": f"LFS object {value['oid']} missing"})
                staged[value["path"]] = self.hub.lfs[value["oid"]]
        repo = self.hub.repos[repo_id]
        oid = hashlib.sha1(body).hexdigest()
        if "create_pr=1" in query:
            number = len([c for c in repo["commits"] if c.get("pr")]) + 1
            repo["branches"][f"refs/pr/{number}"] = {**repo["branches"].get(branch, {}), **staged}
            repo["commits"].append({"summary": header["summary"], "files": sorted(staged), "pr": number})
            return self._send(200, {"commitUrl": f"{self.hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid,
                                    "pullRequestUrl": f"{self.hub.url}/datasets/{repo_id}/discussions/{number}"})
        if branch not in repo["branches"]:
            return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        repo["branches"][branch].update(staged)  # atomic: all files of the commit at once
        repo["commits"].append({"summary": header["summary"], "files": sorted(staged), "branch": branch})
        return self._send(200, {"commitUrl": f"{self.hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid})


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """Online, no Xet, no ambient token, fast retries."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(hub, "RETRY_WAIT", 0.01)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return token_file


@pytest.fixture
def fake_hub():
    with FakeHub() as server:
        yield server


KOBEST = Path(__file__).resolve().parent.parent / "samples" / "kobest"
# restates kobest/copa/test/0 whole (premise and both alternatives): decontaminate must catch it
COPA_COPY = ("그녀는 매달 꾸준히 저축했다. 그 결과로 알맞은 것은? 1) 그녀는 일 년 만에 여행 경비를 모았다. "
             "2) 그는 상자로 고양이가 비를 피할 곳을 만들어 주었다.")
ROWS = [
    {"id": "ko-0", "instruction": "한국의 수도는 어디인가요?", "output": "서울입니다."},
    {"id": "ko-1", "instruction": "김치찌개 끓이는 법을 알려 주세요.", "output": "김치와 돼지고기를 볶은 뒤 물을 붓고 끓입니다."},
    {"id": "ko-2", "instruction": "세종대왕의 업적을 요약해 줘.", "output": "한글을 창제했습니다."},
    {"id": "ko-3", "instruction": "다음 문장을 영어로 번역하세요.", "input": "오늘 날씨가 좋네요.", "output": "The weather is nice today."},
    {"id": "ko-4", "instruction": "광합성이란 무엇인가요?", "output": "빛 에너지로 양분을 만드는 과정입니다."},
    {"id": "ko-5", "instruction": "서울에서 부산까지 거리는?", "output": "약 325km입니다."},
    {"id": "ko-8", "instruction": "빈 답을 가진 행", "output": " "},  # removed by drop-empty: removed/ keeps a row to publish
    {"id": "ko-9", "instruction": COPA_COPY, "output": "그녀는 일 년 만에 여행 경비를 모았다."},
]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def make_folder(path: Path, *, decontam=True) -> Path:
    """A folder made by the real steps: drop-empty, then (by default) decontaminate against the
    KoBEST sample folder with the lexical embedder, which removes the COPA copy ko-9."""
    from kocurate.curate import RunContext, run_pipeline
    from kocurate.curate.decontam import Decontaminate
    from kocurate.records import load_records

    source = load_records(_jsonl(path.parent / f"{path.name}-rows.jsonl", ROWS), preset="koalpaca")
    steps = [Decontaminate(data_dir=str(KOBEST), embedder="lexical")] if decontam else []
    ctx = RunContext(render_card=lambda f, m: render_card(f, m, repo_id="me/ko-set"))
    run_pipeline([source], steps, path, ctx=ctx)
    return path


def contaminated_folder(tmp_path: Path) -> Path:
    """A decontaminated folder combined, by the real `normalize` command, with a raw file that
    restates a COPA item: the combination was never checked."""
    clean = make_folder(tmp_path / "clean")
    raw = _jsonl(tmp_path / "raw.jsonl", [{"id": "raw-1", "instruction": COPA_COPY, "output": "모았다."}])
    out = tmp_path / "ko-set"
    result = CliRunner().invoke(main, ["normalize", str(clean), str(raw), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def push_args(folder, *extra, token_file=None, endpoint=None):
    args = ["push-to-hub", str(folder), "me/ko-set"]
    if endpoint:
        args += ["--endpoint", endpoint]
    if token_file:
        args += ["--token-file", str(token_file)]
    return args + list(extra)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    # stderr may also hold huggingface_hub's upload progress bars; the error itself is one line, last
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    return errors[0]


# ------------------------------------------------------------------------------ tests


def test_push_uploads_byte_identical_in_one_commit_and_retries_5xx(tmp_path, hub_env, fake_hub):
    folder = make_folder(tmp_path / "ko-set")
    fake_hub.fail = {"commit": [503], "create": [502], "preupload": [503]}  # preupload: huggingface_hub's own retry
    result = CliRunner().invoke(main, push_args(folder, "--include-benchmark-matches", token_file=hub_env, endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output

    repo = fake_hub.repos["me/ko-set"]
    assert repo["private"] is True and repo["type"] == "dataset"
    assert len(repo["commits"]) == 1  # the 503'd commit attempt did not land; the retry did, once
    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert fake_hub.files("me/ko-set") == local  # every file, byte-identical
    parquet = [k for k in local if k.endswith(".parquet")]
    assert "checks/rows.parquet" in parquet and len(fake_hub.lfs) == len(parquet) == 3  # parquet went through LFS
    assert sum(r["path"].startswith("/api/repos/create") for r in fake_hub.requests) == 2
    assert sum("/commit/" in r["path"] for r in fake_hub.requests) == 2
    assert "retry" in result.output and "503" in result.output

    # the token travels only in the Authorization header
    secret = TOKEN.encode()
    for r in fake_hub.requests:
        assert secret not in r["path"].encode()
        assert secret not in r["body"]
        for name, value in r["headers"].items():
            if name.lower() != "authorization":
                assert TOKEN not in value, name
        if r["path"].startswith("/api/"):
            assert r["headers"].get("authorization") == f"Bearer {TOKEN}"
        if r["path"].endswith("/commit/main"):  # base64 payloads of the commit hold no token either
            for line in r["body"].splitlines():
                value = json.loads(line)["value"]
                if "content" in value:
                    assert secret not in base64.b64decode(value["content"])
    assert TOKEN not in result.output
    assert all(TOKEN.encode() not in p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_401_is_one_line_and_names_the_fix(tmp_path, hub_env, fake_hub):
    folder = make_folder(tmp_path / "ko-set")
    fake_hub.reject_token = True
    result = CliRunner().invoke(main, push_args(folder, token_file=hub_env, endpoint=fake_hub.url))
    line = one_line_error(result)
    assert "401" in line and "--token-file" in line and "HF_TOKEN" in line
    assert TOKEN not in result.output
    assert fake_hub.repos == {}


def test_failed_upload_leaves_remote_unchanged(tmp_path, hub_env, fake_hub):
    folder = make_folder(tmp_path / "ko-set")
    fake_hub.fail = {"commit": [500] * 10}
    result = CliRunner().invoke(main, push_args(folder, "--retries", "2", token_file=hub_env, endpoint=fake_hub.url))
    line = one_line_error(result)
    assert "500" in line and "nothing was committed" in line and "3 attempts" in line
    assert fake_hub.files("me/ko-set") == {} and fake_hub.repos["me/ko-set"]["commits"] == []


def test_revision_branch_and_pull_request(tmp_path, hub_env, fake_hub):
    folder = make_folder(tmp_path / "ko-set")
    runner = CliRunner()
    result = runner.invoke(main, push_args(folder, "--revision", "v2", "--commit-message", "첫 업로드",
                                           token_file=hub_env, endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output
    assert "README.md" in fake_hub.files("me/ko-set", "v2") and fake_hub.files("me/ko-set") == {}
    assert fake_hub.repos["me/ko-set"]["commits"][0]["summary"] == "첫 업로드"
    result = runner.invoke(main, push_args(folder, "--create-pr", token_file=hub_env, endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output
    assert "discussions/1" in result.output
    assert fake_hub.files("me/ko-set") == {}  # a PR does not touch main


def test_dry_run_lists_files_and_sends_nothing(tmp_path, hub_env, fake_hub, monkeypatch):
    import tempfile

    folder = make_folder(tmp_path / "ko-set")
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    # a temp folder of this test's own: another process's push on the machine stages in the shared one
    own_tmp = tmp_path.parent / f"{tmp_path.name}-tmp"
    own_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    staged_before = set(Path(tempfile.gettempdir()).glob("kocurate-push-*"))
    result = CliRunner().invoke(main, push_args(folder, "--dry-run", endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output
    for name in ("README.md", "manifest.json", "data/train-00000-of-00001.parquet", "removed/train-00000-of-00001.parquet",
                 "checks/rows.parquet"):
        assert name in result.output
    assert "KB" in result.output and "nothing was sent" in result.output and "none found" in result.output
    assert fake_hub.requests == []
    # a dry run reads the folder only, and its staging folder is gone when it ends
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    assert set(Path(tempfile.gettempdir()).glob("kocurate-push-*")) == staged_before


@pytest.mark.parametrize("case", ["no-data", "no-card", "bad-repo", "no-token", "contaminated", "bad-template"])
def test_bad_input_fails_in_one_line_before_any_request(case, tmp_path, hub_env, fake_hub):
    folder = contaminated_folder(tmp_path) if case == "contaminated" else make_folder(tmp_path / "ko-set")
    args = push_args(folder, token_file=hub_env, endpoint=fake_hub.url)
    expect = []
    if case == "no-data":
        for f in (folder / "data").iterdir():
            f.unlink()
        expect = ["no data/train-*.parquet", "kocurate normalize"]
    elif case == "no-card":
        (folder / "README.md").unlink()
        expect = ["README.md", "kocurate card"]
    elif case == "bad-repo":
        args[2] = "me/ko--set"
        expect = ["invalid repo id 'me/ko--set'", "NAMESPACE/NAME"]
    elif case == "no-token":
        args = push_args(folder, endpoint=fake_hub.url)
        expect = ["no Hub token", "--token-file", "HF_TOKEN"]
    elif case == "contaminated":
        expect = ["1 of 7 rows in data/ were never checked against kobest", "row raw-1", "--allow-contaminated"]
    elif case == "bad-template":
        args = ["card", str(folder), "--card-template", "no-such-recipe"]
        expect = ["card template 'no-such-recipe' not found", "generic", "koquality"]
    line = one_line_error(CliRunner().invoke(main, args))
    for text in expect:
        assert text in line, line
    assert fake_hub.requests == []


def test_allow_contaminated_publishes_and_says_so(tmp_path, hub_env, fake_hub):
    folder = contaminated_folder(tmp_path)
    local = (folder / "README.md").read_text()
    meta = yaml.safe_load(local.split("---")[1])
    assert "decontaminated" not in meta["tags"] and "Result: **clean**" not in local
    assert "**Not clean: 1 rows in `data/` were never checked**" in local
    result = CliRunner().invoke(main, push_args(folder, "--allow-contaminated", token_file=hub_env, endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output
    assert "1 rows never checked for benchmark contamination" in result.output
    card = fake_hub.files("me/ko-set")["README.md"].decode()
    assert "**Not clean: 1 rows in `data/` were never checked**" in card and "raw-1" in card


def test_benchmark_matches_are_left_out_of_removed_by_default(tmp_path, hub_env, fake_hub):
    import io

    folder = make_folder(tmp_path / "ko-set")
    local_removed = pl.read_parquet(next((folder / "removed").glob("*.parquet")))
    assert set(local_removed["id"]) == {"ko-8", "ko-9"}  # drop-empty and the COPA copy
    result = CliRunner().invoke(main, push_args(folder, token_file=hub_env, endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output
    assert "1 benchmark-matched rows are left out" in result.output and "not published (outside" not in result.output
    files = fake_hub.files("me/ko-set")
    published = pl.read_parquet(io.BytesIO(files["removed/train-00000-of-00001.parquet"]))
    assert published["id"].to_list() == ["ko-8"]  # the near copy of a test item stayed home
    assert COPA_COPY.encode() not in b"".join(files.values())
    card = files["README.md"].decode()
    assert "except the 1 that matched benchmark items" in card
    info = {i["config_name"]: i for i in yaml.safe_load(card.split("---")[1])["dataset_info"]}
    assert info["removed"]["splits"][0]["num_examples"] == 1  # the card describes what was uploaded
    assert "Result: **clean**" in card and "a local sample folder" in card
    assert (folder / "README.md").read_text() != card  # the local card is untouched
    # --exclude-removed: no removed/ at all, and the card says so
    fake_hub.repos.clear()
    result = CliRunner().invoke(main, push_args(folder, "--exclude-removed", "--license", "cc-by-4.0",
                                                token_file=hub_env, endpoint=fake_hub.url))
    assert result.exit_code == 0, result.output
    files = fake_hub.files("me/ko-set")
    assert not any(name.startswith("removed/") for name in files)
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default"] and meta["license"] == "cc-by-4.0"
    assert "The 2 removed rows\nare not published here." in card
    assert validate_card(card, None) == []


def test_token_sources_and_offline_guard(tmp_path, hub_env, monkeypatch):
    assert hub.resolve_token(hub_env) == (TOKEN, f"--token-file {hub_env}")
    assert hub.resolve_token(None) == (None, None)
    monkeypatch.setenv("HF_TOKEN", "hf_fromenv")
    assert hub.resolve_token(None) == ("hf_fromenv", "HF_TOKEN")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(Exception, match="empty"):
        hub.resolve_token(tmp_path / "empty")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    plan = hub.plan_push(make_folder(tmp_path / "ko-set"), "me/ko-set", endpoint="http://127.0.0.1:9")
    try:
        with pytest.raises(Exception, match="HF_HUB_OFFLINE"):
            hub.push(plan, TOKEN)
    finally:
        plan.cleanup()  # its staging folder (the benchmark match is left out of removed/)


# ------------------------------------------------------------------------------ adapter folders (issue 15)


@pytest.fixture(scope="module")
def adapter_folder(tiny_gpt_neox, tmp_path_factory) -> Path:
    """An adapter folder written by the real `kocurate train` (TRL) on the tiny GPT-NeoX, with --merge."""
    import torch

    from kocurate.publish.model_card import render_model_card
    from kocurate.train import train
    from kocurate.train.config import TrainConfig

    root = tmp_path_factory.mktemp("adapter")
    data = _jsonl(root / "rows.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in ROWS[:6] * 2])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainConfig(data=str(data), model=str(tiny_gpt_neox), output=str(root / "lora"), max_steps=2,
                                   batch_size=4, template="koalpaca", save_steps=1, merge=True),
                       progress=False, render_card=render_model_card)
    finally:
        torch.set_num_threads(threads)
    return result.adapter_dir


def _adapter_copy(adapter_folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(adapter_folder, tmp_path / "my-lora", symlinks=True))


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


ADAPTER_UPLOAD = {"README.md", "adapter_config.json", "adapter_model.safetensors", "train_report.json", "train_log.jsonl",
                  "tokenizer.json", "tokenizer_config.json"}


def test_adapter_folder_goes_to_a_model_repo_in_one_commit_without_local_paths(adapter_folder, tmp_path, hub_env, fake_hub):
    folder = _adapter_copy(adapter_folder, tmp_path)
    assert (folder / "checkpoints").is_dir() and (folder / "merged").is_dir() and (folder / "train_run.json").is_file()
    (folder / ".notes").write_text("private")
    before = _snapshot(folder)
    result = CliRunner().invoke(main, ["push-to-hub", str(folder), "me/tiny-lora", "--token-file", str(hub_env),
                                       "--endpoint", fake_hub.url], terminal_width=200)
    assert result.exit_code == 0, result.output
    repo = fake_hub.repos["me/tiny-lora"]
    assert repo["type"] == "model" and repo["private"] is True and len(repo["commits"]) == 1
    assert any(r["path"].startswith("/api/models/me/tiny-lora/commit/main") for r in fake_hub.requests)
    files = fake_hub.files("me/tiny-lora")
    assert set(files) == ADAPTER_UPLOAD  # no checkpoints/, merged/, train_run.json or dotfiles
    for name in ("adapter_model.safetensors", "tokenizer.json", "train_log.jsonl"):
        assert files[name] == before[name]  # byte-identical
    # the uploaded report, config and card name no path of this machine; the local files are unchanged
    for name in ("train_report.json", "adapter_config.json", "README.md"):
        text = files[name].decode()
        assert str(tmp_path.parent) not in text and "/tmp/" not in text, name  # pytest's base folder holds both
    local_report = json.loads(before["train_report.json"])
    assert str(adapter_folder.parent) in before["train_report.json"].decode()  # the local report does name them
    report = json.loads(files["train_report.json"])
    assert report["data_fingerprint"] == local_report["data_fingerprint"] and report["steps"] == 2
    assert report["merged_dir"] == "merged" and report["data"]["path"] == "<local>/rows.jsonl"
    assert report["model"] == f"<local>/{Path(local_report['model']).name}"
    assert json.loads(files["adapter_config.json"])["r"] == json.loads(before["adapter_config.json"])["r"]
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: peft" in card and local_report["data_fingerprint"] in card
    assert _snapshot(folder) == before
    flat = " ".join(result.output.split())  # rich wraps lines
    assert "not published: " in flat and "checkpoints/" in flat and "train_run.json" in flat and ".notes" in flat
    assert TOKEN.encode() not in b"".join(files.values()) and TOKEN not in result.output


def test_adapter_dry_run_lists_files_renders_a_missing_card_and_writes_nothing(adapter_folder, tmp_path, hub_env, fake_hub):
    import tempfile

    folder = _adapter_copy(adapter_folder, tmp_path)
    (folder / "README.md").unlink()
    before = _snapshot(folder)
    staged_before = set(Path(tempfile.gettempdir()).glob("kocurate-push-*"))
    result = CliRunner().invoke(main, ["push-to-hub", str(folder), "me/tiny-lora", "--dry-run", "--include-merged",
                                       "--endpoint", fake_hub.url], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in sorted(ADAPTER_UPLOAD) + ["merged/model.safetensors", "merged/config.json"]:
        assert name in result.output, name
    assert "nothing was sent" in result.output and "(model, private if created)" in result.output
    assert "rendered from train_report.json" in " ".join(result.output.split())  # rich wraps lines
    assert fake_hub.requests == []
    assert _snapshot(folder) == before and not (folder / "README.md").exists()  # no card written by a dry run
    assert set(Path(tempfile.gettempdir()).glob("kocurate-push-*")) == staged_before

    plan = hub.plan_adapter_push(folder, "me/tiny-lora", include_merged=True)
    try:
        card = next(f for f in plan.files if f.path_in_repo == "README.md").local.read_text(encoding="utf-8")
        assert "LoRA adapter" in card and str(tmp_path) not in card
        assert not any(f.path_in_repo.startswith(("checkpoints/", ".")) for f in plan.files)
    finally:
        plan.cleanup()


def test_adapter_push_with_merged_model(adapter_folder, tmp_path, hub_env, fake_hub):
    folder = _adapter_copy(adapter_folder, tmp_path)
    result = CliRunner().invoke(main, ["push-to-hub", str(folder), "me/tiny-lora", "--include-merged",
                                       "--token-file", str(hub_env), "--endpoint", fake_hub.url])
    assert result.exit_code == 0, result.output
    files = fake_hub.files("me/tiny-lora")
    assert files["merged/model.safetensors"] == (folder / "merged" / "model.safetensors").read_bytes()
    assert set(files) - ADAPTER_UPLOAD == {p.relative_to(folder).as_posix() for p in (folder / "merged").iterdir()}
    assert all(str(tmp_path) not in files[n].decode() for n in files if n.endswith(".json"))


@pytest.mark.parametrize("case", ["dataset-flag", "license", "no-weights", "bad-report", "bad-card", "no-merged",
                                  "merged-on-dataset", "token-in-file"])
def test_adapter_bad_input_is_one_line_before_any_request(case, adapter_folder, tmp_path, hub_env, fake_hub):
    import shutil

    folder = _adapter_copy(adapter_folder, tmp_path)
    args = ["push-to-hub", str(folder), "me/tiny-lora", "--token-file", str(hub_env), "--endpoint", fake_hub.url]
    if case == "dataset-flag":
        args.append("--exclude-removed")
        expect = ["--exclude-removed applies to dataset folders", "adapter_config.json"]
    elif case == "license":
        args += ["--license", "mit"]
        expect = ["--license applies to dataset folders", "README.md"]
    elif case == "no-weights":
        (folder / "adapter_model.safetensors").unlink()
        expect = ["no adapter_model.safetensors", "--resume"]
    elif case == "bad-report":
        (folder / "train_report.json").write_text("{not json")
        expect = ["train_report.json: not readable JSON", "--resume"]
    elif case == "bad-card":
        (folder / "README.md").write_text("---\nlicense: [unclosed\n---\n# card\n")
        expect = ["README.md: its YAML metadata does not parse", "delete README.md"]
    elif case == "no-merged":
        shutil.rmtree(folder / "merged")
        args.append("--include-merged")
        expect = ["no merged/ model", "--merge"]
    elif case == "merged-on-dataset":
        args = ["push-to-hub", str(make_folder(tmp_path / "ko-set")), "me/ko-set", "--include-merged", "--dry-run"]
        expect = ["--include-merged applies to adapter folders"]
    else:  # the token pasted into a file that goes up: refused, nothing sent
        tok = folder / "tokenizer.json"
        tok.write_text(tok.read_text(encoding="utf-8").replace('"version"', f'"note": "{TOKEN}", "version"', 1), encoding="utf-8")
        expect = ["tokenizer.json: holds your Hub token", "nothing was sent"]
    line = one_line_error(CliRunner().invoke(main, args))
    for text in expect:
        assert text in line, line
    assert TOKEN not in line
    assert fake_hub.requests == []


def test_tokens_and_local_paths_in_the_card_are_scrubbed_from_the_upload_only(adapter_folder, tmp_path, hub_env):
    folder = _adapter_copy(adapter_folder, tmp_path)
    readme = folder / "README.md"
    local = readme.read_text(encoding="utf-8") + f"\nmy notes: {folder}/checkpoints and hf_{'x' * 34}\n"
    readme.write_text(local, encoding="utf-8")
    plan = hub.plan_adapter_push(folder, "me/tiny-lora")
    try:
        card = next(f for f in plan.files if f.path_in_repo == "README.md").local.read_text(encoding="utf-8")
        assert "my notes: ./checkpoints and hf_***" in card and str(tmp_path) not in card
        assert readme.read_text(encoding="utf-8") == local
    finally:
        plan.cleanup()
