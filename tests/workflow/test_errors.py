"""Bad input stops Snakemake with one line that names the key or file."""

from .pipeline import snakemake, tiny_config, tiny_run, write_config


def test_misspelt_config_key_stops_with_one_line_naming_it(tmp_path):
    config = tiny_config({"a": tiny_run(train={"epohcs": 2})})
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "lesionflow: error" in line]
    assert len(lines) == 1
    assert "runs.a.train.epohcs" in lines[0] and "epochs" in lines[0]


def test_unknown_network_lists_valid_networks(tmp_path):
    write_config(tmp_path, tiny_config({"a": tiny_run(model={"network": "ResNet"})}))
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert "runs.a.model.network" in result.stderr and "SegResNet" in result.stderr


def test_missing_manifest_is_named(tmp_path):
    config = tiny_config({"a": tiny_run()})
    config["data"] = {"source": "manifest", "manifest": "nowhere/manifest.csv"}
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert "nowhere/manifest.csv" in result.stderr and "data.manifest" in result.stderr
