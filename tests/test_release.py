"""The release after the gate: `skinscan-edge bundle` ships the file the report recommends, refuses a
file the gate failed (or stamps it FAILED with --allow-failed), and breaks latency ties toward the
full-integer file; the run files are typed, versioned and published as JSON Schemas."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import cli
from skinscan_edge.core import runfiles
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.release.choose import choose
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import sha256_file, write_json

REPO = Path(__file__).resolve().parents[1]
LABELS = ["a", "b"]


# --- the choice, on run files written by hand -----------------------------------------------------
def _fake_run(root: Path, exports: dict[str, bool], p50: dict[str, float], phone: dict[str, float] | None = None,
              failed: tuple[str, ...] = ()) -> RunDir:
    """A run with manifest, evaluate.json and benchmark.json only: what choose() reads."""
    run = RunDir(root)
    run.exports.mkdir(parents=True)
    files = {"tflite-int8": "model_int8.tflite", "tflite-dynamic": "model_dynamic_range.tflite",
             "tflite-fp16": "model_fp16.tflite", "onnx-int8": "model_int8.onnx"}
    entries = []
    for name in exports:
        data = name.encode() * 10
        (run.exports / files[name]).write_bytes(data)
        entries.append({"name": name, "file": files[name], "format": name.split("-")[0],
                        "precision": name.split("-", 1)[1], "size_bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    runfiles.save(runfiles.Manifest, run.manifest_path, {"run": str(root), "created": "now", "exports": entries})
    models = [{"name": "keras", "format": "keras", "precision": "fp32", "accuracy": 0.9, "delta_accuracy_pp": 0.0,
               "top1_agreement": 1.0}]
    models += [{"name": n, "format": n.split("-")[0], "precision": "int8", "accuracy": 0.8 if n in failed else 0.9,
                "delta_accuracy_pp": -10.0 if n in failed else 0.0, "top1_agreement": 0.9} for n in exports if exports[n]]
    failures = [{"model": n, "metric": "accuracy_drop_pp", "limit": 1.0, "value": 10.0} for n in failed]
    runfiles.save(runfiles.EvaluateReport, run.evaluate_path, {
        "run": str(root), "split": "test", "created": "now", "labels": LABELS, "num_images": 10, "img_size": 75,
        "manifest_sha256": sha256_file(run.manifest_path), "models": models,
        "gate": {"passed": not failures, "failures": failures, "max_accuracy_drop_pp": 1.0, "max_recall_drop_pp": 2.0}})
    rows = [{"model": n, "device": "cpu", "threads": t, "latency_p50_ms": ms * (2 if t == 1 else 1)}
            for n, ms in p50.items() for t in (1, 2)]
    rows += [{"model": n, "device": "android:Pixel 7", "threads": 4, "latency_p50_ms": ms} for n, ms in (phone or {}).items()]
    runfiles.save(runfiles.BenchmarkReport, run.benchmark_path,
                  {"run": str(root), "created": "now", "img_size": 75, "config": {}, "rows": rows})
    return run


def test_a_tie_within_the_noise_goes_to_the_full_integer_file(tmp_path):
    """The issue's real-photo figures: dynamic 35.17 ms, int8 35.46 ms: a tie, and int8 ships."""
    run = _fake_run(tmp_path, {"tflite-int8": True, "tflite-dynamic": True}, {"tflite-int8": 35.46, "tflite-dynamic": 35.17})
    choice = choose(run)
    assert choice.name == "tflite-int8" and choice.tie == ["tflite-int8", "tflite-dynamic"]
    assert "full-integer" in choice.why and "35.17" in choice.why and "2 thread(s)" in choice.latency_source


def test_beyond_the_noise_the_fastest_ships_and_onnx_never_does(tmp_path):
    run = _fake_run(tmp_path, {"tflite-int8": True, "tflite-dynamic": True, "onnx-int8": True},
                    {"tflite-int8": 40.0, "tflite-dynamic": 30.0, "onnx-int8": 5.0})
    assert choose(run).name == "tflite-dynamic"
    assert choose(run, require="full-integer").name == "tflite-int8"


