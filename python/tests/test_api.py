"""inspect / convert / verify from Python give what the CLI gives, and errors
carry the CLI's messages."""

import json
import shutil

import pytest

import moepack
from conftest import DSV3_FP8, QWEN_BF16, VL_BF16, cli_error, read_safetensors, run_cli


def test_inspect_is_inspect_json(synth):
    src = synth(*QWEN_BF16)
    assert moepack.inspect(src) == json.loads(run_cli("inspect", "--json", src).stdout)
    assert moepack.inspect(str(src))["layout"] == "per-expert"


def test_convert_and_verify_round_trip(synth, tmp_path):
    src = synth(*VL_BF16)
    plan = moepack.convert(src, tmp_path / "fused", to="fused", max_shard_size="30KB", threads=2)
    cli_plan = json.loads(run_cli("convert", src, tmp_path / "cli", "--json", "--max-shard-size", "30KB").stdout)
    assert plan == cli_plan
    assert read_safetensors(tmp_path / "fused").keys() == read_safetensors(tmp_path / "cli").keys()
    report = moepack.verify(src, tmp_path / "fused")
    assert report["ok"] and report["to"] == "fused" and report["tensors"] == plan["num_tensors"]
    back = moepack.convert(tmp_path / "fused", tmp_path / "back", to="per-expert")
    assert back["to"] == "per-expert"
    assert moepack.verify(tmp_path / "fused", tmp_path / "back")["to"] == "per-expert"


def test_convert_without_sync_writes_the_same_files(synth, tmp_path):
    src = synth(*VL_BF16)
    moepack.convert(src, tmp_path / "synced", max_shard_size="30KB")
    moepack.convert(src, tmp_path / "unsynced", max_shard_size="30KB", sync=False)
    names = sorted(p.name for p in (tmp_path / "synced").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "unsynced").iterdir())
    for n in names:
        assert (tmp_path / "synced" / n).read_bytes() == (tmp_path / "unsynced" / n).read_bytes(), n


def test_align_pages_is_the_cli_flag_and_keeps_the_tensors(synth, tmp_path):
    src = synth(*VL_BF16)
    moepack.convert(src, tmp_path / "py", align_pages=True, sync=False)
    run_cli("convert", src, tmp_path / "cli", "--align-pages", "--no-sync")
    moepack.convert(src, tmp_path / "plain", sync=False)
    names = sorted(p.name for p in (tmp_path / "py").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "cli").iterdir())
    for n in names:
        assert (tmp_path / "py" / n).read_bytes() == (tmp_path / "cli" / n).read_bytes(), n
    aligned, plain = read_safetensors(tmp_path / "py"), read_safetensors(tmp_path / "plain")
    assert aligned.keys() == plain.keys()
    for k, (dtype, shape, data) in plain.items():
        assert aligned[k][:2] == (dtype, shape) and aligned[k][2].tobytes() == data.tobytes(), k
    assert moepack.verify(src, tmp_path / "py")["ok"]


def test_dry_run_writes_nothing_and_lists_tensors(synth, tmp_path):
    src = synth(*DSV3_FP8)
    plan = moepack.convert(src, tmp_path / "x", dry_run=True)
    assert not (tmp_path / "x").exists()
    assert plan == json.loads(run_cli("convert", src, tmp_path / "x", "--dry-run", "--json").stdout)
    names = {t["name"] for t in plan["tensors"]}
    assert "model.layers.1.mlp.experts.gate_up_proj_scale_inv" in names
    assert moepack.convert(src, None, dry_run=True)["num_tensors"] == plan["num_tensors"]


def test_verify_is_verify_json(synth, tmp_path):
    src = synth(*QWEN_BF16)
    moepack.convert(src, tmp_path / "out")
    for flags, kw in (((), {}), (("--forward",), {"forward": True})):
        cli = json.loads(run_cli("verify", "--json", *flags, src, tmp_path / "out").stdout)
        assert moepack.verify(src, tmp_path / "out", **kw) == cli
    assert "forward" not in cli or cli["forward"], "the layer check ran on no layer"


def test_verify_mismatch(synth, tmp_path):
    src = synth(*QWEN_BF16)
    moepack.convert(src, tmp_path / "out")
    shard = sorted((tmp_path / "out").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = moepack.verify(src, tmp_path / "out", check=False)
    assert not report["ok"] and report["problem"]
    with pytest.raises(moepack.MismatchError) as e:
        moepack.verify(src, tmp_path / "out")
    assert str(e.value) == cli_error("verify", src, tmp_path / "out")


def test_errors_carry_the_cli_messages(synth, tmp_path):
    src = synth(*QWEN_BF16)
    # config.json declares more experts than the shards hold.
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    config = json.loads((bad / "config.json").read_text())
    config["num_experts"] = 12
    (bad / "config.json").write_text(json.dumps(config))
    cases = [
        (lambda: moepack.inspect(tmp_path / "missing"), ("inspect", tmp_path / "missing")),
        (lambda: moepack.convert(src, tmp_path / "o", model_type="nope"),
         ("convert", src, tmp_path / "o", "--model-type", "nope")),
        (lambda: moepack.convert(src, src), ("convert", src, src)),
        (lambda: moepack.convert(bad, tmp_path / "o"), ("convert", bad, tmp_path / "o")),
        (lambda: moepack.load(bad), ("convert", bad, tmp_path / "o")),
        (lambda: moepack.verify(src, tmp_path / "missing"), ("verify", src, tmp_path / "missing")),
        (lambda: moepack.load(src, model_type="nope"), ("convert", src, tmp_path / "o", "--model-type", "nope")),
        (lambda: moepack.load(tmp_path / "missing"), ("inspect", tmp_path / "missing")),
    ]
    for call, cli_args in cases:
        with pytest.raises(moepack.Error) as e:
            call()
        assert str(e.value) == cli_error(*cli_args)
        assert str(e.value)  # never empty
    with pytest.raises(moepack.CorruptCheckpointError, match="missing for experts 8-11"):
        moepack.load(bad)
    assert not (tmp_path / "o").exists()


def test_error_classes():
    assert issubclass(moepack.Error, RuntimeError)
    assert issubclass(moepack.InvalidArgumentError, ValueError)
    assert issubclass(moepack.CorruptCheckpointError, ValueError)
    assert issubclass(moepack.FileError, OSError)
    with pytest.raises(moepack.NotFoundError):
        moepack.inspect("/nonexistent/moepack/path")
    with pytest.raises(moepack.InvalidArgumentError, match="invalid size unit in '5XB'"):
        moepack.convert("a", "b", max_shard_size="5XB")
    with pytest.raises(moepack.InvalidArgumentError, match="is not a layout"):
        moepack.convert("a", "b", to="sideways")


def test_parse_size():
    assert moepack.parse_size("5GB") == 5 * 10**9
    assert moepack.parse_size("64KiB") == 65536
    assert moepack.parse_size(123) == 123
    for bad in ("", "GB", "0", "-1", "1.5GB", 0):
        with pytest.raises(moepack.InvalidArgumentError):
            moepack.parse_size(bad)


def test_families():
    assert "qwen3_moe" in moepack.families() and "deepseek_v3" in moepack.families()
