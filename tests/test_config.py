"""Config loading and validation: errors name the file, the line and the key."""
from __future__ import annotations

import dataclasses

from pathlib import Path

import pytest

from engine.config import CONFIG_DIR, ConfigError, config_from_dict
from stream.settings import load_config

SHIPPED = ["thumos14", "anet13", "tiny", "stream"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.source == str(CONFIG_DIR / f"{name}.yaml")


def test_paper_settings() -> None:
    th = load_config("thumos14")
    assert (th.data.sigma, th.data.window, th.level_lengths()) == (5, 256, [256, 128, 64])
    assert th.model.scale_ranges == [[0.0, 0.15], [0.10, 0.75], [0.50, 1.0]]
    assert th.train.sample_ratios == [0.5, 0.4, 0.9]
    assert (th.train.lambda1, th.train.lambda2) == (5.0, 10.0)
    assert (th.train.epochs, th.train.generalization_epochs, th.train.lr_decay_epoch) == (7, 1, 5)
    an = load_config("anet13")
    assert (an.data.sigma, an.data.window, an.level_lengths()) == (16, 200, [200, 100, 50])
    assert (an.train.epochs, an.train.generalization_epochs, an.train.lr_decay_epoch) == (10, 7, 7)


def test_stream_extends_tiny() -> None:
    stream, tiny = load_config("stream"), load_config("tiny")
    assert stream.model == tiny.model and stream.data == dataclasses.replace(tiny.data, hop=16, frame_fit="stretch")
    assert stream.data.hop == 16 and tiny.data.hop == tiny.data.window // 2  # stream: a window every 5 s
    # cameras of another shape keep their sides live; the network's features are the paper's crop
    assert stream.data.frame_fit == "stretch" and tiny.data.frame_fit == "crop"


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def base_text(extra_model: str = "", extra_data: str = "") -> str:
    return f"""extends: {CONFIG_DIR / 'tiny.yaml'}
name: mine
data:
  sigma: 4
{extra_data}model:
  channels: 32
{extra_model}"""


def test_override_through_extends(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base_text()))
    assert (cfg.name, cfg.data.sigma, cfg.model.channels, cfg.data.window) == ("mine", 4, 32, 128)


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, base_text(extra_model="  chanels: 64\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert f"{path}:7: model.chanels: unknown key" in msg
    assert "channels" in msg  # the allowed keys are listed


def test_wrong_type_names_key(tmp_path: Path) -> None:
    path = write(tmp_path, base_text(extra_data="  window: big\n"))
    with pytest.raises(ConfigError, match=rf"{path}:5: data.window: expected an integer, got 'big'"):
        load_config(path)


def test_wrong_literal(tmp_path: Path) -> None:
    path = write(tmp_path, base_text(extra_model="  backbone: resnet50\n"))
    with pytest.raises(ConfigError, match=r"model.backbone: must be one of \['r2plus1d_34'"):
        load_config(path)


@pytest.mark.parametrize("extra_model,extra_data,key", [
    ("", "  window: 90\n", "data.window"),  # not divisible by 4
    ("  scale_ranges: [[0.2, 0.1], [0.1, 0.7], [0.5, 1.0]]\n", "", r"model.scale_ranges\[0\]"),
    ("  relation_kernel: 4\n", "", "model.relation_kernel"),
    ("  level_lengths: [128, 64, 16]\n", "", "model.level_lengths"),
    ("  levels: 2\n", "", "model.scale_ranges"),
    ("  level_lengths: [128, 64]\n", "", "model.level_lengths"),
    ("", "  sigma: 0\n", "data.sigma"),
    ("  dropout: 1.0\n", "", "model.dropout"),
])
def test_impossible_values_name_the_key(tmp_path: Path, extra_model: str, extra_data: str, key: str) -> None:
    text = base_text(extra_model, extra_data).replace("  sigma: 4\n", "") if "sigma" in extra_data \
        else base_text(extra_model, extra_data)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"\.yaml:\d+: {key}:"):  # inherited keys point at their file
        load_config(path)


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: {mode: thumos, sigma: 5, clip_length: 8, resize_short: 64, "
                           "crop: [64, 64], window: 64}\n")
    with pytest.raises(ConfigError, match="missing required key 'model'"):
        load_config(path)