def test_a_phones_latency_decides_over_the_desktops(tmp_path):
    run = _fake_run(tmp_path, {"tflite-int8": True, "tflite-dynamic": True}, {"tflite-int8": 40.0, "tflite-dynamic": 30.0},
                    phone={"tflite-int8": 20.0, "tflite-dynamic": 60.0})
    choice = choose(run)
    assert choice.name == "tflite-int8" and choice.latency_source == "phone (Pixel 7)"


def test_a_failed_or_unevaluated_file_is_refused_unless_allowed(tmp_path):
    run = _fake_run(tmp_path, {"tflite-int8": True, "tflite-dynamic": True, "tflite-fp16": False},
                    {"tflite-int8": 10.0, "tflite-dynamic": 30.0}, failed=("tflite-int8",))
    assert choose(run).name == "tflite-dynamic"  # the faster int8 file failed the gate
    with pytest.raises(SkinscanError, match=r"tflite-int8 failed the gate \(tflite-int8: accuracy dropped 10.00 pp"):
        choose(run, model="tflite-int8")
    with pytest.raises(SkinscanError, match="tflite-fp16 was never evaluated"):
        choose(run, model="tflite-fp16")
    allowed = choose(run, model="tflite-int8", allow_failed=True)
    assert allowed.verdict.verdict == "failed" and allowed.verdict.figures["failures"][0]["value"] == 10.0
    with pytest.raises(SkinscanError, match="no full-integer TFLite export passed the gate"):
        choose(run, require="full-integer")


def test_a_stale_evaluation_counts_as_none(tmp_path):
    """evaluate.json of another manifest says nothing about these files."""
    run = _fake_run(tmp_path, {"tflite-int8": True}, {"tflite-int8": 10.0})
    manifest = json.loads(run.manifest_path.read_text())
    manifest["created"] = "later"
    write_json(run.manifest_path, manifest)
    with pytest.raises(SkinscanError, match="not evaluated \\(or changed since\\)"):
        choose(run)


# --- the real flow on the session's pipeline run ------------------------------------------------
def _recommended(html: str) -> str:
    return re.search(r"Ship <code>([^<]+)</code>", html).group(1)


def test_the_bundle_ships_the_file_the_report_recommends(piped, tmp_path):
    run, _ = piped
    out = tmp_path / "bundle"
    done = cli(["bundle", run, "--out", out], timeout=300)
    assert done.exit_code == 0, done.output
    sidecar = json.loads((out / "metadata.json").read_text())
    recommended = _recommended((run / "reports" / "index.html").read_text())
    manifest = {e["name"]: e for e in json.loads((run / "exports" / "manifest.json").read_text())["exports"]}
    assert sidecar["source_export"] == recommended and manifest[recommended]["format"] == "tflite"
    assert sidecar["source_sha256"] == manifest[recommended]["sha256"] == sha256_file(run / "exports" / manifest[recommended]["file"])
    evaluation = json.loads((run / "reports" / "evaluate.json").read_text())
    row = next(m for m in evaluation["models"] if m["name"] == recommended)
    gate = sidecar["gate"]
    assert gate["verdict"] == "passed" and gate["accuracy"] == row["accuracy"] and gate["images"] == evaluation["num_images"]
    assert gate["top1_agreement"] == row["top1_agreement"] and gate["worst_recall_drop_pp"] == row["worst_recall_drop_pp"]
    readme = (out / "README.md").read_text()
    assert "GATE" not in readme.split("## Input contract")[0] and "**PASSED**" in readme
    assert f"bundled {recommended} (gate passed)" in done.stdout


