from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from fewshot.config import ConfigError, apply_overrides, from_dict, load_config, to_toml, valid_keys
from fewshot.images.augment import AugmentConfig
from fewshot.training.loop import TrainConfig


@dataclass(frozen=True)
class Inner:
    k: int = 5
    shots: tuple[int, ...] = (1, 5)
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    rate: float = 0.5
    flag: bool = False
    limit: int | None = None
    path: Path = Path("out")
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate={self.rate} must be >= 0")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_toml_file_loads_into_typed_frozen_dataclasses(tmp_path):
    path = _write(tmp_path, 'name = "x"\nrate = 2\nflag = true\nlimit = 7\npath = "a/b"\ntags = ["p", "q"]\n'
                            '[weights]\nw = 1\n[inner]\nk = 9\nshots = [1, 5, 20]\nmode = "b"\n')
    cfg = load_config(Outer, path)
    assert cfg == Outer(name="x", rate=2.0, flag=True, limit=7, path=Path("a/b"), tags=["p", "q"],
                        weights={"w": 1.0}, inner=Inner(k=9, shots=(1, 5, 20), mode="b"))
    assert isinstance(cfg.rate, float) and isinstance(cfg.inner.shots, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rate = 1.0


def test_missing_keys_take_the_defaults(tmp_path):
    assert load_config(Outer, _write(tmp_path, "[inner]\nk = 1\n")) == Outer(inner=Inner(k=1))
    assert load_config(TrainConfig) == TrainConfig()


@pytest.mark.parametrize("text,key", [("nmae = 'x'\n", "nmae"), ("[inner]\nkk = 1\n", "inner.kk"),
                                      ("[augment]\nflip = 0.5\n", "augment.flip")])
def test_unknown_keys_are_named_with_the_valid_keys_listed(tmp_path, text, key):
    cls = TrainConfig if "augment" in text else Outer
    table = key.rpartition(".")[0]
    same_table = [k for k in valid_keys(cls) if k.startswith(table)]  # the keys under that table
    with pytest.raises(ConfigError, match=f"unknown key.*{key}; valid keys: {', '.join(same_table)}$") as err:
        load_config(cls, _write(tmp_path, text))
    assert "cfg.toml" in str(err.value)


@pytest.mark.parametrize("text,fragment", [
    ("rate = 'fast'\n", "rate = 'fast' is not a number"),
    ("flag = 1\n", "flag = 1 is not true or false"),
    ("[inner]\nk = 1.5\n", "inner.k = 1.5 is not an integer"),
    ("[inner]\nmode = 'c'\n", "one of 'a', 'b'"),
    ("[inner]\nshots = 3\n", "inner.shots = 3 is not a list"),
    ("inner = 3\n", "must be a table"),
    ("rate = -1.0\n", "rate=-1.0 must be >= 0"),
])
def test_bad_values_raise_naming_the_key_and_the_expected_type(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config(Outer, _write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cfg.toml: not valid TOML"):
        load_config(Outer, _write(tmp_path, "rate = = 1\n"))


@pytest.mark.parametrize("override,expected", [
    ("rate=0.25", dict(rate=0.25)),
    ("rate=3", dict(rate=3.0)),
    ("flag=yes", dict(flag=True)),
    ("flag=false", dict(flag=False)),
    ("name=1e-3", dict(name="1e-3")),
    ("name='quoted'", dict(name="'quoted'")),
    ("limit=12", dict(limit=12)),
    ("limit=none", dict(limit=None)),
    ("path=/tmp/x", dict(path=Path("/tmp/x"))),
    ("tags=['a', 'b']", dict(tags=["a", "b"])),
    ("inner.k=3", dict(inner=Inner(k=3))),
    ("inner.shots=[1, 10]", dict(inner=Inner(shots=(1, 10)))),
    ("inner.mode=b", dict(inner=Inner(mode="b"))),
])
def test_command_line_overrides_are_typed_by_the_field(override, expected):
    assert apply_overrides(Outer(limit=4), [override]) == dataclasses.replace(Outer(limit=4), **expected)


def test_overrides_apply_in_order_on_top_of_the_file(tmp_path):
    cfg = load_config(TrainConfig, _write(tmp_path, "lr = 0.1\n[augment]\nhflip = 0.0\n"),
                      ["lr=0.2", "augment.scale=[0.3, 1.0]", "lr=0.3", "optimizer=adamw"])
    assert (cfg.lr, cfg.augment.scale, cfg.augment.hflip, cfg.optimizer) == (0.3, (0.3, 1.0), 0.0, "adamw")


@pytest.mark.parametrize("override,fragment", [
    ("lrr=0.1", "unknown key 'lrr'; valid keys: epochs, batch_size"),
    ("augment.flip=0", "unknown key 'augment.flip'"),
    ("lr.x=1", "'lr' is a value, not a table"),
    ("augment=1", "'augment' is a table; set one of its keys: augment.enabled"),
    ("lr", "not of the form key=value"),
    ("epochs=ten", "epochs = 'ten' is not an integer"),
    ("optimizer=adam", "one of 'sgd', 'adamw'"),
    ("augment.hflip=2", "augment.hflip=2.0: a probability"),
])
def test_bad_overrides_say_what_is_wrong(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(TrainConfig(), [override])


@pytest.mark.parametrize("cfg", [
    TrainConfig(),
    TrainConfig(lr=1e-5, optimizer="adamw", augment=AugmentConfig(enabled=False, scale=(0.25, 0.75)), seed=123),
    Outer(name='we"ird\\ name\n\tüñí', rate=float("inf"), tags=["x y", ""], weights={"a b": 2.5},
          path=Path("/data/x y"), inner=Inner(shots=())),
    Outer(limit=3),
])
def test_dumped_toml_loads_back_to_the_same_config(tmp_path, cfg):
    text = to_toml(cfg)
    tomllib.loads(text)  # valid TOML
    assert load_config(type(cfg), _write(tmp_path, text)) == cfg


def test_unset_optional_is_written_as_a_comment_and_read_back_as_none():
    text = to_toml(Outer())
    assert "# limit is unset (None)" in text
    assert from_dict(Outer, tomllib.loads(text)).limit is None


def test_nested_tables_are_written_after_the_scalars():
    text = to_toml(TrainConfig())
    assert text.index("seed = 0") < text.index("[augment]")
    assert tomllib.loads(text)["augment"]["scale"] == [0.5, 1.0]


def test_valid_keys_lists_dotted_leaf_keys():
    assert valid_keys(Outer) == ["name", "rate", "flag", "limit", "path", "tags", "weights", "inner.k",
                                 "inner.shots", "inner.mode"]