def test_train_section_checks(tmp_path: Path) -> None:
    path = write(tmp_path, base_text() + "train:\n  epochs: 2\n  generalization_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"train.generalization_epochs: must be in 0..epochs \(2\), got 3"):
        load_config(path)


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "ema_decay", "1.0", r"must be in \[0, 1\), got 1.0"),
    ("inference", "max_pairs", "-1", r"must be >= 0 \(0 = no cap\), got -1"),
    ("inference", "boundary_edges", "sometimes", "must be one of"),
])
def test_training_and_decoding_options_are_checked(tmp_path: Path, section: str, key: str, value: str,
                                                   message: str) -> None:
    path = write(tmp_path, base_text() + f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"{section}.{key}: {message}"):
        load_config(path)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_round_trip_through_dict() -> None:
    cfg = load_config("thumos14")
    again = config_from_dict(cfg.to_dict(), source="checkpoint")
    assert again.to_dict() == cfg.to_dict()
    broken = cfg.to_dict()
    broken["model"]["head_samples"] = 0
    with pytest.raises(ConfigError, match="checkpoint: model.head_samples: must be >= 1"):
        config_from_dict(broken, source="checkpoint")


# ---------------------------------------------------------------- a user's own folder


@pytest.mark.parametrize("parent", ["stream", "stream.yaml"])
def test_extends_shipped_name_from_any_folder(tmp_path: Path, parent: str) -> None:
    path = write(tmp_path, f"extends: {parent}\ndata:\n  hop: 32\n", "cams.yaml")
    cfg, shipped = load_config(path), load_config("stream")
    assert (cfg.data.hop, cfg.stream.engine.max_batch) == (32, shipped.stream.engine.max_batch)
    assert cfg.data == dataclasses.replace(shipped.data, hop=32)
    assert cfg.source == str(path)


def test_relative_extends_wins_over_shipped_name(tmp_path: Path) -> None:
    # The user's own stream.yaml: `extends: tiny` finds no sibling, so it is the shipped tiny;
    # `extends: stream.yaml` in it cannot mean itself, so it is the shipped stream.
    write(tmp_path, "extends: stream.yaml\nname: mystream\nstream:\n  engine:\n    max_batch: 3\n", "stream.yaml")
    write(tmp_path, "extends: stream.yaml\n", "cams.yaml")
    cfg = load_config(tmp_path / "cams.yaml")
    assert (cfg.name, cfg.stream.engine.max_batch, cfg.data.hop) == ("cams", 3, 16)
    write(tmp_path, "extends: tiny\nname: mystream\nstream:\n  engine:\n    max_batch: 3\n", "stream.yaml")
    assert load_config(tmp_path / "cams.yaml").data.hop == load_config("tiny").data.hop


def test_extends_not_found_names_file_line_and_both_places(tmp_path: Path) -> None:
    path = write(tmp_path, "# mine\nextends: strem\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}:2: extends: no config 'strem' "
                               f"(looked for {tmp_path / 'strem'} and {CONFIG_DIR / 'strem.yaml'})")
    path = write(tmp_path, "extends: ../elsewhere/base.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:1: extends: no config '\.\./elsewhere/base\.yaml' "
                                          r"\(looked for [^ ]*/\.\./elsewhere/base\.yaml\)$"):
        load_config(path)


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    # Not inherited either: extending stream does not make the config "stream".
    assert load_config(write(tmp_path, "extends: stream\n", "lobby-cams.yaml")).name == "lobby-cams"
    assert load_config(write(tmp_path, "extends: stream\nname: lobby\n", "x.yaml")).name == "lobby"


def test_every_problem_in_one_error_sorted_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, "extends: stream\n"
                           "data:\n"
                           "  sigma: 0\n"            # 3: impossible value (found last, by _validate)
                           "model:\n"
                           "  chanels: 64\n"         # 5: unknown key
                           "stream:\n"
                           "  engine:\n"
                           "    max_batch: lots\n")  # 8: wrong type
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).split("\n")
    assert len(lines) == 3 and info.value.problems == lines
    assert lines[0] == f"{path}:3: data.sigma: must be >= 1, got 0"
    assert lines[1].startswith(f"{path}:5: model.chanels: unknown key (allowed here: backbone, ")
    assert lines[2] == f"{path}:8: stream.engine.max_batch: expected an integer, got 'lots'"
    assert isinstance(info.value, ValueError)


def test_refused_value_is_not_checked_again(tmp_path: Path) -> None:
    # scale_ranges falls back to its empty default for the other checks; "needs one per level" would mislead.
    path = write(tmp_path, base_text(extra_model="  scale_ranges: [[0.0, a], [0.1, 0.75], [0.5, 1.0]]\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:7: model.scale_ranges[0][1]: expected a number, got 'a'"


def test_dict_problems_come_together() -> None:
    data = load_config("thumos14").to_dict()
    del data["data"]["window"]
    data["model"]["bogus"] = 1
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="checkpoint")
    lines = str(info.value).split("\n")
    assert lines[0] == "checkpoint: data: missing required key 'data.window'"
    assert lines[1].startswith("checkpoint: model.bogus: unknown key (allowed here: ")
    assert len(lines) == 2
