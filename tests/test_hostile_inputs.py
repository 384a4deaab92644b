"""Issue 15, groups 2 and 3: hostile and careless input is one line and exit code 2, bounded in time and memory; outputs are safe.

The fuzz test at the end draws >= 300 malformed files and command lines from a fixed seed and
runs each in-process through typer's CliRunner.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from planner.cli import app
from planner.errors import InputError
from planner.files import MAX_YAML_NODES, exclusive_lock, write_atomically
from planner.studies import neutralise_formulas, parse_study, read_table, write_table

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = yaml.safe_load((ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml").read_text())
TRAINING = yaml.safe_load((ROOT / "scenarios" / "deepseek-7b-lora.yaml").read_text())
STUDY = yaml.safe_load((ROOT / "scenarios" / "studies" / "deepseek-67b-context-precision.yaml").read_text())
FLEET = yaml.safe_load((ROOT / "scenarios" / "fleets" / "team-fleet.yaml").read_text())
CONFIG = json.loads((ROOT / "catalogs" / "models" / "llama-2-7b.json").read_text())
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line_exit_2(result) -> str:
    """The single line a bad input gives, after checking exit code 2 and that no exception escaped."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output.strip()


def _dump(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


# ---- files that are not what they claim -------------------------------------------------------


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: *a8\n")
    started = time.perf_counter()
    line = one_line_exit_2(run("validate", str(path)))
    assert f"more than {MAX_YAML_NODES:,} values" in line and time.perf_counter() - started < 5


@pytest.mark.parametrize("name, content", [
    ("latin1.yaml", "name: café\n".encode("latin-1")), ("utf16.yaml", "name: x\n".encode("utf-16")),
    ("binary.yaml", bytes(range(256))), ("deep.yaml", b"a: " + b"[" * 300 + b"]" * 300),
    ("deep.json", b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"), ("recursive.yaml", b"a: &a [*a]\n"),
    ("list.yaml", b"- 1\n- 2\n"), ("empty.yaml", b""), ("python.yaml", b"name: !!python/object/apply:os.system [ls]\n"),
])
def test_unreadable_content_is_one_line(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for command in ("validate", "solve", "fleet", "sweep", "report"):
        assert str(path) in one_line_exit_2(run(command, str(path)))


def test_paths_that_are_not_files(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert "is a directory" in one_line_exit_2(run("validate", str(tmp_path / "dir.yaml")))
    assert "not a regular file" in one_line_exit_2(run("validate", str(fifo)))  # refused before a blocking read
    assert "not a regular file" in one_line_exit_2(run("validate", "/dev/zero"))
    assert "file name too long" in one_line_exit_2(run("validate", str(tmp_path / ("x" * 300 + ".yaml"))))
    assert "not found" in one_line_exit_2(run("model", "show", str(tmp_path / "missing.json")))
    line = one_line_exit_2(run("memory", "--model", "x" * 100_000, "--gpu", "H100-SXM"))  # echoed names are cut
    assert len(line) < 2000


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _dump(tmp_path / "s.yaml", SCENARIO)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads whatever the mode: make the open fail as it would for a user
        real_open = Path.open

        def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", denied)
    assert "permission denied" in one_line_exit_2(run("validate", str(path)))


@pytest.mark.parametrize("change, expected", [
    ({"num_attention_heads": "abc"}, "num_attention_heads: expected a number"),
    ({"hidden_size": 0}, "hidden_size: must be > 0"),
    ({"num_hidden_layers": 100_000_000}, "num_layers: Input should be less than or equal to 10000"),
    ({"intermediate_size": True}, "intermediate_size: expected a number"),
    ({"vocab_size": 1e40}, "out of range"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings: expected true or false"),
    ({"model_type": "mpt", "d_model": 4096, "n_heads": 0, "n_layers": 2}, "n_heads: must be > 0"),
    ({"model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 2, "expansion_ratio": "4"}, "expansion_ratio: expected a number"),
])
def test_config_json_fields_of_the_wrong_type(tmp_path: Path, change: dict, expected: str) -> None:
    path = _dump(tmp_path / "config.json", {**CONFIG, **change})
    started = time.perf_counter()
    assert expected in one_line_exit_2(run("model", "show", str(path)))
    assert time.perf_counter() - started < 5


# ---- numbers at the schema's limits, size guards --------------------------------------------------


@pytest.mark.parametrize("section, key, value, expected", [
    ("constraints", "inventory", {"H100-SXM": 1e40}, "constraints.inventory.H100-SXM"),
    ("constraints", "inventory", {"H100-SXM": 10**7}, "between 0 and 1,000,000"),
    ("constraints", "budget_usd", 1e12, "a serving budget is USD per hour, at most 1e+07"),
    ("constraints", "budget_usd", 1e13, "less than or equal to 1000000000000"),
    ("search", "batch_per_replica", list(range(1, 20_001)), "at most 64 items"),
    ("search", "max_gpus", 10**9, "less than or equal to 1000000"),
])
def test_numbers_beyond_the_schema_limits(tmp_path: Path, section: str, key: str, value: Any, expected: str) -> None:
    data = copy.deepcopy(SCENARIO)
    data.setdefault(section, {})[key] = value
    assert expected in one_line_exit_2(run("solve", str(_dump(tmp_path / "s.json", data))))


def test_latency_and_batch_limits(tmp_path: Path) -> None:
    data = copy.deepcopy(SCENARIO)
    data["workload"]["slo"]["ttft_s"] = 1e308
    assert "workload.slo.ttft_s: at most 86400 s" in one_line_exit_2(run("solve", str(_dump(tmp_path / "a.yaml", data))))
    train = copy.deepcopy(TRAINING)
    train["workload"]["global_batch_seqs"] = 10**18
    started = time.perf_counter()
    assert "global_batch_seqs" in one_line_exit_2(run("solve", str(_dump(tmp_path / "b.yaml", train))))
    assert time.perf_counter() - started < 5


def test_at_the_limits_the_solver_still_answers(tmp_path: Path) -> None:
    data = copy.deepcopy(SCENARIO)
    data["search"]["gpus"] = ["H100-SXM", "L40S"]
    data["constraints"] = {"budget_usd": 1e7, "inventory": {"H100-SXM": 1_000_000}}
    data["objective"] = "max_throughput"
    result = run("solve", str(_dump(tmp_path / "s.yaml", data)), "--time-limit", "10", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] in ("OPTIMAL", "FEASIBLE")


def test_huge_study_grid_is_refused_with_its_size(tmp_path: Path) -> None:
    study = {"name": "g", "base": SCENARIO, "axes": {"workload.prompt_tokens": list(range(1, 1001)),
                                                     "workload.output_tokens": list(range(1, 1001))}}
    started = time.perf_counter()
    line = one_line_exit_2(run("sweep", str(_dump(tmp_path / "g.yaml", study))))
    assert "1,000,000 cases (1000 x 1000), more than 10,000; narrow an axis" in line and time.perf_counter() - started < 5


# ---- command-line values ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
@pytest.mark.parametrize("command", ["solve", "fleet", "sweep", "report"])
def test_time_limit_must_be_positive_and_finite(command: str, value: str) -> None:
    path = {"solve": "deepseek-67b-serving-h100.yaml", "report": "deepseek-67b-serving-h100.yaml",
            "fleet": "fleets/team-fleet.yaml", "sweep": "studies/llama-70b-price-sensitivity.yaml"}[command]
    line = one_line_exit_2(run(command, str(ROOT / "scenarios" / path), "--time-limit", value))
    assert "--time-limit" in line


@pytest.mark.parametrize("args, expected", [
    (["--dp", "0"], "--dp"), (["--micro-batch", "0"], "--micro-batch"), (["--tp", "3"], "does not divide"),
    (["--set", "nonsense"], "--set: 'nonsense' is not key=value"), (["--set", "gpu_memory_utilization=2"], "less than or equal to 1"),
    (["--set", "no_such_assumption=1"], "no_such_assumption"), (["--interleave", "0"], "--interleave"),
    (["--tokens", "-5"], "--tokens"),
])
def test_memory_flags(args: list[str], expected: str) -> None:
    line = one_line_exit_2(run("memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--kind", "training", "--tp", "8", *args))
    assert expected in line


@pytest.mark.parametrize("address", ["nonsense", "tcp://bad host:1", "tcp://host:99999", "http://[::1"])
def test_malformed_scheduler_fails_fast(address: str) -> None:
    started = time.perf_counter()
    line = one_line_exit_2(run("sweep", str(ROOT / "scenarios" / "studies" / "llama-70b-price-sensitivity.yaml"), "--scheduler", address))
    assert "--scheduler" in line and time.perf_counter() - started < 5


def test_a_study_file_cannot_choose_the_scheduler(tmp_path: Path) -> None:
    path = _dump(tmp_path / "s.yaml", {**STUDY, "scheduler": "tcp://attacker.example:8786"})
    line = one_line_exit_2(run("sweep", str(path)))
    assert "taken only from --scheduler" in line and "--allow-study-scheduler" in line


def test_sweep_where_every_case_errors_exits_2(tmp_path: Path) -> None:
    study = {"name": "e", "base": SCENARIO, "axes": {"pricing.provider": ["nobody-a", "nobody-b"]}}
    path = _dump(tmp_path / "e.yaml", {**study, "axes": {"search.gpus": [["H100-SXM"], ["H200"]],
                                                         "constraints.budget_usd": [0.001]}})
    result = run("sweep", str(path), "--workers", "1")
    assert result.exit_code == 1 and "no case of the 2 has a feasible plan" in result.output
    bad = {**study, "axes": {"workload.prompt_tokens": [10**12, 10**13]}}  # each case fails on its own, at solve time
    bad["base"] = {**SCENARIO, "workload": {**SCENARIO["workload"], "model": str(tmp_path / "missing-config.json")}}
    result = run("sweep", str(_dump(tmp_path / "bad.yaml", {"name": "bad", "base": SCENARIO,
                                                            "cases": [{"search.gpus": ["NOPE-1"]}, {"search.gpus": ["NOPE-2"]}]})),
                 "--workers", "1")
    assert result.exit_code == 2 and "every one of the 2 cases failed" in result.output


# ---- names shown in terminals, charts and reports --------------------------------------------------------


@pytest.mark.parametrize("name", ["[/bold]", "[link=https://evil.example]click[/link]", "bad $\\frac{$ name", "[red]x"])
def test_names_are_text_everywhere(tmp_path: Path, name: str) -> None:
    data = {**SCENARIO, "name": name}
    result = run("solve", str(_dump(tmp_path / "s.yaml", data)), "--time-limit", "10")
    assert result.exit_code == 0, result.output
    assert name in result.output  # printed literally: no markup parsed, no hyperlink written
    assert "\x1b]8;" not in result.output
    study = {"name": name, "base": SCENARIO, "axes": {"workload.prompt_tokens": [1024]}}
    result = run("report", str(_dump(tmp_path / "study.yaml", study)), "-o", str(tmp_path / "r.html"), "--time-limit", "10")
    assert result.exit_code == 0, result.output


# ---- writing ---------------------------------------------------------------------------------------------


def test_full_or_read_only_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError, match="no space left on the device; nothing was written"):
        write_atomically(tmp_path / "out.csv", lambda stream: stream.write(b"x"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    result = run("report", str(ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml"), "-o", "/proc/r.html")
    assert "/proc/r.html" in one_line_exit_2(result)


def test_csv_cells_cannot_be_formulas(tmp_path: Path) -> None:
    frame = pd.DataFrame({"case_id": ["a", "b"], "status": ["error", "optimal"], "reason": ["=HYPERLINK(\"x\")", "@SUM(1)"],
                          "value": [-1.5, 2.0]})
    written = neutralise_formulas(frame)
    assert list(written["reason"]) == ["'=HYPERLINK(\"x\")", "'@SUM(1)"] and list(written["value"]) == [-1.5, 2.0]
    path = tmp_path / "r.csv"
    write_table(frame, path)
    text = path.read_text()
    assert "\n" + "b,optimal,'@SUM(1)" in text and ",=" not in text
    assert read_table(path)["a"]["reason"] == "=HYPERLINK(\"x\")"  # resuming reads the value back exactly


def test_two_runs_cannot_write_one_output(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    with exclusive_lock(out):
        with pytest.raises(InputError, match="another run is writing this output"):
            with exclusive_lock(out):
                pass
    with exclusive_lock(out):  # released: free again, and no lock file left behind
        pass
    assert list(tmp_path.iterdir()) == []


def test_pool_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from planner.studies import _die_with_parent
        pool = ProcessPoolExecutor(max_workers=1, initializer=_die_with_parent)
        print(pool.submit(os.getpid).result(), flush=True)
        time.sleep(60)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(worker, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the pool worker outlived its SIGKILLed parent")


# ---- catalogs and paths ------------------------------------------------------------------------------------


ABSOLUTE = re.compile(r"(?:^|[\s\"'(,;=])(?:/(?:work|home|tmp|Users|root|mnt|var|opt|srv|private)/|~/|[A-Za-z]:\\\\)")


def test_catalogs_cite_no_local_absolute_path() -> None:
    offenders = []
    for path in sorted((ROOT / "catalogs").rglob("*")):
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if ABSOLUTE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def test_every_path_is_relative_to_the_file_that_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.json").write_text(json.dumps(CONFIG))
    (tmp_path / "prices.csv").write_text((ROOT / "catalogs" / "prices.csv").read_text())
    scenario = {**SCENARIO, "workload": {**SCENARIO["workload"], "model": "models/mine.json"},
                "pricing": {"price_file": "prices.csv"}}
    _dump(tmp_path / "s.yaml", scenario)
    (tmp_path / "studies").mkdir()
    _dump(tmp_path / "studies" / "st.yaml", {"name": "st", "base": "../s.yaml", "axes": {"workload.prompt_tokens": [512]}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("validate", str(tmp_path / "s.yaml"), str(tmp_path / "studies" / "st.yaml"))
    assert result.exit_code == 0, result.output
    assert "mine.json" in result.output
    missing = {**scenario, "workload": {**scenario["workload"], "model": "models/absent.json"}}
    line = one_line_exit_2(run("validate", str(_dump(tmp_path / "m.yaml", missing))))
    assert str(tmp_path / "m.yaml") in line and "workload.model" in line and str(tmp_path / "models" / "absent.json") in line


# ---- the fuzz test ------------------------------------------------------------------------------------------


HOSTILE_NUMBERS = [True, False, "abc", [1], {"a": 1}, "1e400", -1, 0.0, 1e308, -1e308, "", "NaN"]
HOSTILE_TEXT = [{"a": 1}, [[]], 7, True, ""]


def _leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _leaves(value, (*path, i))
    else:
        out.append((path, node))
    return out


def _mappings(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path] if isinstance(node, dict) else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _mappings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _mappings(value, (*path, i))
    return out


def _set(data: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _invalid_value(rng: random.Random, path: tuple, leaf: Any) -> Any | None:
    """A value that cannot be valid at `path` (None when no such value is known for it)."""
    last = path[-1] if path else None
    if last in ("description",):
        return rng.choice([{"a": 1}, [[]]])
    if isinstance(leaf, bool):
        return rng.choice(["maybe", 2, [True], {"a": 1}])
    if isinstance(leaf, (int, float)):
        value = rng.choice(HOSTILE_NUMBERS)
        if value in (0.0, -1) and last in ("start_week", "ep", "lead_time_weeks"):
            return "abc"
        if value in (1e308, -1e308, 0.0, -1) and any(p in ("assumptions", "axes", "cases") for p in path):
            return "abc"
        return value
    if isinstance(leaf, str) and _numeric_text(leaf):  # YAML 1.1 reads 200e6 as text; the schema reads it as a number
        return rng.choice([v for v in HOSTILE_NUMBERS if not isinstance(v, bool)])
    if isinstance(leaf, str):
        if last == "model" or (path and path[0] in ("axes", "cases")):
            return rng.choice(["NOPE-" + "x" * rng.randint(1, 300), "../../../../etc/passwd.json", {"a": 1}])
        return rng.choice(HOSTILE_TEXT)
    return None


def _malformed_file(rng: random.Random, i: int, tmp_path: Path) -> tuple[list[str], str]:
    """One malformed file and the command that reads it."""
    kind = rng.choice(["scenario", "training", "study", "fleet", "config"])
    data = {"scenario": SCENARIO, "training": TRAINING, "study": STUDY, "fleet": FLEET, "config": CONFIG}[kind]
    suffix = ".json" if kind == "config" or rng.random() < 0.3 else ".yaml"
    path = tmp_path / f"f{i}{suffix}"
    how = rng.choice(["unknown_key", "bad_value", "bad_value", "delete", "raw"] if kind != "config" else ["bad_value", "delete", "raw"])
    if how == "unknown_key" and kind != "config":
        where = rng.choice([p for p in _mappings(data) if not (p and p[-1] in ("assumptions",))])
        mutated = _set(data, (*where, "zz_unknown"), 1) if where else {**data, "zz_unknown": 1}
        _dump(path, mutated)
    elif how == "bad_value":
        leaves = [(p, v) for p, v in _leaves(data) if p and _invalid_value(rng, p, v) is not None]
        if kind == "config":
            leaves = [(p, v) for p, v in leaves if p[0] in ("hidden_size", "num_attention_heads", "num_hidden_layers",
                                                              "intermediate_size", "vocab_size", "num_key_value_heads")]
        leaf_path, leaf = rng.choice(leaves)
        value = _invalid_value(rng, leaf_path, leaf)
        if kind == "config" and value in (True, False, 0.0, -1, "", "NaN", "1e400", "abc", [1], {"a": 1}, 1e308, -1e308):
            value = rng.choice([True, "abc", 0, -5, 1e15, [1]])
        _dump(path, _set(data, leaf_path, value))
    elif how == "delete":
        required = {"scenario": [("name",), ("workload",), ("workload", "kind"), ("workload", "model"), ("workload", "prompt_tokens")],
                    "training": [("workload", "tokens"), ("workload", "seq_len"), ("workload", "global_batch_seqs")],
                    "study": [("base",), ("axes",)], "fleet": [("horizon_weeks",), ("workloads",)],
                    "config": [("hidden_size",), ("num_attention_heads",), ("vocab_size",), ("num_hidden_layers",)]}[kind]
        target = rng.choice(required)
        mutated = copy.deepcopy(data)
        node = mutated
        for part in target[:-1]:
            node = node[part]
        del node[target[-1]]
        _dump(path, mutated)
    else:
        text = (json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)).encode()
        cut = rng.randrange(1, len(text))
        corruption = rng.choice([b"\xff\xfe", b"\x00", b"\xc3", b"\n" + text.split(b"\n")[0] + b"\n"])
        if corruption.startswith(b"\n") and suffix == ".yaml":
            path.write_bytes(text + corruption)  # a repeated top-level key
        elif suffix == ".json" and corruption.startswith(b"\n"):
            path.write_bytes(text[:-1] + b"," + text[1:])  # every key twice
        else:
            path.write_bytes(text[:cut] + corruption + text[cut:])
    command = ["model", "show", str(path)] if kind == "config" else [rng.choice(["validate", "validate", "solve"]), str(path)]
    if kind in ("study", "fleet") and command[0] == "solve":
        command[0] = "validate"
    return command, f"{kind}/{how}"


BAD_ARGS = [
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--tp", "0"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--tp", "5"],
    ["memory", "--model", "llama-2-70b", "--gpu", "NOPE"],
    ["memory", "--model", "NOPE", "--gpu", "H100-SXM"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--weights", "int3"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--kind", "serving"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--batch", "-1"],
    ["memory", "--model", "llama-2-70b", "--gpu", "A100-80GB", "--kv", "fp8"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--kind", "training", "--ckpt", "sometimes"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--kind", "training", "--zero", "9"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--kind", "training", "--global-batch", "3", "--dp", "2"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--set", "=1"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--pp", "1000"],
    ["memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--ep", "2"],
    ["memory", "--model", "/dev/zero", "--gpu", "H100-SXM"],
    ["memory", "--model", "x" * 5000 + ".json", "--gpu", "H100-SXM"],
    ["solve", str(ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml"), "--top", "-1"],
    ["solve", str(ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml"), "--time-limit", "-0.5"],
    ["solve", "/nonexistent/scenario.yaml"],
    ["sweep", str(ROOT / "scenarios" / "studies" / "llama-70b-price-sensitivity.yaml"), "-o", "/tmp/x.xlsx"],
    ["sweep", str(ROOT / "scenarios" / "studies" / "llama-70b-price-sensitivity.yaml"), "--workers", "0"],
    ["sweep", str(ROOT / "scenarios" / "studies" / "llama-70b-price-sensitivity.yaml"), "-o", "/nonexistent/dir/r.csv"],
    ["report", str(ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml"), "-o", "r.pdf"],
    ["model", "show", "NOPE-model"],
    ["catalog", "prices", "--price-file", "/dev/zero"],
]


def test_fuzz_malformed_inputs(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    inputs = [_malformed_file(rng, i, tmp_path) for i in range(330)] + [(args, "args") for args in BAD_ARGS]
    assert len(inputs) >= 300
    slowest = 0.0
    for command, label in inputs:
        started = time.perf_counter()
        result = runner.invoke(app, command)
        elapsed = time.perf_counter() - started
        slowest = max(slowest, elapsed)
        assert result.exception is None or isinstance(result.exception, SystemExit), (label, command, repr(result.exception))
        assert "Traceback" not in result.output, (label, command, result.output)
        assert result.exit_code == 2, (label, command, result.output[-500:])
        assert elapsed < 20, (label, command, elapsed)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    assert peak_gib < 1.5, peak_gib


def test_a_huge_search_is_counted_and_refused_before_any_work(tmp_path: Path) -> None:
    from planner.catalog import resolve_model
    from planner.guards import count_layouts
    from planner.scenario import load_scenario
    from planner.solver import solve

    for path in sorted((ROOT / "scenarios").glob("*.yaml")):  # the count is an upper bound of what solve evaluates
        scenario = load_scenario(path)
        counted, _ = count_layouts(scenario, resolve_model(scenario.workload.model))
        assert solve(scenario, time_limit_s=10, alternatives=False).candidates <= counted <= 10_000
    data = yaml.safe_load((ROOT / "scenarios" / "llama-3.1-70b-pretrain.yaml").read_text())
    data["search"] = {"micro_batches": list(range(1, 65)), "pp": list(range(1, 65))}
    data["workload"]["global_batch_tolerance"] = 0.5
    started = time.perf_counter()
    for command in ("solve", "validate"):
        line = one_line_exit_2(run(command, str(_dump(tmp_path / "big.yaml", data))))
        assert "layouts to evaluate" in line and "narrow search.gpus" in line
    assert time.perf_counter() - started < 5


def test_an_oversized_study_case_is_an_error_row_not_minutes_of_work(tmp_path: Path) -> None:
    from planner.studies import load_study, run_study

    base = yaml.safe_load((ROOT / "scenarios" / "deepseek-7b-lora.yaml").read_text())
    study = {"name": "sizes", "base": base, "cases": [
        {"search.micro_batches": [1]},
        {"search.micro_batches": list(range(1, 65)), "search.pp": list(range(1, 65)), "search.gpus": None,
         "search.max_gpus": None, "workload.global_batch_tolerance": 0.5, "workload.global_batch_seqs": 4096},
    ]}
    started = time.perf_counter()
    frame = run_study(load_study(_dump(tmp_path / "s.yaml", study)), workers=1)
    assert list(frame["status"].astype(str)) == ["optimal", "error"]
    assert "layouts to evaluate" in frame["reason"][1] and time.perf_counter() - started < 20


@pytest.mark.parametrize("text, gone", [
    ("[click](javascript:alert(1))", "javascript:"), ("![x](data:image/svg+xml;base64,PHN2Zz4=)", "data:image"),
    ("[x](//evil.example/a)", "//evil"), ("<https://evil.example>", "https://"), ("[x](vbscript:msgbox)", "vbscript:"),
])
def test_markdown_twin_drops_unsafe_links(text: str, gone: str) -> None:
    from planner.report import _md

    safe = _md(text)
    assert gone not in safe and "](" not in safe.replace("\\](", "")  # no live link syntax either
    assert _md("training data: 1T tokens, metadata: ok") == "training data: 1T tokens, metadata: ok"  # prose is kept