def test_a_file_the_gate_failed_is_refused_in_one_line_then_stamped_failed(piped, tmp_path):
    src, _ = piped
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("tensorboard", "backup", "checkpoints"))
    strict = cli(["evaluate", run, "--model", "tflite-int8,tflite-fp32", "--max-accuracy-drop", 0,
                  "--max-recall-drop", 0, "--min-agreement", 1.0, "--bootstrap", 20], timeout=600)
    evaluation = json.loads((run / "reports" / "evaluate.json").read_text())
    assert strict.exit_code == 1 and {f["model"] for f in evaluation["gate"]["failures"]} == {"tflite-int8"}, strict.output
    out = tmp_path / "bundle"
    refused = cli(["bundle", run, "--out", out, "--model", "tflite-int8"], timeout=300)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "tflite-int8 failed the gate" in refused.stderr
    assert not out.exists()
    stamped = cli(["bundle", run, "--out", out, "--model", "tflite-int8", "--allow-failed"], timeout=300)
    assert stamped.exit_code == 0, stamped.output
    readme = (out / "README.md").read_text().splitlines()
    assert any("GATE FAILED" in line for line in readme[:6])
    sidecar = json.loads((out / "metadata.json").read_text())
    assert sidecar["gate"]["verdict"] == "failed" and sidecar["gate"]["failures"][0]["model"] == "tflite-int8"
    assert (out / "MODEL_CARD.md").read_text().startswith("> **GATE FAILED")
    # The report, reading the same files, recommends a file that passed, never this one.
    cli(["report", run], timeout=300)
    assert _recommended((run / "reports" / "index.html").read_text()) == "tflite-fp32"


# --- typed run files ----------------------------------------------------------------------------
def test_the_published_schemas_are_the_models(tmp_path):
    runfiles.write_schemas(tmp_path)
    for path in tmp_path.iterdir():
        assert path.read_text() == (REPO / "schemas" / path.name).read_text(), f"run `make schemas` ({path.name})"


def test_the_run_files_validate_against_the_published_schemas(piped):
    jsonschema = pytest.importorskip("jsonschema")
    run, _ = piped
    for cls in runfiles.RUN_FILES:
        schema = json.loads((REPO / "schemas" / f"{Path(cls.FILE).stem}.schema.json").read_text())
        jsonschema.validate(json.loads((run / cls.FILE).read_text()), schema)
    demo = REPO / "docs" / "demo-run"  # the committed demo run's copies, as a user's CI would check them
    for cls in (runfiles.RunConfig, runfiles.EvaluateReport, runfiles.BenchmarkReport):
        schema = json.loads((REPO / "schemas" / f"{Path(cls.FILE).stem}.schema.json").read_text())
        jsonschema.validate(json.loads((demo / Path(cls.FILE).name).read_text()), schema)


@pytest.mark.parametrize("content, message", [
    ('{"schema_version": 1, "run": "r"}', "was written by another skinscan-edge (schema 1; this one reads schema 2)"),
    ('{"run": "r"}', "(no schema version; this one reads schema 2)"),
    ('{"schema_version": 2, "run": ', "is not valid JSON"),
    ("[]", "holds a JSON list, not an object"),
    ('{"schema_version": 2, "run": "r"}', "does not match its schema (split: Field required)"),
])
def test_an_older_or_damaged_run_file_is_refused_in_one_line_that_says_how_to_rerun(tmp_path, content, message):
    path = tmp_path / "run" / "reports" / "evaluate.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(SkinscanError) as err:
        runfiles.load(runfiles.EvaluateReport, path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith(f"write it again with `skinscan-edge evaluate {tmp_path / 'run'}`")


#: A .keras archive has a member named config.json of its own: not the run's file.
NOT_RUN_FILES = {("rundir.py", "config.json")}


def test_no_run_file_name_is_spelled_out_twice_in_the_code():
    names = [Path(cls.FILE).name for cls in runfiles.RUN_FILES]
    for path in (REPO / "skinscan_edge").rglob("*.py"):
        if path.name == "runfiles.py":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for name in names:
            if (path.name, name) not in NOT_RUN_FILES:
                assert f'"{name}"' not in code and f"'{name}'" not in code, f"{path.name} spells out {name}"
